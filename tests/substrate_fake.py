"""An in-memory stand-in for bittensor 11's ``Substrate`` backend that speaks the real runtime's codec.

``bt.Client(substrate=FakeSubstrate())`` sends every read and write through this object: the SDK's own
metagraph decoding, commitment decoding, ``SetWeights`` preflight (registration, rate limit,
commit-reveal), u16 normalisation and composition all run for real; only the node is replaced. And the
node's wire is real too: the fake holds a :class:`~bittensor._transport.codec.RuntimeCodec` built from
real subtensor metadata (:mod:`tests.runtime_metadata`), and

- every storage read builds the item's real storage key, SCALE-encodes the stored value with the item's
  runtime type and decodes it back with the transport's own miss semantics (Default vs Optional), so a
  read returns exactly the shape a node's answer decodes to, and an item the runtime lacks raises the
  transport's ``StorageFunctionNotFound`` as a real node's metadata would;
- maps are read back from real keys (hashed prefixes, Identity/Twox64Concat keys) by the core's map
  decoder;
- the metagraph runtime call encodes its parameter and result through the runtime API definition;
- every call is composed by the codec against the runtime's call index, signed with the SDK's own
  extrinsic builder, decoded back from the signed bytes and applied from what was decoded, the
  signature checked against the signer's key.

State is plain attributes and helper methods (``register``, ``set_commitment_fields`` ...). Every
submitted extrinsic is recorded in :attr:`FakeSubstrate.submitted` and applied the way subtensor would
(weights and ``LastUpdate`` for ``set_mechanism_weights``, a timelocked commit for
``commit_timelocked_mechanism_weights``, ``CommitmentOf`` for ``set_commitment``), each in a new block;
subtensor's refusals (no validator permit, too little stake, an old version key, too fast) come back as
the SDK reports them. :meth:`FakeSubstrate.hang` makes calls block forever, like a half-dead websocket.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from bittensor import Balance, ExtrinsicResult
from bittensor._transport.codec import RuntimeCodec
from bittensor._transport.errors import SubstrateRequestException
from bittensor._transport.extrinsics import IMMORTAL, create_signed_extrinsic, prepare_extrinsic
from bittensor._transport.runtime_api import decode_runtime_api_result, encode_runtime_api_params
from bittensor._transport.storage import decode_storage_value
from bittensor.result import ChainError, chain_error_from_substrate_request
from bittensor.sp_core import Keypair

from tests.runtime_metadata import current_runtime

U16_MAX = 65535
RAO_PER_TAO = 10**9
GENESIS = "0x" + "4a" * 32
"""A stand-in genesis hash; signatures cover it like a real chain's."""

# subtensor's transaction extension rejects these before dispatch ("Custom error: N" in the pool).
POOL_STAKE_TOO_LOW = 1
POOL_RATE_LIMITED = 6


@dataclass(frozen=True)
class Submitted:
    """One extrinsic handed to :meth:`FakeSubstrate.submit`, as decoded from its signed bytes."""

    module: str
    function: str
    params: dict[str, Any]
    signer: str
    block: int


@dataclass
class FakeNeuron:
    """One registered hotkey of a fake subnet."""

    hotkey: str
    coldkey: str
    registered_block: int
    validator_permit: bool = False
    stake_rao: int = 0


@dataclass
class FakeSubnet:
    """Storage of one fake subnet (mechanism 0 only)."""

    tempo: int = 360
    weights_rate_limit: int = 0
    commit_reveal: bool = False
    version_key: int = 0
    min_allowed_weights: int = 0
    max_weights_limit: int = U16_MAX
    reveal_period_epochs: int = 1
    epoch_consensus: str = "Yuma"
    neurons: list[FakeNeuron] = field(default_factory=list)
    commitments: dict[str, dict[str, Any]] = field(default_factory=dict)
    weights: dict[int, list[tuple[int, int]]] = field(default_factory=dict)
    last_update: dict[int, int] = field(default_factory=dict)
    timelocked_commits: list[dict[str, Any]] = field(default_factory=list)

    def uid_of(self, hotkey: str) -> int | None:
        for uid, neuron in enumerate(self.neurons):
            if neuron.hotkey == hotkey:
                return uid
        return None


