"""A small file-backed chain for the demo, the tests, and people playing miner against the validator.

The whole state is one JSON file. Several processes use it at once (the daemon, a person's CLI, test
workers), so every access holds an ``fcntl.flock`` on a sibling ``.lock`` file (shared for reads,
exclusive for read-modify-write) and every write replaces the file atomically. A crash mid-write
therefore leaves the previous state, never half a file.

It mimics the parts of subtensor the validator depends on: one block counter for the whole chain; every
extrinsic (register, commit, set_weights) lands in a new block; commitments outlive deregistration; Raw
commitments are limited to 128 bytes; weight sets are rate limited per validator. Blocks only move when
something happens or someone calls :meth:`LocalChain.advance`: there is no clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import json
import math
import operator
import os
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from validator.chain.port import (
    ChainError,
    Hyperparameters,
    Neuron,
    RawCommitment,
    Refusal,
    RuntimeInfo,
    WeightSetResult,
    weights_problem,
)

FORMAT_NAME = "voice-validator-local-chain"
FORMAT_VERSION = 1
MAX_COMMITMENT_BYTES = 128
DEFAULT_MAX_UIDS = 256
DEFAULT_WEIGHTS_RATE_LIMIT = 0
LOCAL_TEMPO = 360
"""The local chain has no epochs; it reports subtensor's default tempo so callers see a sane value."""
LOCAL_MIN_VERSION_KEY = 0
U16_MAX = 65535
MAX_WEIGHT_HISTORY = 1000
"""Old weight sets are dropped beyond this, so a long demo does not grow the file without bound."""
LOCK_TIMEOUT_S = 10.0
_LOCK_POLL_S = 0.005


class LocalChainError(ChainError):
    """An operation the local chain refuses (unregistered hotkey, oversized value, ...)."""


class CorruptChainFileError(LocalChainError):
    """The chain file exists but is not a chain state this module wrote."""


class ChainFileMissingError(LocalChainError):
    """The chain file does not exist: a wrong path must not read as an empty chain."""


@dataclass(frozen=True)
class WeightSet:
    """One successful weight set by one validator.

    ``weights`` sum to 1; ``u16`` is what the real chain stores (max weight scaled to 65535).
    """

    validator: str
    block: int
    version_key: int
    weights: dict[int, float]
    u16: dict[int, int]


@dataclass(frozen=True)
class ChainSnapshot:
    """One consistent view of a subnet, read under a single lock."""

    block: int
    netuid: int
    exists: bool
    weights_rate_limit: int
    max_uids: int
    neurons: list[Neuron]
    commitments: list[RawCommitment]


@dataclass
class _Subnet:
    weights_rate_limit: int = DEFAULT_WEIGHTS_RATE_LIMIT
    max_uids: int = DEFAULT_MAX_UIDS
    neurons: dict[int, Neuron] = field(default_factory=dict)
    commitments: dict[str, RawCommitment] = field(default_factory=dict)
    latest_weights: dict[str, WeightSet] = field(default_factory=dict)
    weights_history: list[WeightSet] = field(default_factory=list)

    def uid_of(self, hotkey: str) -> int | None:
        for uid, neuron in self.neurons.items():
            if neuron.hotkey == hotkey:
                return uid
        return None


@dataclass
class _State:
    block: int = 0
    subnets: dict[int, _Subnet] = field(default_factory=dict)


# ---- serialisation ---------------------------------------------------------------------------------


def _weight_set_to_json(ws: WeightSet) -> dict[str, Any]:
    return {
        "validator": ws.validator,
        "block": ws.block,
        "version_key": ws.version_key,
        "weights": {str(uid): w for uid, w in sorted(ws.weights.items())},
        "u16": {str(uid): w for uid, w in sorted(ws.u16.items())},
    }


def _weight_set_from_json(raw: Mapping[str, Any]) -> WeightSet:
    return WeightSet(
        validator=str(raw["validator"]),
        block=int(raw["block"]),
        version_key=int(raw["version_key"]),
        weights={int(uid): float(w) for uid, w in raw["weights"].items()},
        u16={int(uid): int(w) for uid, w in raw["u16"].items()},
    )


