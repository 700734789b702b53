"""The chain port: the validator's whole view of the blockchain.

One real adapter (bittensor 11) and one local file-backed chain implement it. Every method has a
deadline at the call site (see ``validator.chain.facade``), so an adapter may block on I/O freely.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol


class ChainError(RuntimeError):
    """Base of every error a chain adapter raises on purpose (refusals, lost connections, bad wallets)."""


@dataclass(frozen=True)
class Neuron:
    """A registered hotkey on the subnet."""

    uid: int
    hotkey: str
    registered_block: int  # block of the current registration; older commitments are ignored
    validator_permit: bool = False
    stake: float = 0.0
    """Stake weight in whole tokens: the metagraph's total stake (alpha units on dynamic subnets, where
    the SDK refuses to call it TAO). Only compared between neurons of one subnet."""


@dataclass(frozen=True)
class RawCommitment:
    """A commitment string exactly as read from chain, before any parsing."""

    hotkey: str
    value: str
    block: int


@dataclass(frozen=True)
class WeightSetResult:
    """The chain's answer to a weight set."""

    success: bool
    message: str
    block: int


@dataclass(frozen=True)
class Hyperparameters:
    """The subnet settings the weight setter needs."""

    tempo: int
    """Blocks per epoch."""
    weights_rate_limit: int
    """Minimum blocks between two weight sets by one validator."""
    commit_reveal: bool
    """Whether weights go through (timelocked) commit-reveal on this subnet."""
    version_key: int
    """The subnet's minimum weights version key; a lower ``version_key`` is refused by the chain."""


class Chain(Protocol):
    """Reads the subnet's state and writes this validator's weights."""

    async def block(self) -> int:
        """Current block number."""
        ...

    async def neurons(self, netuid: int) -> list[Neuron]:
        """Every registered neuron of ``netuid``."""
        ...

    async def commitments(self, netuid: int) -> list[RawCommitment]:
        """The latest commitment of every hotkey that has one on ``netuid``."""
        ...

    async def hyperparameters(self, netuid: int) -> Hyperparameters:
        """Tempo, weights rate limit, commit-reveal flag and minimum version key of ``netuid``."""
        ...

    async def current_weights(self, netuid: int) -> dict[int, float]:
        """This validator's weights now on chain (uid -> weight, summing to 1); ``{}`` if none."""
        ...

    async def last_weights_block(self, netuid: int) -> int | None:
        """Block of this validator's last weight set (subtensor's ``LastUpdate``); ``None`` if never."""
        ...

    async def block_hash(self, block: int) -> str:
        """Hash of ``block`` (hex): unknown before the block exists, the same for every reader after."""
        ...

    async def set_weights(self, netuid: int, weights: dict[int, float], version_key: int) -> WeightSetResult:
        """Set this validator's weights (uid -> non-negative weight); the adapter normalises."""
        ...

    async def commit_own(self, netuid: int, value: str) -> int:
        """Write ``value`` as the commitment of this adapter's own hotkey; returns the block.

        Used by the miner-side command. Raises an adapter error with a clear message when refused.
        """
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


def weights_problem(weights: Mapping[int, float]) -> str | None:
    """What is wrong with a weight vector itself, checked by every adapter before touching the chain.

    Returns None for a usable vector: uids in u16 range, finite non-negative weights, not all zero.
    """
    if not weights:
        return "no weights given: refusing to set an empty weight vector"
    for uid, weight in weights.items():
        # numbers.* rather than int/float so numpy scalars from the weight maths are accepted.
        if isinstance(uid, bool) or not isinstance(uid, numbers.Integral) or not 0 <= uid <= 65535:
            return f"invalid uid {uid!r}"
        if isinstance(weight, bool) or not isinstance(weight, numbers.Real) or not math.isfinite(weight):
            return f"weight for uid {uid} is not a finite number: {weight!r}"
        if weight < 0:
            return f"weight for uid {uid} is negative: {weight!r}"
    if all(w == 0 for w in weights.values()):
        return "all weights are zero: refusing to set a zero weight vector"
    return None