def _args(decoded_call: dict[str, Any]) -> dict[str, Any]:
    return {arg["name"]: arg["value"] for arg in decoded_call["call_args"]}


class FakeSubstrate:
    """Answers the calls the bittensor 11 ``Client`` makes, through a real runtime's codec."""

    def __init__(
        self, block: int = 100, block_time: float = 12.0, runtime: RuntimeCodec | None = None
    ) -> None:
        self.runtime = runtime or current_runtime()
        self.block = block
        self.seconds_per_block = block_time
        self.subnets: dict[int, FakeSubnet] = {}
        self.submitted: list[Submitted] = []
        self.connects = 0
        self.closes = 0
        self.connected = False
        self.token_symbols: dict[int, str] = {}
        self.stake_threshold_rao = 0
        """subtensor's ``StakeThreshold``: the least stake a hotkey needs to set weights."""
        self.drand_round = 0
        """``Drand.LastStoredRound``: the newest drand pulse the chain has stored."""
        self.submit_error: BaseException | None = None
        """Raised (once) inside the next ``submit``, before anything reaches the pool."""
        self._hang_count = 0
        self._nonces: dict[str, int] = {}
        self.calls: list[str] = []

    # -- test controls

    def subnet(self, netuid: int) -> FakeSubnet:
        """The subnet's storage, created empty on first use."""
        return self.subnets.setdefault(netuid, FakeSubnet())

    def register(
        self,
        netuid: int,
        hotkey: str,
        *,
        coldkey: str = "",
        validator_permit: bool = False,
        stake_tao: float = 0,
    ) -> int:
        """Register ``hotkey`` at the next uid in a new block; returns the uid."""
        self.block += 1
        subnet = self.subnet(netuid)
        subnet.neurons.append(
            FakeNeuron(
                hotkey=hotkey,
                coldkey=coldkey or hotkey,
                registered_block=self.block,
                validator_permit=validator_permit,
                stake_rao=int(stake_tao * RAO_PER_TAO),
            )
        )
        return len(subnet.neurons) - 1

    def set_commitment_fields(
        self, netuid: int, hotkey: str, fields: list[Any], *, block: int | None = None
    ) -> int:
        """Store a ``CommitmentOf`` record with these ``Data`` fields; returns its block."""
        if block is None:
            self.block += 1
            block = self.block
        self.subnet(netuid).commitments[hotkey] = {"block": block, "deposit": 0, "info": {"fields": fields}}
        return block

    def set_commitment(self, netuid: int, hotkey: str, value: str) -> int:
        """Store ``value`` as one Raw field, the way a miner's plain commitment lands."""
        data = value.encode("utf-8")
        return self.set_commitment_fields(netuid, hotkey, [{f"Raw{len(data)}": "0x" + data.hex()}])

    def advance(self, blocks: int = 1) -> int:
        """Produce empty blocks."""
        self.block += blocks
        return self.block

    def hang(self, calls: int = 1) -> None:
        """Make the next ``calls`` chain calls wait forever (a half-dead websocket)."""
        self._hang_count = calls

    def reveal(self, netuid: int, hotkey: str, weights: dict[int, int]) -> None:
        """The chain's automatic reveal of ``hotkey``'s timelocked commit, in a new block.

        A drand timelock cannot be opened offline, so the test says what the commit held (u16 values by
        uid); the fake checks a commit of that hotkey is pending and that its round has been stored.
        """
        subnet = self.subnet(netuid)
        uid = subnet.uid_of(hotkey)
        pending = [c for c in subnet.timelocked_commits if c["uid"] == uid]
        if not pending:
            raise AssertionError(f"{hotkey} has no timelocked commit on subnet {netuid}")
        commit = pending[-1]
        if commit["reveal_round"] > self.drand_round:
            raise AssertionError(
                f"drand round {commit['reveal_round']} is not stored yet ({self.drand_round})"
            )
        subnet.timelocked_commits.remove(commit)
        self.block += 1
        assert uid is not None
        subnet.weights[uid] = sorted(weights.items())

    def calls_of(self, prefix: str) -> list[str]:
        """The recorded calls starting with ``prefix`` (e.g. ``"submit"``)."""
        return [call for call in self.calls if call.startswith(prefix)]

    async def _touch(self, what: str) -> None:
        self.calls.append(what)
        if self._hang_count > 0:
            self._hang_count -= 1
            await asyncio.Event().wait()

    # -- storage through the codec

    def _value(self, module: str, item: str, params: list[Any]) -> Any:
        """The model's value of one storage item, or None where the chain holds no key."""
        if module == "Commitments" and item == "CommitmentOf":
            netuid, hotkey = params
            return self.subnets.get(netuid, FakeSubnet()).commitments.get(hotkey)
        if module == "Drand" and item == "LastStoredRound":
            return self.drand_round
        if module != "SubtensorModule":
            return None
        if item == "StakeThreshold":
            return self.stake_threshold_rao
        subnet = self.subnets.get(params[0]) if params and isinstance(params[0], int) else None
        if subnet is None:
            return None
        per_subnet = {
            "Tempo": subnet.tempo,
            "WeightsSetRateLimit": subnet.weights_rate_limit,
            "CommitRevealWeightsEnabled": subnet.commit_reveal,
            "WeightsVersionKey": subnet.version_key,
            "MinAllowedWeights": subnet.min_allowed_weights,
            "MaxWeightsLimit": subnet.max_weights_limit,
            "SubnetworkN": len(subnet.neurons),
            "RevealPeriodEpochs": subnet.reveal_period_epochs,
            "LastEpochBlock": 0,
            "PendingEpochAt": 0,
            "SubnetEpochIndex": 0,
            "BlocksSinceLastStep": 0,
            "SubnetEpochConsensus": subnet.epoch_consensus,
        }
        if item in per_subnet:
            return per_subnet[item]
        if item == "Uids":
            return subnet.uid_of(params[1])
        if item == "LastUpdate":
            return [subnet.last_update.get(uid, 0) for uid in range(len(subnet.neurons))]
        if item == "ValidatorPermit":
            return [n.validator_permit for n in subnet.neurons]
        if item == "Weights":
            row = subnet.weights.get(params[1])
            return None if row is None else [list(pair) for pair in row]
        return None

    def _keys(self, module: str, item: str, prefix: list[Any]) -> list[list[Any]]:
        """Full parameter lists of every key the model holds under ``prefix`` of a map."""
        subnet = self.subnets.get(prefix[0]) if prefix and isinstance(prefix[0], int) else None
        if subnet is None:
            return []
        netuid = prefix[0]
        if (module, item) == ("Commitments", "CommitmentOf"):
            return [[netuid, hotkey] for hotkey in subnet.commitments]
        if (module, item) == ("SubtensorModule", "Uids"):
            return [[netuid, n.hotkey] for n in subnet.neurons]
        if (module, item) == ("SubtensorModule", "Weights"):
            return [[netuid, uid] for uid in sorted(subnet.weights)]
        return []

    def _encoded(self, module: str, item: str, params: list[Any]) -> bytes | None:
        entry = self.runtime.storage_entry(module, item)
        value = self._value(module, item, params)
        return None if value is None else self.runtime.encode(entry.value_type, value)

    def read(self, module: str, item: str, params: list[Any]) -> Any:
        """What a node would return for one storage item (real key, real types, real miss rules)."""
        entry = self.runtime.storage_entry(module, item)  # StorageFunctionNotFound when the runtime lacks it
        if len(params) != len(entry.param_types):
            raise ValueError(
                f"Storage function requires {len(entry.param_types)} parameters, {len(params)} given"
            )
        self.runtime.storage_key(entry, params)  # the key must encode (an invalid SS58 raises here)
        return decode_storage_value(self.runtime, entry, self._encoded(module, item, params))

    # -- Substrate protocol: lifecycle

    def balance(self, rao: int, netuid: int = 0) -> Balance:
        """A balance in the subnet's unit."""
        return Balance.from_rao(rao, netuid)

    async def connect(self) -> None:
        """Count connects so tests can see a rebuilt client."""
        self.connects += 1
        self.connected = True

    async def close(self) -> None:
        """Count closes."""
        self.closes += 1
        self.connected = False

    # -- reads

    async def block_hash(self, block: int | None = None) -> str:
        """A fake hash that encodes the block number."""
        await self._touch("block_hash")
        return f"0x{(self.block if block is None else block):064x}"

    async def block_number(self) -> int:
        """Head block."""
        await self._touch("block_number")
        return self.block

    async def finalized_block_number(self) -> int:
        """Everything is final here."""
        await self._touch("finalized_block_number")
        return self.block

    async def block_time(self) -> float:
        """Seconds per block."""
        return self.seconds_per_block

    async def spec_version(self) -> int:
        """The runtime's spec version."""
        await self._touch("spec_version")
        return self.runtime.spec_version

    async def get_block(self, block_number: int | None = None, block_hash: str | None = None) -> dict | None:
        """No block bodies are kept."""
        return None

    async def events(self, block_hash: str | None = None) -> list[dict]:
        """No events are kept."""
        return []

    def blocks(self, *, finalized: bool = False) -> AsyncIterator[dict]:
        """Block subscriptions are not faked."""
        raise NotImplementedError("the fake does not stream blocks")

    async def query(
        self, module: str, storage_function: str, params: list | None = None, block_hash: str | None = None
    ) -> Any:
        """One storage item, as the SDK's RPC backend returns it."""
        await self._touch(f"query {module}.{storage_function}")
        return self.read(module, storage_function, list(params or []))

    async def map_has_entries(
        self, module: str, storage_function: str, params: list, block_hash: str | None = None
    ) -> bool:
        """Whether :meth:`query_map` would return anything."""
        return bool(await self.query_map(module, storage_function, params, block_hash))

    async def query_map(
        self, module: str, storage_function: str, params: list | None = None, block_hash: str | None = None
    ) -> list[tuple[Any, Any]]:
        """A whole storage map as ``(key, value)`` pairs, decoded from real storage keys."""
        await self._touch(f"query_map {module}.{storage_function}")
        prefix = list(params or [])
        entry = self.runtime.storage_entry(module, storage_function)
        if len(prefix) >= len(entry.param_types):
            raise ValueError("map prefix must leave at least one key unspecified")
        raw_keys: list[bytes] = []
        raw_values: list[bytes] = []
        for key_params in self._keys(module, storage_function, prefix):
            encoded = self._encoded(module, storage_function, key_params)
            if encoded is not None:
                raw_keys.append(self.runtime.storage_key(entry, key_params))
                raw_values.append(encoded)
        pairs = self.runtime.decode_map_pairs(entry, raw_keys, raw_values, fixed=len(prefix))
        # RpcSubstrate hands single-component keys over as scalars.
        return [(k[0] if isinstance(k, list | tuple) and len(k) == 1 else k, v) for k, v in pairs]

    async def query_batch(
        self, module: str, storage_function: str, param_sets: list[list], block_hash: str | None = None
    ) -> list[Any]:
        """One :meth:`query` per key."""
        return [await self.query(module, storage_function, params, block_hash) for params in param_sets]

    async def runtime_call(self, api: str, method: str, params: list, block_hash: str | None = None) -> Any:
        """``SubnetInfoRuntimeApi.get_metagraph``, parameters and result through the runtime API types."""
        await self._touch(f"runtime_call {api}.{method}")
        if (api, method) != ("SubnetInfoRuntimeApi", "get_metagraph"):
            raise SubstrateRequestException(f"the fake does not answer {api}.{method}")
        definition = self.runtime.runtime_api_map[api][method]
        encoded_params = bytes.fromhex(encode_runtime_api_params(self.runtime, api, method, params))
        (_, netuid_type), *_ = definition["inputs"]
        netuid = self.runtime.decode(netuid_type, encoded_params)
        value = self._metagraph(netuid, definition["output"])
        raw = self.runtime.encode(definition["output"], value)
        return decode_runtime_api_result(self.runtime, api, method, raw)

    def _metagraph(self, netuid: int, output_type: str) -> dict[str, Any] | None:
        subnet = self.subnets.get(netuid)
        if subnet is None:
            return None
        # Every field of the runtime's Metagraph at its zero value, then ours filled in.
        graph: dict[str, Any] = self.runtime.decode(output_type, b"\x01" + bytes(4096), strict=False)
        neurons = subnet.neurons
        count = len(neurons)
        graph.update(
            {
                "netuid": netuid,
                "name": list(b"voice"),
                "symbol": list(b"v"),
                "block": self.block,
                "tempo": subnet.tempo,
                "owner_hotkey": neurons[0].hotkey if neurons else graph["owner_hotkey"],
                "owner_coldkey": neurons[0].coldkey if neurons else graph["owner_coldkey"],
                "network_registered_at": 1,
                "num_uids": count,
                "max_uids": 256,
                "weights_version": subnet.version_key,
                "weights_rate_limit": subnet.weights_rate_limit,
                "commit_reveal_weights_enabled": subnet.commit_reveal,
                "hotkeys": [n.hotkey for n in neurons],
                "coldkeys": [n.coldkey for n in neurons],
                "active": [True] * count,
                "validator_permit": [n.validator_permit for n in neurons],
                "last_update": [subnet.last_update.get(uid, 0) for uid in range(count)],
                "block_at_registration": [n.registered_block for n in neurons],
                "alpha_stake": [n.stake_rao for n in neurons],
                "tao_stake": [0] * count,
                "total_stake": [n.stake_rao for n in neurons],
            }
        )
        # The other per-neuron vectors hold ``count`` zero elements of their runtime type.
        for name, type_id in self._metagraph_fields(output_type).items():
            if isinstance(graph[name], list) and name not in ("name", "symbol") and len(graph[name]) != count:
                graph[name] = self.runtime.decode(
                    f"scale_info::{type_id}", _compact(count) + bytes(512 * count), strict=False
                )
        return graph

    def _metagraph_fields(self, output_type: str) -> dict[str, int]:
        """Field name -> type id of the ``Metagraph`` inside ``Option<Metagraph>``."""
        types = {t["id"]: t["type"] for t in self.runtime.registry_types()}
        option = types[int(output_type.removeprefix("scale_info::"))]
        (some,) = [v for v in option["def"]["variant"]["variants"] if v["name"] == "Some"]
        graph = types[some["fields"][0]["type"]]
        return {f["name"]: f["type"] for f in graph["def"]["composite"]["fields"]}

    async def constant(self, module: str, name: str) -> Any:
        """A pallet constant from the runtime's metadata."""
        return self.runtime.constant(module, name)

    async def decode_scale(self, type_string: str, data: Any) -> Any:
        """SCALE-decode bytes (or 0x-hex) with the runtime's types."""
        raw = bytes.fromhex(data.removeprefix("0x")) if isinstance(data, str) else bytes(data)
        return self.runtime.decode(type_string, raw)

    # -- calls and fees

    async def compose(self, call: Any) -> Any:
        """Compose the generated ``Call(module, function, params)`` with the runtime's call index."""
        module, function, params = call
        await self._touch(f"compose {module}.{function}")
        return self.runtime.compose_call(module, function, params)

    async def estimate_fee(self, call: Any, keypair: Any) -> Balance:
        """Fees are free here."""
        return Balance.from_rao(0)

    async def estimate_weight(self, call: Any, keypair: Any) -> dict:
        """A nominal dispatch weight."""
        return {"ref_time": 0, "proof_size": 0}

    async def account_next_index(self, address: str) -> int:
        """The next nonce of ``address`` (one per applied extrinsic)."""
        return self._nonces.get(address, 0)

    async def mev_next_key(self) -> bytes | None:
        """No MEV shield."""
        return None

    async def submit(
        self,
        call: Any,
        keypair: Any,
        *,
        nonce: int | None = None,
        period: int | None = None,
        wait_for_inclusion: bool = True,
        wait_for_finalization: bool = True,
    ) -> ExtrinsicResult:
        """Sign with the SDK's builder, decode the extrinsic back, apply it in a new block."""
        await self._touch("submit")
        if self.submit_error is not None:
            error, self.submit_error = self.submit_error, None
            # RpcSubstrate's contract for a failure that is not a chain answer (a dropped socket).
            raise ChainError(str(error)) from error
        signer = str(keypair.ss58_address)
        nonce = self._nonces.get(signer, 0) if nonce is None else nonce
        signed = await create_signed_extrinsic(
            self.runtime,
            call,
            keypair,
            era=IMMORTAL,
            nonce=nonce,
            genesis_hash=GENESIS,
            era_block_hash=GENESIS,
        )
        decoded = self.runtime.decode_extrinsic(signed.data)
        self._check_signature(call, keypair, decoded, nonce)
        module, function = decoded["call"]["call_module"], decoded["call"]["call_function"]
        params = _args(decoded["call"])
        rejected = self._pool_check(module, function, params, decoded["address"])
        if rejected is not None:
            return ExtrinsicResult(success=False, message=rejected.message, error=rejected)
        self._nonces[signer] = nonce + 1
        self.block += 1
        self.submitted.append(Submitted(module, function, params, decoded["address"], self.block))
        problem = self._apply(module, function, params, decoded["address"])
        if problem is not None:
            error = self._dispatch_error(module, problem)
            return ExtrinsicResult(
                success=False,
                message=error.message,
                block_hash=f"0x{self.block:064x}",
                extrinsic_id=f"{self.block}-0001",
                error=error,
            )
        return ExtrinsicResult(
            success=True,
            message="Success",
            block_hash=f"0x{self.block:064x}",
            extrinsic_id=f"{self.block}-0001",
        )

    def _check_signature(self, call: Any, keypair: Any, decoded: dict[str, Any], nonce: int) -> None:
        """The decoded signer and signature are those of the payload the SDK signed."""
        assert decoded["address"] == keypair.ss58_address, decoded["address"]
        unsigned = prepare_extrinsic(
            self.runtime,
            call,
            address=keypair.ss58_address,
            public_key=bytes(keypair.public_key),
            crypto_type=keypair.crypto_type,
            era=IMMORTAL,
            nonce=nonce,
            genesis_hash=GENESIS,
            era_block_hash=GENESIS,
        )
        ((_, signature),) = decoded["signature"].items()
        # Checked with the public key alone, as the node does: the signer object need not verify.
        public = Keypair(ss58_address=decoded["address"])
        assert public.verify(unsigned.payload, bytes.fromhex(signature.removeprefix("0x"))), "bad signature"

    def _pool_check(
        self, module: str, function: str, params: dict[str, Any], signer: str
    ) -> ChainError | None:
        """subtensor's transaction extension: refusals before dispatch, as the pool reports them."""
        if (module, function) not in (
            ("SubtensorModule", "set_mechanism_weights"),
            ("SubtensorModule", "commit_timelocked_mechanism_weights"),
        ):
            return None
        subnet = self.subnet(params["netuid"])
        uid = subnet.uid_of(signer)
        if uid is None:
            return None  # dispatch names it (HotKeyNotRegisteredInSubNet)
        if subnet.neurons[uid].stake_rao < self.stake_threshold_rao:
            return _pool_rejection(POOL_STAKE_TOO_LOW)
        last = subnet.last_update.get(uid, 0)
        if subnet.weights_rate_limit and last and self.block + 1 - last < subnet.weights_rate_limit:
            return _pool_rejection(POOL_RATE_LIMITED)
        return None

    def _dispatch_error(self, module: str, name: str) -> ChainError:
        """A module error as the SDK decodes a failed receipt: its name and its docs from the metadata."""
        for pallet in self.runtime.metadata_ir().pallets:
            if pallet.name == module:
                for error in pallet.errors:
                    if error.name == name:
                        docs = error.docs
                        text = (docs if isinstance(docs, str) else " ".join(docs)) or name
                        return ChainError(text, name)
        raise AssertionError(f"{module} has no error {name} in this runtime")

    def _apply(self, module: str, function: str, params: dict[str, Any], signer: str) -> str | None:
        """Apply a decoded call; the subtensor error name when dispatch fails."""
        handlers: dict[tuple[str, str], Callable[[dict[str, Any], str], str | None]] = {
            ("SubtensorModule", "set_mechanism_weights"): self._set_weights,
            ("SubtensorModule", "commit_timelocked_mechanism_weights"): self._commit_timelocked,
            ("Commitments", "set_commitment"): self._set_commitment,
        }
        handler = handlers.get((module, function))
        return None if handler is None else handler(params, signer)

    def _weights_refusal(self, subnet: FakeSubnet, uid: int | None, dests: list[int] | None) -> str | None:
        if uid is None:
            return "HotKeyNotRegisteredInSubNet"
        if dests != [uid] and not subnet.neurons[uid].validator_permit:
            return "NeuronNoValidatorPermit"
        return None

    def _set_weights(self, params: dict[str, Any], signer: str) -> str | None:
        subnet = self.subnet(params["netuid"])
        uid = subnet.uid_of(signer)
        problem = self._weights_refusal(subnet, uid, list(params["dests"]))
        if problem is not None:
            return problem
        if params["version_key"] < subnet.version_key:
            return "IncorrectWeightVersionKey"
        assert uid is not None
        subnet.weights[uid] = list(zip(params["dests"], params["weights"], strict=True))
        subnet.last_update[uid] = self.block
        return None

    def _commit_timelocked(self, params: dict[str, Any], signer: str) -> str | None:
        subnet = self.subnet(params["netuid"])
        uid = subnet.uid_of(signer)
        problem = self._weights_refusal(subnet, uid, None)
        if problem is not None:
            return problem
        if not subnet.commit_reveal:
            return "CommitRevealDisabled"
        subnet.timelocked_commits.append({"uid": uid, "block": self.block, **params})
        assert uid is not None
        subnet.last_update[uid] = self.block
        return None

    def _set_commitment(self, params: dict[str, Any], signer: str) -> str | None:
        subnet = self.subnet(params["netuid"])
        if subnet.uid_of(signer) is None:
            return "AccountNotAllowedCommit"
        subnet.commitments[signer] = {"block": self.block, "deposit": 0, "info": params["info"]}
        return None


def _compact(value: int) -> bytes:
    """SCALE compact encoding of a small non-negative int (a vector length)."""
    if value < 1 << 6:
        return bytes([value << 2])
    return ((value << 2) | 1).to_bytes(2, "little")


def _pool_rejection(custom: int) -> ChainError:
    """How the SDK reports a transaction the pool refused with ``InvalidTransaction::Custom(custom)``."""
    payload = {"error": {"code": 1010, "message": "Invalid Transaction", "data": f"Custom error: {custom}"}}
    return chain_error_from_substrate_request(SubstrateRequestException(payload))