def _state_to_json(state: _State) -> dict[str, Any]:
    subnets: dict[str, Any] = {}
    for netuid, subnet in sorted(state.subnets.items()):
        subnets[str(netuid)] = {
            "weights_rate_limit": subnet.weights_rate_limit,
            "max_uids": subnet.max_uids,
            "neurons": [
                {"uid": n.uid, "hotkey": n.hotkey, "registered_block": n.registered_block}
                for _, n in sorted(subnet.neurons.items())
            ],
            "commitments": [
                {"hotkey": c.hotkey, "value": c.value, "block": c.block}
                for c in sorted(subnet.commitments.values(), key=lambda c: (c.block, c.hotkey))
            ],
            "latest_weights": [_weight_set_to_json(ws) for _, ws in sorted(subnet.latest_weights.items())],
            "weights_history": [_weight_set_to_json(ws) for ws in subnet.weights_history],
        }
    return {"format": FORMAT_NAME, "version": FORMAT_VERSION, "block": state.block, "subnets": subnets}


def _state_from_json(raw: Any, path: Path) -> _State:
    if not isinstance(raw, dict) or raw.get("format") != FORMAT_NAME:
        raise CorruptChainFileError(f"{path} is not a local chain file (no format {FORMAT_NAME!r})")
    if raw.get("version") != FORMAT_VERSION:
        raise CorruptChainFileError(
            f"{path} has format version {raw.get('version')!r}; this code reads version {FORMAT_VERSION}"
        )
    try:
        state = _State(block=int(raw["block"]))
        for netuid_text, sub in raw["subnets"].items():
            subnet = _Subnet(weights_rate_limit=int(sub["weights_rate_limit"]), max_uids=int(sub["max_uids"]))
            for n in sub["neurons"]:
                neuron = Neuron(
                    uid=int(n["uid"]),
                    hotkey=str(n["hotkey"]),
                    registered_block=int(n["registered_block"]),
                    validator_permit=True,
                )
                subnet.neurons[neuron.uid] = neuron
            for c in sub["commitments"]:
                commitment = RawCommitment(
                    hotkey=str(c["hotkey"]), value=str(c["value"]), block=int(c["block"])
                )
                subnet.commitments[commitment.hotkey] = commitment
            for ws in sub["latest_weights"]:
                weight_set = _weight_set_from_json(ws)
                subnet.latest_weights[weight_set.validator] = weight_set
            subnet.weights_history = [_weight_set_from_json(ws) for ws in sub["weights_history"]]
            state.subnets[int(netuid_text)] = subnet
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise CorruptChainFileError(
            f"{path} has an unexpected shape ({type(error).__name__}: {error})"
        ) from error
    return state


# ---- file access -----------------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(lock_path: Path, *, exclusive: bool, timeout_s: float) -> Iterator[None]:
    """Hold ``flock`` on ``lock_path``; give up after ``timeout_s`` rather than hang behind a stuck peer."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        mode = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, mode)
                break
            except OSError as error:
                if error.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    raise LocalChainError(
                        f"timed out after {timeout_s:.0f}s waiting for the lock on {lock_path}"
                    ) from error
                time.sleep(_LOCK_POLL_S)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _read_state(path: Path, *, missing_ok: bool = False) -> _State:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if missing_ok:
            return _State()
        raise ChainFileMissingError(
            f"local chain file {path} does not exist; create it with `voice-validator chain init"
            f" --chain-file {path}` (or point --local-chain-file at the right file)"
        ) from None
    except UnicodeDecodeError as error:
        raise CorruptChainFileError(f"{path} is not UTF-8 text: {error}") from error
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as error:
        raise CorruptChainFileError(
            f"{path} is not valid JSON (line {error.lineno}, column {error.colno}: {error.msg});"
            " fix it or delete it to start a new chain"
        ) from error
    return _state_from_json(raw, path)


def _write_state(path: Path, state: _State) -> None:
    """Write to a temp file in the same directory, fsync, then rename over the old file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = json.dumps(_state_to_json(state), indent=2, ensure_ascii=True) + "\n"
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            # mkstemp makes the file private; the chain is meant to be read by other local tools.
            os.fchmod(handle.fileno(), 0o644)
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


