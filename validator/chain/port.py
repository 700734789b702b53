"""The chain port: the validator's whole view of the blockchain.

One real adapter (bittensor 11) and one local file-backed chain implement it. Every method has a
deadline at the call site (see ``validator.chain.facade``), so an adapter may block on I/O freely.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol


class ChainError(RuntimeError):
    """Base of every error a chain adapter raises on purpose (refusals, lost connections, bad wallets)."""


class RuntimeMismatchError(ChainError):
    """The chain's runtime lacks storage the adapter's SDK reads: no retry helps, the operator must act."""


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


class Refusal(StrEnum):
    """Why a weight set did not land, as far as the weight setter's next step goes.

    Adapters classify the chain's (or the SDK's) error by its code, never by its wording; the weight
    setter gives each kind its own remedy.
    """

    RATE_LIMITED = "rate_limited"
    """Too soon after the last set: wait for the rate limit; nothing to retry now."""
    NOT_REGISTERED = "not_registered"
    """The hotkey is not registered on the subnet: nothing lands until the operator registers it."""
    NO_PERMIT = "no_permit"
    """The hotkey holds no validator permit: the chain refuses non-self weights."""
    STAKE = "stake"
    """The hotkey has less stake than the subnet requires to set weights."""
    VERSION_KEY = "version_key"
    """The weights version key is older than the subnet's minimum."""
    RUNTIME = "runtime"
    """The chain's runtime lacks storage the SDK reads to set weights: this SDK cannot set weights there."""
    INVALID = "invalid"
    """The vector itself is refused (empty, zero, too few uids): the same vector would fail again."""
    CONNECTION = "connection"
    """The connection failed mid-call: rebuild the client and retry."""
    TRANSIENT = "transient"
    """Anything else (a full pool, a timeout, an unknown error): retry with backoff."""


BLOCKING_REFUSALS = frozenset(
    {Refusal.NOT_REGISTERED, Refusal.NO_PERMIT, Refusal.STAKE, Refusal.VERSION_KEY, Refusal.RUNTIME}
)
"""Refusals no retry can cure: they need the operator (or the subnet) to change something."""


@dataclass(frozen=True)
class WeightSetResult:
    """The chain's answer to a weight set."""

    success: bool
    message: str
    block: int
    refusal: Refusal | None = None
    """Why it failed (None on success; a failure without one counts as transient)."""
    reveal_round: int | None = None
    """Under commit-reveal: the drand round at which the chain reveals the committed weights."""

    @property
    def kind(self) -> Refusal | None:
        """The refusal, transient when a failure did not say (None on success)."""
        if self.success:
            return None
        return self.refusal or Refusal.TRANSIENT


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
    min_stake: float = 0.0
    """Least stake (whole tokens) a hotkey needs to set weights (subtensor's ``StakeThreshold``)."""


@dataclass(frozen=True)
class RuntimeInfo:
    """What the chain runs, as far as setting weights is concerned."""

    name: str
    """The backend, e.g. ``bittensor finney`` or ``local file chain``."""
    spec_version: int | None
    """The runtime's spec version (None where there is no runtime)."""
    missing_storage: tuple[str, ...] = ()
    """``Pallet.Item`` names the SDK reads to set weights that this runtime does not have."""


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

    async def own_hotkey(self) -> str:
        """The hotkey this adapter signs with (SS58 on a real chain)."""
        ...

    async def revealed_round(self) -> int | None:
        """The newest drand round the chain has stored; commit-reveal weights up to it are revealed.

        ``None`` where the chain has no drand (no commit-reveal).
        """
        ...

    async def runtime_info(self, netuid: int) -> RuntimeInfo:
        """The runtime's version, and the storage items the weight path needs that it lacks."""
        ...

    @property
    def deadline_s(self) -> float:
        """The longest one call of this adapter can take, dropping a hung connection included.

        The facade's deadline must be longer, or it cancels the adapter before the adapter can drop
        and rebuild its connection.
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
