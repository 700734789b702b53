"""An in-memory stand-in for bittensor 11's ``Substrate`` backend, so the real ``bt.Client`` runs offline.

``bt.Client(substrate=FakeSubstrate())`` sends every read and write through this object: the SDK's own
metagraph decoding, commitment decoding, ``SetWeights`` preflight (registration, rate limit,
commit-reveal), u16 normalisation and composition all run for real; only the node is replaced.

State is plain attributes and helper methods (``register``, ``set_commitment_fields`` ...). Every
submitted extrinsic is recorded in :attr:`FakeSubstrate.submitted` and applied to the state the way
subtensor would (weights and ``LastUpdate`` for ``set_mechanism_weights``, ``CommitmentOf`` for
``set_commitment``), each in a new block. :meth:`FakeSubstrate.hang` makes calls block forever, like a
half-dead websocket.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from bittensor import Balance, ExtrinsicResult

U16_MAX = 65535
RAO_PER_TAO = 10**9


@dataclass(frozen=True)
class Submitted:
    """One extrinsic handed to :meth:`FakeSubstrate.submit`."""

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


class FakeSubstrate:
    """Answers the calls the bittensor 11 ``Client`` makes for metagraph, commitments and weights."""

    def __init__(self, block: int = 100, block_time: float = 12.0) -> None:
        self.block = block
        self.seconds_per_block = block_time
        self.subnets: dict[int, FakeSubnet] = {}
        self.submitted: list[Submitted] = []
        self.connects = 0
        self.closes = 0
        self.connected = False
        self.token_symbols: dict[int, str] = {}
        self._hang_count = 0
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
        """Store a ``CommitmentOf`` record with these decoded ``Data`` fields; returns its block."""
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

    async def _touch(self, what: str) -> None:
        self.calls.append(what)
        if self._hang_count > 0:
            self._hang_count -= 1
            await asyncio.Event().wait()

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
        """A recent runtime."""
        return 400

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
        """One storage item, decoded as the SDK's RPC backend would return it."""
        await self._touch(f"query {module}.{storage_function}")
        params = list(params or [])
        if module == "SubtensorModule":
            return self._subtensor_item(storage_function, params)
        if module == "Commitments" and storage_function == "CommitmentOf":
            netuid, hotkey = params
            return self.subnets.get(netuid, FakeSubnet()).commitments.get(hotkey)
        return None

    def _subtensor_item(self, name: str, params: list) -> Any:
        netuid = params[0] if params else None
        subnet = self.subnets.get(netuid) if isinstance(netuid, int) else None
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
            "SubnetEpochConsensus": "Yuma",
        }
        if name in per_subnet:
            return per_subnet[name]
        if name == "Uids":
            return subnet.uid_of(params[1])
        if name == "LastUpdate":
            return [subnet.last_update.get(uid, 0) for uid in range(len(subnet.neurons))]
        if name == "ValidatorPermit":
            return [n.validator_permit for n in subnet.neurons]
        if name == "Weights":
            return list(subnet.weights.get(params[1], []))
        return None

    async def map_has_entries(
        self, module: str, storage_function: str, params: list, block_hash: str | None = None
    ) -> bool:
        """Whether :meth:`query_map` would return anything."""
        return bool(await self.query_map(module, storage_function, params, block_hash))

    async def query_map(
        self, module: str, storage_function: str, params: list | None = None, block_hash: str | None = None
    ) -> list[tuple[Any, Any]]:
        """A whole storage map as ``(key, value)`` pairs."""
        await self._touch(f"query_map {module}.{storage_function}")
        params = list(params or [])
        subnet = self.subnets.get(params[0]) if params and isinstance(params[0], int) else None
        if subnet is None:
            return []
        if (module, storage_function) == ("Commitments", "CommitmentOf"):
            return list(subnet.commitments.items())
        if (module, storage_function) == ("SubtensorModule", "Uids"):
            return [(n.hotkey, uid) for uid, n in enumerate(subnet.neurons)]
        if (module, storage_function) == ("SubtensorModule", "Weights"):
            return [(uid, list(row)) for uid, row in sorted(subnet.weights.items())]
        return []

    async def query_batch(
        self, module: str, storage_function: str, param_sets: list[list], block_hash: str | None = None
    ) -> list[Any]:
        """One :meth:`query` per key."""
        return [await self.query(module, storage_function, params, block_hash) for params in param_sets]

    async def runtime_call(self, api: str, method: str, params: list, block_hash: str | None = None) -> Any:
        """``SubnetInfoRuntimeApi.get_metagraph``; every other runtime API answers ``None``."""
        await self._touch(f"runtime_call {api}.{method}")
        if (api, method) != ("SubnetInfoRuntimeApi", "get_metagraph"):
            return None
        subnet = self.subnets.get(params[0])
        if subnet is None:
            return None
        neurons = subnet.neurons
        count = len(neurons)
        return {
            "netuid": params[0],
            "name": "voice",
            "symbol": "v",
            "block": self.block,
            "tempo": subnet.tempo,
            "last_step": 0,
            "blocks_since_last_step": 0,
            "owner_hotkey": neurons[0].hotkey if neurons else "",
            "owner_coldkey": neurons[0].coldkey if neurons else "",
            "network_registered_at": 1,
            "num_uids": count,
            "max_uids": 256,
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

    async def constant(self, module: str, name: str) -> Any:
        """No constants are faked."""
        return None

    async def decode_scale(self, type_string: str, data: Any) -> Any:
        """SCALE decoding is not faked."""
        raise NotImplementedError("the fake does not decode SCALE")

    # -- calls and fees

    async def compose(self, call: Any) -> Any:
        """The generated ``Call(module, function, params)`` is already everything the fake needs."""
        await self._touch(f"compose {call.module}.{call.function}")
        return call

    async def estimate_fee(self, call: Any, keypair: Any) -> Balance:
        """Fees are free here."""
        return Balance.from_rao(0)

    async def estimate_weight(self, call: Any, keypair: Any) -> dict:
        """A nominal dispatch weight."""
        return {"ref_time": 0, "proof_size": 0}

    async def account_next_index(self, address: str) -> int:
        """Nonces are not tracked."""
        return 0

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
        """Record the extrinsic, apply it in a new block, and report success."""
        await self._touch(f"submit {call.module}.{call.function}")
        signer = str(keypair.ss58_address)
        self.block += 1
        self.submitted.append(Submitted(call.module, call.function, dict(call.params), signer, self.block))
        problem = self._apply(call.module, call.function, dict(call.params), signer)
        if problem is not None:
            return ExtrinsicResult(success=False, message=problem)
        return ExtrinsicResult(
            success=True,
            message="included",
            block_hash=f"0x{self.block:064x}",
            extrinsic_id=f"{self.block}-1",
        )

    def _apply(self, module: str, function: str, params: dict[str, Any], signer: str) -> str | None:
        if (module, function) == ("SubtensorModule", "set_mechanism_weights"):
            subnet = self.subnet(params["netuid"])
            uid = subnet.uid_of(signer)
            if uid is None:
                return "HotKeyNotRegisteredInSubNet"
            subnet.weights[uid] = list(zip(params["dests"], params["weights"], strict=True))
            subnet.last_update[uid] = self.block
            return None
        if (module, function) == ("SubtensorModule", "commit_timelocked_mechanism_weights"):
            subnet = self.subnet(params["netuid"])
            uid = subnet.uid_of(signer)
            if uid is None:
                return "HotKeyNotRegisteredInSubNet"
            subnet.timelocked_commits.append({"uid": uid, "block": self.block, **params})
            subnet.last_update[uid] = self.block
            return None
        if (module, function) == ("Commitments", "set_commitment"):
            subnet = self.subnet(params["netuid"])
            if subnet.uid_of(signer) is None:
                return "AccountNotAllowedCommit"
            subnet.commitments[signer] = {"block": self.block, "deposit": 0, "info": params["info"]}
            return None
        return None