# ---- the chain -------------------------------------------------------------------------------------


def _check_netuid(netuid: int) -> None:
    if isinstance(netuid, bool) or not isinstance(netuid, int) or not 0 <= netuid <= 65535:
        raise LocalChainError(f"netuid must be an integer in 0..65535, got {netuid!r}")


def _check_hotkey(hotkey: str) -> None:
    if not isinstance(hotkey, str) or not hotkey or not hotkey.isprintable() or len(hotkey) > 128:
        raise LocalChainError(f"hotkey must be 1-128 printable characters, got {hotkey!r}")


def _to_u16(weights: Mapping[int, float]) -> dict[int, int]:
    """Scale so the largest weight is 65535, as the bittensor SDK does before submitting."""
    top = max(weights.values())
    return {uid: round(w / top * U16_MAX) for uid, w in weights.items()}


class LocalChain:
    """The :class:`~validator.chain.port.Chain` port over a JSON file, for one validator hotkey.

    Async methods implement the port and run their file I/O in a worker thread. The sync methods are
    the chain's "admin" side (what a miner's wallet or the chain itself would do) for the CLI and tests.
    The file must exist (made by :meth:`create` or :meth:`configure`): a missing one is an error, so a
    mistyped path never runs a validator on an empty chain. A missing subnet reads as empty. There is
    no stake here, so every registered hotkey holds a validator permit.
    """

    def __init__(self, path: Path, validator_hotkey: str, *, lock_timeout_s: float = LOCK_TIMEOUT_S) -> None:
        self.path = Path(path)
        self.validator_hotkey = validator_hotkey
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self._lock_timeout_s = lock_timeout_s

    def __repr__(self) -> str:
        return f"LocalChain(path={str(self.path)!r}, validator_hotkey={self.validator_hotkey!r})"

    # -- internals

    def _read(self) -> _State:
        self._check_exists()
        with _locked(self.lock_path, exclusive=False, timeout_s=self._lock_timeout_s):
            return _read_state(self.path)

    def _check_exists(self) -> None:
        # Checked before the lock too: taking the lock creates the lock file, and a mistyped path
        # must leave nothing behind.
        if not self.path.exists():
            _read_state(self.path)

    @contextlib.contextmanager
    def _transaction(self, *, create: bool = False) -> Iterator[_State]:
        """Read, let the caller modify, write back, all under the exclusive lock.

        If the body raises, nothing is written: a refused extrinsic changes nothing. Only ``create``
        may start from a missing file.
        """
        if not create:
            self._check_exists()
        with _locked(self.lock_path, exclusive=True, timeout_s=self._lock_timeout_s):
            state = _read_state(self.path, missing_ok=create)
            yield state
            _write_state(self.path, state)

    @staticmethod
    def _subnet(state: _State, netuid: int) -> _Subnet:
        _check_netuid(netuid)
        return state.subnets.setdefault(netuid, _Subnet())

    # -- admin (sync)

    @classmethod
    def create(
        cls,
        path: Path,
        netuid: int,
        *,
        validator_hotkey: str = "",
        weights_rate_limit: int = DEFAULT_WEIGHTS_RATE_LIMIT,
        max_uids: int = DEFAULT_MAX_UIDS,
        exist_ok: bool = True,
    ) -> LocalChain:
        """Create the chain file (if missing) and subnet ``netuid`` with these hyperparameters.

        With ``exist_ok`` an existing subnet is left as it is (use :meth:`configure` to change it);
        without it an existing subnet raises :class:`LocalChainError`.
        """
        chain = cls(path, validator_hotkey)
        _check_netuid(netuid)
        with chain._transaction(create=True) as state:
            if netuid in state.subnets:
                if not exist_ok:
                    raise LocalChainError(f"subnet {netuid} already exists in {chain.path}")
            else:
                state.subnets[netuid] = _Subnet()
                chain._apply_config(state.subnets[netuid], weights_rate_limit, max_uids)
        return chain

    def ensure_file(self) -> None:
        """Create an empty chain file (no subnet yet) if there is none; an existing one is left alone."""
        with self._transaction(create=True):
            pass

    @staticmethod
    def _apply_config(subnet: _Subnet, weights_rate_limit: int | None, max_uids: int | None) -> None:
        if weights_rate_limit is not None:
            if weights_rate_limit < 0:
                raise LocalChainError(f"weights_rate_limit must be >= 0, got {weights_rate_limit}")
            subnet.weights_rate_limit = weights_rate_limit
        if max_uids is not None:
            if max_uids < 1 or max_uids > 65535:
                raise LocalChainError(f"max_uids must be in 1..65535, got {max_uids}")
            if any(uid >= max_uids for uid in subnet.neurons):
                raise LocalChainError(f"max_uids {max_uids} is below a uid already in use")
            subnet.max_uids = max_uids

    def configure(
        self, netuid: int, *, weights_rate_limit: int | None = None, max_uids: int | None = None
    ) -> None:
        """Change subnet hyperparameters (``None`` leaves one unchanged); creates the file and the subnet
        if missing (this is ``voice-validator chain init``)."""
        with self._transaction(create=True) as state:
            self._apply_config(self._subnet(state, netuid), weights_rate_limit, max_uids)

    def register(self, netuid: int, hotkey: str) -> Neuron:
        """Register ``hotkey`` on ``netuid`` at the lowest free uid, in a new block."""
        _check_hotkey(hotkey)
        with self._transaction() as state:
            subnet = self._subnet(state, netuid)
            existing = subnet.uid_of(hotkey)
            if existing is not None:
                raise LocalChainError(
                    f"hotkey {hotkey} is already registered on subnet {netuid} as uid {existing}"
                )
            uid = next((u for u in range(subnet.max_uids) if u not in subnet.neurons), None)
            if uid is None:
                raise LocalChainError(f"subnet {netuid} is full ({subnet.max_uids} uids)")
            state.block += 1
            # No stake on this chain: every registered hotkey may validate.
            neuron = Neuron(uid=uid, hotkey=hotkey, registered_block=state.block, validator_permit=True)
            subnet.neurons[uid] = neuron
        return neuron

    def deregister(self, netuid: int, hotkey: str) -> Neuron:
        """Free ``hotkey``'s uid. Its commitment stays on chain, as on subtensor. Returns the old neuron."""
        with self._transaction() as state:
            subnet = self._subnet(state, netuid)
            uid = subnet.uid_of(hotkey)
            if uid is None:
                raise LocalChainError(f"hotkey {hotkey} is not registered on subnet {netuid}")
            state.block += 1
            return subnet.neurons.pop(uid)

    def commit(self, netuid: int, hotkey: str, value: str) -> int:
        """Store ``value`` as ``hotkey``'s commitment in a new block; returns that block.

        Like the Commitments pallet: the hotkey must be registered and the value at most 128 bytes of
        UTF-8. The content is not checked here, so malformed strings can be tested end to end.
        """
        if not isinstance(value, str):
            raise LocalChainError(f"commitment must be a string, got {type(value).__name__}")
        try:
            size = len(value.encode("utf-8"))
        except UnicodeEncodeError as error:
            raise LocalChainError(f"commitment is not encodable as UTF-8: {error}") from error
        if size > MAX_COMMITMENT_BYTES:
            raise LocalChainError(
                f"commitment is {size} bytes; the chain accepts at most {MAX_COMMITMENT_BYTES}"
            )
        with self._transaction() as state:
            subnet = self._subnet(state, netuid)
            if subnet.uid_of(hotkey) is None:
                raise LocalChainError(f"hotkey {hotkey} is not registered on subnet {netuid}; register first")
            state.block += 1
            subnet.commitments[hotkey] = RawCommitment(hotkey=hotkey, value=value, block=state.block)
            return state.block

    def advance(self, blocks: int = 1) -> int:
        """Move the chain forward by ``blocks`` empty blocks; returns the new block number."""
        if isinstance(blocks, bool) or not isinstance(blocks, int) or blocks < 0:
            raise LocalChainError(f"blocks must be a non-negative integer, got {blocks!r}")
        with self._transaction() as state:
            state.block += blocks
            return state.block

    def snapshot(self, netuid: int) -> ChainSnapshot:
        """Block, hyperparameters, neurons and commitments of ``netuid``, read under one lock."""
        _check_netuid(netuid)
        state = self._read()
        subnet = state.subnets.get(netuid)
        exists = subnet is not None
        subnet = subnet or _Subnet()
        return ChainSnapshot(
            block=state.block,
            netuid=netuid,
            exists=exists,
            weights_rate_limit=subnet.weights_rate_limit,
            max_uids=subnet.max_uids,
            neurons=[n for _, n in sorted(subnet.neurons.items())],
            commitments=sorted(subnet.commitments.values(), key=lambda c: (c.block, c.hotkey)),
        )

    def weights(
        self, netuid: int, validator_hotkey: str | None = None
    ) -> tuple[dict[int, float], int | None]:
        """The latest weights of ``validator_hotkey`` (default: this chain's validator) and their block.

        Weights sum to 1 (uid -> weight, zero weights omitted); ``({}, None)`` if none were ever set.
        """
        latest = self.latest_weight_set(netuid, validator_hotkey)
        if latest is None:
            return {}, None
        return dict(latest.weights), latest.block

    def latest_weight_set(self, netuid: int, validator_hotkey: str | None = None) -> WeightSet | None:
        """The latest :class:`WeightSet` of ``validator_hotkey`` (default: this chain's validator)."""
        _check_netuid(netuid)
        subnet = self._read().subnets.get(netuid)
        if subnet is None:
            return None
        return subnet.latest_weights.get(validator_hotkey or self.validator_hotkey)

    def weights_history(self, netuid: int, validator_hotkey: str | None = None) -> list[WeightSet]:
        """Successful weight sets on ``netuid``, oldest first; all validators unless one is named."""
        _check_netuid(netuid)
        subnet = self._read().subnets.get(netuid)
        if subnet is None:
            return []
        return [ws for ws in subnet.weights_history if validator_hotkey in (None, ws.validator)]

    def set_weights_sync(
        self, netuid: int, weights: Mapping[int, float], version_key: int
    ) -> WeightSetResult:
        """Blocking body of :meth:`set_weights`; refusals come back as ``success=False``, never raised."""
        _check_netuid(netuid)
        problem = weights_problem(weights)
        self._check_exists()
        with _locked(self.lock_path, exclusive=True, timeout_s=self._lock_timeout_s):
            state = _read_state(self.path)
            subnet = state.subnets.get(netuid)
            refusal = None if problem is None else (problem, Refusal.INVALID)
            if refusal is None:
                refusal = self._refusal(state, subnet, netuid, weights)
            if refusal is not None or subnet is None:
                message, kind = refusal or (f"subnet {netuid} does not exist", Refusal.INVALID)
                return WeightSetResult(success=False, message=message, block=state.block, refusal=kind)
            state.block += 1
            kept = {operator.index(uid): float(w) for uid, w in weights.items() if w > 0}
            total = math.fsum(kept.values())
            normalised = {uid: w / total for uid, w in sorted(kept.items())}
            weight_set = WeightSet(
                validator=self.validator_hotkey,
                block=state.block,
                version_key=version_key,
                weights=normalised,
                u16=_to_u16(normalised),
            )
            subnet.latest_weights[self.validator_hotkey] = weight_set
            subnet.weights_history.append(weight_set)
            del subnet.weights_history[:-MAX_WEIGHT_HISTORY]
            _write_state(self.path, state)
        return WeightSetResult(
            success=True, message=f"set {len(normalised)} weights at block {state.block}", block=state.block
        )

    def _refusal(
        self, state: _State, subnet: _Subnet | None, netuid: int, weights: Mapping[int, float]
    ) -> tuple[str, Refusal] | None:
        """Why the chain would refuse this validator's weight set now (and what kind of refusal)."""
        if subnet is None:
            return f"subnet {netuid} does not exist", Refusal.INVALID
        if not self.validator_hotkey or subnet.uid_of(self.validator_hotkey) is None:
            return (
                f"validator hotkey {self.validator_hotkey!r} is not registered on subnet {netuid}",
                Refusal.NOT_REGISTERED,
            )
        unknown = sorted(operator.index(uid) for uid in weights if operator.index(uid) not in subnet.neurons)
        if unknown:
            return f"uids not registered on subnet {netuid}: {unknown}", Refusal.INVALID
        last = subnet.latest_weights.get(self.validator_hotkey)
        limit = subnet.weights_rate_limit
        # The new set would land in block ``state.block + 1``; two sets must land ``limit`` blocks apart.
        if last is not None and state.block + 1 - last.block < limit:
            return (
                f"rate limited: weights last set at block {last.block}, the next set may land at block"
                f" {last.block + limit} or later (rate limit {limit} blocks, now at block {state.block})"
            ), Refusal.RATE_LIMITED
        return None

    # -- the Chain port (async)

    async def block(self) -> int:
        """Current block number."""
        state = await asyncio.to_thread(self._read)
        return state.block

    async def neurons(self, netuid: int) -> list[Neuron]:
        """Every registered neuron of ``netuid``, by uid."""
        snapshot = await asyncio.to_thread(self.snapshot, netuid)
        return snapshot.neurons

    async def commitments(self, netuid: int) -> list[RawCommitment]:
        """The latest commitment of every hotkey that has one, deregistered hotkeys included."""
        snapshot = await asyncio.to_thread(self.snapshot, netuid)
        return snapshot.commitments

    async def set_weights(self, netuid: int, weights: dict[int, float], version_key: int) -> WeightSetResult:
        """Set this validator's weights; refusals (rate limit, zero vector, ...) return ``success=False``."""
        return await asyncio.to_thread(self.set_weights_sync, netuid, dict(weights), version_key)

    async def hyperparameters(self, netuid: int) -> Hyperparameters:
        """The subnet's rate limit; tempo, commit-reveal and version key are fixed on the local chain."""
        snapshot = await asyncio.to_thread(self.snapshot, netuid)
        return Hyperparameters(
            tempo=LOCAL_TEMPO,
            weights_rate_limit=snapshot.weights_rate_limit,
            commit_reveal=False,
            version_key=LOCAL_MIN_VERSION_KEY,
        )

    async def current_weights(self, netuid: int) -> dict[int, float]:
        """This validator's latest weights (summing to 1), ``{}`` if it never set any."""
        weights, _ = await asyncio.to_thread(self.weights, netuid)
        return weights

    async def last_weights_block(self, netuid: int) -> int | None:
        """Block of this validator's latest weight set, ``None`` if it never set any."""
        _, block = await asyncio.to_thread(self.weights, netuid)
        return block

    async def block_hash(self, block: int) -> str:
        """A stand-in hash: sha256 of the block number. Predictable, which is fine for a dev chain."""
        return "0x" + hashlib.sha256(f"local-chain-block:{block}".encode()).hexdigest()

    async def commit_own(self, netuid: int, value: str) -> int:
        """Commit ``value`` for this chain's own hotkey (see :meth:`commit`); returns the block."""
        if not self.validator_hotkey:
            raise LocalChainError("this LocalChain has no hotkey of its own to commit with")
        return await asyncio.to_thread(self.commit, netuid, self.validator_hotkey, value)

    async def own_hotkey(self) -> str:
        """The validator hotkey this chain object acts for."""
        return self.validator_hotkey

    async def revealed_round(self) -> int | None:
        """No drand here: weights are never committed, only set."""
        return None

    async def runtime_info(self, netuid: int) -> RuntimeInfo:
        """The file chain has no runtime; it reads the file once so a missing or corrupt one shows."""
        await asyncio.to_thread(self.snapshot, netuid)
        return RuntimeInfo(name=f"local file chain {self.path}", spec_version=None)

    @property
    def deadline_s(self) -> float:
        """A call waits at most for the file lock, then reads (and may write) a small file."""
        return self._lock_timeout_s + 5.0

    async def close(self) -> None:
        """Nothing to release: every call opens and closes its own files."""
