"""The :class:`~validator.chain.port.Chain` port on bittensor 11's async ``Client``.

The only module of the project that imports ``bittensor``. One long-lived client is opened lazily and
reused: a new client per loop iteration leaks memory. Every call runs under its own deadline, because
a half-dead websocket hangs without an error; after a timeout or a connection error the client is
closed and the next call builds a fresh one.

Weight sets go through the SDK's ``SetWeights`` intent, which preflights registration and the rate
limit, normalises to u16 and picks a plain ``set_mechanism_weights`` or a timelocked commit-reveal
extrinsic from the subnet's setting. Refusals come back as ``WeightSetResult(success=False)`` with a
:class:`~validator.chain.port.Refusal` taken from the SDK's error code and chain error name (never from
its wording). A lost connection is not a refusal: the client is dropped and the error raised, so the
next call rebuilds the client.

Deadlines: one call (connecting included) runs under ``call_timeout_s``; dropping a hung client adds at
most ``CLOSE_TIMEOUT_S``. :attr:`BittensorChain.deadline_s` is that sum, and the facade must wait longer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import bittensor as bt
import structlog

# The SDK raises this (a ValueError) for a storage item the connected runtime's metadata lacks; it is
# not re-exported, and the SDK version is pinned exactly.
from bittensor._transport.errors import StorageFunctionNotFound

from validator.chain.port import (
    ChainError,
    Hyperparameters,
    Neuron,
    RawCommitment,
    Refusal,
    RuntimeInfo,
    RuntimeMismatchError,
    WeightSetResult,
    weights_problem,
)

log = structlog.get_logger(__name__)

T = TypeVar("T")

NETWORKS = ("finney", "test", "local")
MAX_RAW_COMMITMENT_BYTES = 128
"""The Commitments pallet's limit for one ``Raw`` field."""
RAO_PER_TOKEN = 1e9
"""Balances are integers of 1e-9 token; the port reports whole tokens as a float."""
CLOSE_TIMEOUT_S = 5.0
"""Closing a dead client must not hang the caller either."""


def _st(item: str) -> tuple[str, str]:
    """A ``SubtensorModule`` storage descriptor, the ``(pallet, item)`` pair ``Client.query`` takes."""
    return ("SubtensorModule", item)


class BittensorChainError(ChainError):
    """The chain or the wallet refused an operation of this adapter (not a transient failure)."""


class WalletNotFoundError(BittensorChainError):
    """The configured wallet's hotkey file does not exist."""


class ChainConnectionError(ConnectionError):
    """The chain connection failed; the client was dropped and the next call reconnects.

    A ``ConnectionError`` so :class:`~validator.chain.facade.ChainFacade` retries reads on it.
    """


# The SDK's error codes and chain error names that each need their own remedy; anything else is
# retried (a full pool, an unknown error).
_BY_NAME: dict[str, Refusal] = {
    "NeuronNoValidatorPermit": Refusal.NO_PERMIT,
    "NotEnoughStakeToSetWeights": Refusal.STAKE,
    "StakeAmountTooLow": Refusal.STAKE,
    "IncorrectWeightVersionKey": Refusal.VERSION_KEY,
    "HotKeyNotRegisteredInSubNet": Refusal.NOT_REGISTERED,
    "HotKeyAccountNotExists": Refusal.NOT_REGISTERED,
}
_BY_CODE: dict[bt.ErrorCode, Refusal] = {
    bt.ErrorCode.RATE_LIMITED: Refusal.RATE_LIMITED,
    bt.ErrorCode.NOT_REGISTERED: Refusal.NOT_REGISTERED,
    # Under Null consensus only the sole permit holder may set weights (the SDK's own preflight).
    bt.ErrorCode.NOT_AUTHORIZED: Refusal.NO_PERMIT,
    bt.ErrorCode.INSUFFICIENT_BALANCE: Refusal.STAKE,
    bt.ErrorCode.INVALID_ARGUMENT: Refusal.INVALID,
    bt.ErrorCode.LIMIT_EXCEEDED: Refusal.INVALID,
    bt.ErrorCode.SUBNET_NOT_EXISTS: Refusal.INVALID,
}

_CONNECTION_ERRORS = (ConnectionError, OSError, bt.RpcConnectionError, bt.ConnectionNotReady)

