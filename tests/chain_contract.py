"""Checks every :class:`~validator.chain.port.Chain` adapter must pass.

Not collected by itself: a test module prepares an adapter (the local chain, or the bittensor client over
a fake substrate), describes what it put on chain in a :class:`ContractSetup`, and awaits
:func:`run_chain_contract` (or single checks). Assertions carry their own messages because pytest does
not rewrite asserts in helper modules.

The contract beyond the port's signatures:
- block numbers are non-negative ints that never go backwards;
- neurons have unique uids and hotkeys and were registered at or before the current block;
- commitments: one per hotkey, ``value`` is ``str``, made at or before the current block;
- ``set_weights`` refusals (empty or all-zero vector, rate limit) come back as ``success=False`` with a
  message, never as an exception, because the weight setter retries on the result;
- ``hyperparameters`` are non-negative ints and a bool; ``current_weights`` reads back what was set (sum 1,
  within u16 rounding) and ``last_weights_block`` is the block of that set;
- a hotkey that is not registered gets ``success=False`` with "not registered" in the message;
- ``commit_own`` writes the adapter's own hotkey's commitment, read back by ``commitments`` at its block;
- ``own_hotkey`` is the signing hotkey; ``runtime_info`` names no missing storage on a healthy chain;
  ``revealed_round`` is None or a non-negative int; ``deadline_s`` is a positive bound on one call;
- ``close`` may be awaited twice.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from validator.chain.port import Chain, Hyperparameters, Neuron, RawCommitment, RuntimeInfo, WeightSetResult

U16_TOLERANCE = 2 / 65535
"""Weights travel as u16 on the real chain, so a read-back may differ by rounding."""


@dataclass(frozen=True)
class ContractSetup:
    """What the adapter's fixture put on chain before the checks run."""

    netuid: int
    registered: frozenset[str]
    """Every hotkey registered on ``netuid``, the validator's own included."""
    committed: Mapping[str, str] = field(default_factory=dict)
    """hotkey -> the value it committed last (deregistered hotkeys may appear here too)."""
    weights: Mapping[int, float] = field(default_factory=dict)
    """A weight vector the chain should accept now (uids registered, validator allowed to set)."""
    version_key: int = 1
    own_hotkey: str = ""
    """The adapter's own (validator) hotkey; enables the ``commit_own`` check when set."""
    hyperparameters: Hyperparameters | None = None
    """What ``hyperparameters(netuid)`` must return exactly, when known."""


async def check_block(chain: Chain) -> int:
    """The block is a non-negative int that does not go backwards between two reads."""
    first = await chain.block()
    second = await chain.block()
    assert isinstance(first, int) and not isinstance(first, bool), f"block() returned {first!r}"
    assert first >= 0, f"negative block {first}"
    assert second >= first, f"block went backwards: {first} then {second}"
    return second


async def check_block_hash(chain: Chain) -> None:
    """A block's hash is a hex string, stable across reads, and differs between blocks."""
    block = await chain.block()
    first, again = await chain.block_hash(block), await chain.block_hash(block)
    assert isinstance(first, str) and first.startswith("0x") and int(first, 16) >= 0, first
    assert first == again, "the same block gave two hashes"
    if block > 0:
        assert await chain.block_hash(block - 1) != first, "two blocks share a hash"


async def check_neurons(chain: Chain, setup: ContractSetup) -> list[Neuron]:
    """Neurons are :class:`Neuron` values, unique by uid and hotkey, matching the setup."""
    neurons = await chain.neurons(setup.netuid)
    block = await chain.block()
    assert isinstance(neurons, list), f"neurons() returned {type(neurons).__name__}, not list"
    for neuron in neurons:
        assert isinstance(neuron, Neuron), f"not a Neuron: {neuron!r}"
        assert isinstance(neuron.uid, int) and neuron.uid >= 0, f"bad uid in {neuron!r}"
        assert isinstance(neuron.hotkey, str) and neuron.hotkey, f"bad hotkey in {neuron!r}"
        assert 0 <= neuron.registered_block <= block, f"registered_block outside 0..{block}: {neuron!r}"
        assert isinstance(neuron.validator_permit, bool), f"validator_permit is not bool: {neuron!r}"
        assert isinstance(neuron.stake, float) and neuron.stake >= 0, f"bad stake in {neuron!r}"
    uids = [n.uid for n in neurons]
    hotkeys = [n.hotkey for n in neurons]
    assert len(set(uids)) == len(uids), f"duplicate uids: {sorted(uids)}"
    assert len(set(hotkeys)) == len(hotkeys), f"duplicate hotkeys: {sorted(hotkeys)}"
    assert set(hotkeys) == set(setup.registered), (
        f"registered hotkeys {sorted(hotkeys)} != expected {sorted(setup.registered)}"
    )
    return neurons