WEIGHT_PATH_STORAGE: tuple[tuple[str, str, str], ...] = (
    ("SubtensorModule", "Uids", "netuid,hotkey"),
    ("SubtensorModule", "CommitRevealWeightsEnabled", "netuid"),
    ("SubtensorModule", "WeightsSetRateLimit", "netuid"),
    ("SubtensorModule", "LastUpdate", "netuid"),
    ("SubtensorModule", "MinAllowedWeights", "netuid"),
    ("SubtensorModule", "MaxWeightsLimit", "netuid"),
    ("SubtensorModule", "SubnetEpochConsensus", "netuid"),
    ("SubtensorModule", "ValidatorPermit", "netuid"),
    ("SubtensorModule", "Tempo", "netuid"),
    ("SubtensorModule", "RevealPeriodEpochs", "netuid"),
    ("SubtensorModule", "LastEpochBlock", "netuid"),
    ("SubtensorModule", "PendingEpochAt", "netuid"),
    ("SubtensorModule", "SubnetEpochIndex", "netuid"),
    ("SubtensorModule", "BlocksSinceLastStep", "netuid"),
    ("SubtensorModule", "WeightsVersionKey", "netuid"),
    ("SubtensorModule", "Weights", "netuid,uid"),
    ("SubtensorModule", "StakeThreshold", ""),
    ("Drand", "LastStoredRound", ""),
)
"""Every storage item SetWeights (bittensor 11.3.0) and this adapter read to set weights and follow a
commit-reveal to its reveal, with the parameters each takes."""


def classify_chain_error(code: Any, name: str | None) -> Refusal:
    """The remedy kind of an SDK ``ChainError``: by its chain error name first, then its ErrorCode."""
    if name and name in _BY_NAME:
        return _BY_NAME[name]
    if isinstance(code, bt.ErrorCode) and code in _BY_CODE:
        return _BY_CODE[code]
    return Refusal.TRANSIENT


def missing_item(error: StorageFunctionNotFound) -> str:
    """``Pallet.Item`` out of the transport's "storage function Pallet.Item not found" message."""
    words = str(error).split()
    named = [w for w in words if "." in w]
    return named[0] if named else str(error)


def decode_commitment_fields(fields: list[Any]) -> str | None:
    """The text of a commitment made only of ``Raw`` fields (joined in order), else ``None``.

    Fields arrive decoded as one-key dicts such as ``{"Raw64": "0x..."}``. Anything else (``BigRaw``,
    hashes, timelock payloads, unit variants) or bytes that are not UTF-8 is not a plain-text
    commitment of this subnet, so it yields ``None`` rather than a guess.
    """
    raw = b""
    for entry in fields:
        if not isinstance(entry, Mapping) or len(entry) != 1:
            return None
        ((variant, value),) = entry.items()
        # "Raw0".."Raw128"; "BigRaw" and the hash variants are not text of ours.
        if not (isinstance(variant, str) and variant.startswith("Raw") and isinstance(value, str)):
            return None
        try:
            raw += bytes.fromhex(value.removeprefix("0x"))
        except ValueError:
            return None
    if not raw:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _block_of(result: Any) -> int | None:
    """The including block from an ``ExtrinsicResult``'s ``"block-index"`` id, when present."""
    extrinsic_id = getattr(result, "extrinsic_id", None)
    if isinstance(extrinsic_id, str):
        head, _, _ = extrinsic_id.partition("-")
        if head.isdigit():
            return int(head)
    return None