async def check_commitments(chain: Chain, setup: ContractSetup) -> list[RawCommitment]:
    """Commitments are :class:`RawCommitment` values, one per hotkey, holding what was committed."""
    commitments = await chain.commitments(setup.netuid)
    block = await chain.block()
    assert isinstance(commitments, list), f"commitments() returned {type(commitments).__name__}, not list"
    for commitment in commitments:
        assert isinstance(commitment, RawCommitment), f"not a RawCommitment: {commitment!r}"
        assert isinstance(commitment.value, str), f"value is not str: {commitment!r}"
        assert 0 <= commitment.block <= block, f"commitment block outside 0..{block}: {commitment!r}"
    hotkeys = [c.hotkey for c in commitments]
    assert len(set(hotkeys)) == len(hotkeys), f"more than one commitment per hotkey: {sorted(hotkeys)}"
    found = {c.hotkey: c.value for c in commitments}
    for hotkey, value in setup.committed.items():
        assert found.get(hotkey) == value, f"commitment of {hotkey}: {found.get(hotkey)!r} != {value!r}"
    return commitments


async def check_hyperparameters(chain: Chain, setup: ContractSetup) -> Hyperparameters:
    """Hyperparameters have the right types and, when the setup knows them, the right values."""
    hp = await chain.hyperparameters(setup.netuid)
    assert isinstance(hp, Hyperparameters), f"hyperparameters() returned {hp!r}"
    for name in ("tempo", "weights_rate_limit", "version_key"):
        value = getattr(hp, name)
        assert isinstance(value, int) and not isinstance(value, bool) and value >= 0, f"bad {name} in {hp!r}"
    assert isinstance(hp.commit_reveal, bool), f"commit_reveal is not bool: {hp!r}"
    if setup.hyperparameters is not None:
        assert hp == setup.hyperparameters, f"hyperparameters {hp!r} != expected {setup.hyperparameters!r}"
    return hp


async def check_set_weights_refusals(chain: Chain, setup: ContractSetup) -> None:
    """Empty and all-zero vectors are refused with a message, not raised."""
    some_uid = next(iter(setup.weights), 0)
    for weights in ({}, {some_uid: 0.0}):
        result = await chain.set_weights(setup.netuid, weights, setup.version_key)
        assert isinstance(result, WeightSetResult), f"set_weights returned {result!r}"
        assert result.success is False, f"set_weights({weights}) should be refused, got {result!r}"
        assert result.message, f"refusal of {weights} carries no message"


async def check_set_weights_accepted(chain: Chain, setup: ContractSetup) -> WeightSetResult:
    """A valid vector is accepted, at or after the block seen before the call."""
    assert setup.weights, "the setup must provide a valid weight vector"
    before = await chain.block()
    result = await chain.set_weights(setup.netuid, dict(setup.weights), setup.version_key)
    assert isinstance(result, WeightSetResult), f"set_weights returned {result!r}"
    assert result.success is True, f"valid weights refused: {result!r}"
    assert result.block >= before, f"weights set at block {result.block}, before block {before}"
    await check_weights_read_back(chain, setup, result.block)
    return result


async def check_weights_read_back(chain: Chain, setup: ContractSetup, block: int) -> None:
    """The weights on chain are the setup's vector normalised to 1, set at ``block``."""
    on_chain = await chain.current_weights(setup.netuid)
    total = math.fsum(w for w in setup.weights.values() if w > 0)
    expected = {uid: w / total for uid, w in setup.weights.items() if w > 0}
    assert set(on_chain) == set(expected), f"weights on chain {on_chain} != expected {expected}"
    assert math.isclose(math.fsum(on_chain.values()), 1.0, abs_tol=1e-9), (
        f"weights do not sum to 1: {on_chain}"
    )
    for uid, weight in expected.items():
        assert abs(on_chain[uid] - weight) <= U16_TOLERANCE, f"uid {uid}: {on_chain[uid]} != {weight}"
    last = await chain.last_weights_block(setup.netuid)
    assert last == block, f"last_weights_block {last} != block of the set {block}"


async def check_set_weights_not_registered(chain: Chain, setup: ContractSetup) -> WeightSetResult:
    """``chain`` signs with a hotkey that is not registered: refused with a message, not raised."""
    assert setup.weights, "the setup must provide a weight vector"
    result = await chain.set_weights(setup.netuid, dict(setup.weights), setup.version_key)
    assert isinstance(result, WeightSetResult), f"set_weights returned {result!r}"
    assert result.success is False, f"an unregistered hotkey set weights: {result!r}"
    assert "not registered" in result.message, f"refusal does not say 'not registered': {result!r}"
    assert await chain.current_weights(setup.netuid) == {}, "an unregistered hotkey has weights"
    assert await chain.last_weights_block(setup.netuid) is None, "an unregistered hotkey has a LastUpdate"
    return result


async def check_commit_own(chain: Chain, setup: ContractSetup, value: str = "contract:check:0:v2") -> int:
    """``commit_own`` lands in a block at or after the current one and reads back under the own hotkey."""
    assert setup.own_hotkey, "the setup must name the adapter's own hotkey"
    before = await chain.block()
    block = await chain.commit_own(setup.netuid, value)
    assert isinstance(block, int) and block >= before, f"commit landed at block {block!r}, before {before}"
    found = {c.hotkey: c for c in await chain.commitments(setup.netuid)}
    mine = found.get(setup.own_hotkey)
    assert mine is not None, f"own commitment not read back; hotkeys with one: {sorted(found)}"
    assert (mine.value, mine.block) == (value, block), f"read back {mine!r}, expected {value!r} at {block}"
    return block


async def check_set_weights_rate_limited(chain: Chain, setup: ContractSetup) -> WeightSetResult:
    """Two sets in a row under a rate limit: the second is refused with a message naming the limit.

    Only for adapters prepared with a weights rate limit of more than one block.
    """
    await check_set_weights_accepted(chain, setup)
    result = await chain.set_weights(setup.netuid, dict(setup.weights), setup.version_key)
    assert result.success is False, f"second set inside the rate limit was accepted: {result!r}"
    assert "rate limit" in result.message.lower(), f"refusal does not mention the rate limit: {result!r}"
    return result


async def check_identity_and_runtime(chain: Chain, setup: ContractSetup) -> None:
    """The adapter names its hotkey, its runtime, its drand progress and its own deadline."""
    if setup.own_hotkey:
        hotkey = await chain.own_hotkey()
        assert hotkey == setup.own_hotkey, f"own_hotkey {hotkey!r} != {setup.own_hotkey!r}"
    info = await chain.runtime_info(setup.netuid)
    assert isinstance(info, RuntimeInfo) and info.name, f"runtime_info returned {info!r}"
    assert info.missing_storage == (), f"a healthy chain lacks storage: {info.missing_storage}"
    revealed = await chain.revealed_round()
    assert revealed is None or (isinstance(revealed, int) and revealed >= 0), f"revealed_round {revealed!r}"
    deadline = chain.deadline_s
    assert isinstance(deadline, float) and 0 < deadline < 600, f"deadline_s {deadline!r}"


async def check_close(chain: Chain) -> None:
    """``close`` works and may be repeated (shutdown paths call it more than once)."""
    await chain.close()
    await chain.close()


async def run_chain_contract(chain: Chain, setup: ContractSetup) -> None:
    """Every check in order, ending with ``close``."""
    await check_block(chain)
    await check_block_hash(chain)
    await check_neurons(chain, setup)
    await check_commitments(chain, setup)
    await check_hyperparameters(chain, setup)
    await check_identity_and_runtime(chain, setup)
    await check_set_weights_refusals(chain, setup)
    await check_set_weights_accepted(chain, setup)
    if setup.own_hotkey:
        await check_commit_own(chain, setup)
    await check_block(chain)
    await check_close(chain)