class BittensorChain:
    """The chain port over a bittensor 11 ``Client``, signing with one wallet's hotkey.

    ``network`` is ``finney``, ``test``, ``local`` or a ``ws(s)://`` URL; ``chain_endpoint`` (when
    given) overrides it and pins the client to that endpoint (no public fallbacks). ``substrate``
    replaces the RPC backend (an in-memory fake in tests). Nothing is read or opened until first use.
    """

    def __init__(
        self,
        network: str,
        chain_endpoint: str | None,
        wallet_name: str,
        wallet_hotkey: str,
        wallet_path: str,
        call_timeout_s: float = 30,
        *,
        substrate: Any = None,
    ) -> None:
        if not chain_endpoint and network not in NETWORKS and not network.startswith(("ws://", "wss://")):
            raise ValueError(f"network must be one of {NETWORKS} or a ws(s):// URL, got {network!r}")
        if chain_endpoint and not chain_endpoint.startswith(("ws://", "wss://")):
            raise ValueError(f"chain_endpoint must be a ws(s):// URL, got {chain_endpoint!r}")
        if call_timeout_s <= 0:
            raise ValueError(f"call_timeout_s must be positive, got {call_timeout_s}")
        self.network = network
        self.chain_endpoint = chain_endpoint
        self.wallet_name = wallet_name
        self.wallet_hotkey = wallet_hotkey
        self.wallet_path = wallet_path
        self.call_timeout_s = call_timeout_s
        self._substrate = substrate
        self._wallet: bt.Wallet | None = None
        self._hotkey_ss58: str | None = None
        self._client: bt.Client | None = None
        self._client_lock = asyncio.Lock()
        self.clients_built = 0
        """How many clients this adapter has opened (one, unless connections failed)."""

    def __repr__(self) -> str:
        target = self.chain_endpoint or self.network
        return f"BittensorChain({target!r}, wallet={self.wallet_name}/{self.wallet_hotkey})"

    # -- wallet

    @property
    def hotkey_file(self) -> Path:
        """Where the wallet's hotkey is expected on disk."""
        return Path(self.wallet_path).expanduser() / self.wallet_name / "hotkeys" / self.wallet_hotkey

    def _load_wallet(self) -> bt.Wallet:
        """Read the hotkey once (blocking file I/O: async callers go through a thread)."""
        if self._wallet is not None:
            return self._wallet
        if not self.hotkey_file.is_file():
            raise WalletNotFoundError(
                f"wallet hotkey file {self.hotkey_file} does not exist (wallet {self.wallet_name!r},"
                f" hotkey {self.wallet_hotkey!r}, path {self.wallet_path!r})"
            )
        wallet = bt.Wallet(name=self.wallet_name, hotkey=self.wallet_hotkey, path=self.wallet_path)
        try:
            keypair = wallet.hotkey
        except Exception as error:  # the keyfile library raises several types; all mean "unusable"
            raise BittensorChainError(f"cannot load hotkey {self.hotkey_file}: {error}") from error
        self._hotkey_ss58 = str(keypair.ss58_address)
        self._wallet = wallet
        return wallet

    async def _wallet_async(self) -> bt.Wallet:
        if self._wallet is not None:
            return self._wallet
        return await asyncio.to_thread(self._load_wallet)

    @property
    def hotkey(self) -> str:
        """This validator's hotkey (SS58). Reads the hotkey file on first use."""
        if self._hotkey_ss58 is None:
            self._load_wallet()
        assert self._hotkey_ss58 is not None
        return self._hotkey_ss58

    # -- the client

    def _new_client(self) -> bt.Client:
        if self._substrate is not None:
            return bt.Client(self.chain_endpoint or self.network, substrate=self._substrate)
        if self.chain_endpoint:
            # An operator-chosen endpoint is used alone: silently rotating to public nodes would hide it.
            return bt.Client(self.chain_endpoint, fallback_endpoints=[], archive_endpoints=[])
        return bt.Client(self.network)

    async def _get_client(self) -> bt.Client:
        async with self._client_lock:
            if self._client is None:
                client = self._new_client()
                try:
                    await client.connect()  # under the caller's deadline
                except BaseException:
                    await self._close_quietly(client)
                    raise
                self.clients_built += 1
                log.info("chain client connected", target=self.chain_endpoint or self.network)
                self._client = client
            return self._client

    async def _close_quietly(self, client: bt.Client) -> None:
        try:
            await asyncio.wait_for(client.close(), timeout=CLOSE_TIMEOUT_S)
        except Exception as error:  # the connection is already being abandoned
            log.debug("closing a failed chain client failed", error=repr(error))

    async def _drop(self, client: bt.Client, reason: BaseException) -> None:
        """Forget ``client`` (if still current) so the next call reconnects.

        No lock: a connect in progress may hold it for a whole deadline, and the compare-and-clear
        below has no await in it, so it cannot interleave with another task.
        """
        if self._client is client:
            self._client = None
        log.warning("chain client dropped; the next call reconnects", error=repr(reason))
        await self._close_quietly(client)

    @property
    def deadline_s(self) -> float:
        """The longest one call takes: its deadline, then closing the client it gave up on."""
        return self.call_timeout_s + CLOSE_TIMEOUT_S

    async def _call(self, what: str, body: Callable[[bt.Client], Awaitable[T]]) -> T:
        """Run ``body`` on the shared client under one deadline (connecting included); drop the client
        if the link failed or hung, so the next call builds a fresh one."""
        client: bt.Client | None = None
        try:
            async with asyncio.timeout(self.call_timeout_s):
                try:
                    client = await self._get_client()
                except _CONNECTION_ERRORS as error:
                    raise ChainConnectionError(f"cannot connect to the chain for {what}: {error}") from error
                return await body(client)
        except TimeoutError as error:
            if client is not None:
                await self._drop(client, error)
            raise TimeoutError(f"chain {what} timed out after {self.call_timeout_s:.0f}s") from error
        except ChainConnectionError as error:
            if client is not None:
                await self._drop(client, error)
            raise
        except _CONNECTION_ERRORS as error:
            assert client is not None
            await self._drop(client, error)
            raise ChainConnectionError(f"chain {what} failed: {error}") from error
        except StorageFunctionNotFound as error:
            raise RuntimeMismatchError(
                f"chain {what}: the connected runtime has no storage item {missing_item(error)}, which"
                f" bittensor {bt.__version__} reads; this validator cannot work with that runtime"
            ) from error

    # -- reads

    async def block(self) -> int:
        """Current block number."""
        return await self._call("block", lambda client: client.block())

    async def block_hash(self, block: int) -> str:
        """Hash of ``block``, through the same accessor the SDK uses to pin its own reads to a block
        (11.3 has no public one; the SDK version is pinned exactly)."""
        value = await self._call("block_hash", lambda client: client._block_hash(block))
        if not value:
            raise ChainConnectionError(f"the chain has no hash for block {block}")
        return str(value)

    async def neurons(self, netuid: int) -> list[Neuron]:
        """Every registered neuron of ``netuid`` from the metagraph (one runtime-API call)."""
        graph = await self._call(
            "neurons", lambda client: client.subnets.metagraph(netuid, commitments=False)
        )
        if graph is None:
            return []
        return [
            Neuron(
                uid=int(n.uid),
                hotkey=str(n.hotkey),
                registered_block=int(n.block_at_registration),
                validator_permit=bool(n.validator_permit),
                stake=int(n.total_stake.rao) / RAO_PER_TOKEN,
            )
            for n in graph.neurons
        ]

    async def commitments(self, netuid: int) -> list[RawCommitment]:
        """The plain-text commitment of every hotkey that has one, deregistered hotkeys included.

        Commitments that are not plain ``Raw`` UTF-8 text (``BigRaw``, hashes, timelocked payloads)
        are skipped with a log line: no value of this subnet's format can look like that.
        """
        found = await self._call("commitments", lambda client: client.subnets.commitments(netuid))
        out: list[RawCommitment] = []
        for hotkey, commitment in found.items():
            value = decode_commitment_fields(list(commitment.fields or []))
            if value is None:
                log.info(
                    "skipping a commitment that is not Raw UTF-8 text", hotkey=hotkey, block=commitment.block
                )
                continue
            out.append(RawCommitment(hotkey=str(hotkey), value=value, block=int(commitment.block)))
        out.sort(key=lambda c: (c.block, c.hotkey))
        return out

    async def hyperparameters(self, netuid: int) -> Hyperparameters:
        """Tempo, weights rate limit, commit-reveal flag and ``WeightsVersionKey`` of ``netuid``."""

        async def read(client: bt.Client) -> Hyperparameters:
            block = await client.block()
            tempo, rate_limit, commit_reveal, version_key, threshold = await asyncio.gather(
                client.query(_st("Tempo"), [netuid], block=block),
                client.query(_st("WeightsSetRateLimit"), [netuid], block=block),
                client.query(_st("CommitRevealWeightsEnabled"), [netuid], block=block),
                client.query(_st("WeightsVersionKey"), [netuid], block=block),
                client.query(_st("StakeThreshold"), [], block=block),
            )
            return Hyperparameters(
                tempo=int(tempo or 0),
                weights_rate_limit=int(rate_limit or 0),
                commit_reveal=bool(commit_reveal),
                version_key=int(version_key or 0),
                min_stake=int(threshold or 0) / RAO_PER_TOKEN,
            )

        return await self._call("hyperparameters", read)

    async def _own_uid(self, client: bt.Client, netuid: int, block: int) -> int | None:
        uid = await client.query(_st("Uids"), [netuid, self.hotkey], block=block)
        return None if uid is None else int(uid)

    async def current_weights(self, netuid: int) -> dict[int, float]:
        """This validator's weight row (mechanism 0), normalised to sum 1; ``{}`` if none."""
        await self._wallet_async()

        async def read(client: bt.Client) -> dict[int, float]:
            block = await client.block()
            uid = await self._own_uid(client, netuid, block)
            if uid is None:
                return {}
            row = await client.query(_st("Weights"), [netuid, uid], block=block) or []
            total = sum(int(value) for _, value in row)
            if not total:
                return {}
            return {int(dest): int(value) / total for dest, value in row if int(value) > 0}

        return await self._call("current_weights", read)

    async def last_weights_block(self, netuid: int) -> int | None:
        """``LastUpdate`` of this validator's uid; ``None`` when unregistered or never set."""
        await self._wallet_async()

        async def read(client: bt.Client) -> int | None:
            block = await client.block()
            uid = await self._own_uid(client, netuid, block)
            if uid is None:
                return None
            last = await client.query(_st("LastUpdate"), [netuid], block=block)
            if not isinstance(last, list | tuple) or uid >= len(last) or not int(last[uid]):
                return None
            return int(last[uid])

        return await self._call("last_weights_block", read)

    # -- writes

    async def set_weights(self, netuid: int, weights: dict[int, float], version_key: int) -> WeightSetResult:
        """Set this validator's weights through ``SetWeights``; refusals come back as results.

        Waits for inclusion, not finalization, so the call fits one deadline.
        """
        problem = weights_problem(weights)
        if problem is not None:
            return WeightSetResult(False, problem, -1)
        wallet = await self._wallet_async()
        intent = bt.SetWeights(
            netuid=netuid,
            weights={int(uid): float(w) for uid, w in weights.items()},
            version_key=version_key,
        )

        async def execute(client: bt.Client) -> WeightSetResult:
            before = await client.block()
            try:
                result = await client.execute(intent, wallet, wait_for_finalization=False)
            except _CONNECTION_ERRORS:
                raise  # _call drops the client; the facade reports a lost connection
            except StorageFunctionNotFound as error:
                return await self._runtime_refusal(client, error, before)
            except bt.ChainError as error:
                if isinstance(error.__cause__, _CONNECTION_ERRORS):
                    # The socket went away between signing and inclusion: not the chain's answer.
                    raise ChainConnectionError(f"set_weights lost the connection: {error}") from error
                return self._refusal(error, netuid, before)
            except bt.BittensorError as error:
                return WeightSetResult(
                    False, f"weights refused by the SDK: {error}", before, refusal=Refusal.INVALID
                )
            if not result.success:
                if result.error is not None:
                    return self._refusal(result.error, netuid, before)
                return WeightSetResult(False, f"weight set failed on chain: {result.message}", before)
            block = _block_of(result) or await client.block()
            reveal_round = (result.data or {}).get("reveal_round")
            path = "commit-reveal" if reveal_round is not None else "direct"
            log.info("weights set", netuid=netuid, path=path, reveal_round=reveal_round, block=block)
            detail = (
                f" (timelocked commit, reveals at drand round {reveal_round})"
                if path == "commit-reveal"
                else ""
            )
            return WeightSetResult(
                True,
                f"set {len(weights)} weights at block {block}{detail}",
                block,
                reveal_round=None if reveal_round is None else int(reveal_round),
            )

        return await self._call("set_weights", execute)

    def _refusal(self, error: Any, netuid: int, block: int) -> WeightSetResult:
        """A refused weight set, its kind from the SDK's error code and the chain's error name."""
        name = getattr(error, "name", None)
        code = getattr(error, "code", None)
        kind = classify_chain_error(code, name)
        text = getattr(error, "message", str(error))
        label = name or (code.value if isinstance(code, bt.ErrorCode) else "unknown")
        messages = {
            Refusal.RATE_LIMITED: f"rate limited: {text}",
            Refusal.NOT_REGISTERED: (
                f"validator hotkey {self.hotkey} is not registered on subnet {netuid} ({label}): {text}"
            ),
            Refusal.NO_PERMIT: (
                f"validator hotkey {self.hotkey} holds no validator permit on subnet {netuid}"
                f" ({label}): {text}"
            ),
            Refusal.STAKE: (
                f"validator hotkey {self.hotkey} has too little stake to set weights on subnet {netuid}"
                f" ({label}): {text}"
            ),
            Refusal.VERSION_KEY: f"weights version key refused on subnet {netuid} ({label}): {text}",
        }
        return WeightSetResult(
            False, messages.get(kind, f"weights refused ({label}): {text}"), block, refusal=kind
        )

    async def _runtime_refusal(
        self, client: bt.Client, error: StorageFunctionNotFound, block: int
    ) -> WeightSetResult:
        spec = await client.spec_version()
        message = (
            f"the chain's runtime (spec {spec}) has no storage item {missing_item(error)}, which"
            f" bittensor {bt.__version__} reads to set weights; nothing was submitted. Weights cannot be"
            " set with this SDK against this runtime: use the bittensor release made for it"
        )
        return WeightSetResult(False, message, block, refusal=Refusal.RUNTIME)

    async def own_hotkey(self) -> str:
        """This wallet's hotkey (SS58)."""
        await self._wallet_async()
        return self.hotkey

    async def revealed_round(self) -> int | None:
        """``Drand.LastStoredRound``: commit-reveal weights of rounds up to it are revealable."""

        async def read(client: bt.Client) -> int | None:
            value = await client.query(("Drand", "LastStoredRound"), [])
            return None if value is None else int(value)

        return await self._call("revealed_round", read)

    async def runtime_info(self, netuid: int) -> RuntimeInfo:
        """The runtime's spec version and the weight-path storage items it lacks (probed one by one)."""
        hotkey = await self.own_hotkey()

        async def probe(client: bt.Client, pallet: str, item: str, shape: str) -> str | None:
            shapes: dict[str, list[Any]] = {"": [], "netuid": [netuid], "netuid,hotkey": [netuid, hotkey]}
            params = shapes.get(shape, [netuid, 0])
            try:
                await client.query((pallet, item), params)
            except StorageFunctionNotFound:
                return f"{pallet}.{item}"
            return None

        async def read(client: bt.Client) -> RuntimeInfo:
            spec = await client.spec_version()
            found = await asyncio.gather(*(probe(client, *entry) for entry in WEIGHT_PATH_STORAGE))
            return RuntimeInfo(
                name=f"bittensor {self.chain_endpoint or self.network}",
                spec_version=int(spec),
                missing_storage=tuple(item for item in found if item is not None),
            )

        return await self._call("runtime_info", read)

    async def commit_own(self, netuid: int, value: str) -> int:
        """Commit ``value`` (one ``Raw`` field, <= 128 bytes) for this wallet's hotkey; returns its block.

        Raises :class:`BittensorChainError` when the value is too long or the chain refuses it.
        """
        data = value.encode("utf-8")
        if not data or len(data) > MAX_RAW_COMMITMENT_BYTES:
            raise BittensorChainError(
                f"commitment is {len(data)} bytes; the chain accepts 1 to {MAX_RAW_COMMITMENT_BYTES}"
            )
        wallet = await self._wallet_async()
        call = bt.calls.Commitments.set_commitment(
            netuid=netuid, info={"fields": [{f"Raw{len(data)}": "0x" + data.hex()}]}
        )

        async def submit(client: bt.Client) -> int:
            try:
                result = await client.submit_call(call, wallet, signer="hotkey", wait_for_finalization=False)
            except bt.ChainError as error:
                if isinstance(error.__cause__, _CONNECTION_ERRORS):
                    raise ChainConnectionError(f"commit lost the connection: {error}") from error
                raise BittensorChainError(f"commitment refused: {error.message}") from error
            if not result.success:
                raise BittensorChainError(f"commitment failed on chain: {result.message}")
            return _block_of(result) or await client.block()

        return await self._call("commit", submit)

    async def close(self) -> None:
        """Close the client if one is open; safe to call repeatedly."""
        async with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await self._close_quietly(client)
