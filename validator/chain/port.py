"""The chain port: the validator's whole view of the blockchain.

One real adapter (bittensor 11) and one local file-backed chain implement it. Every method has a
deadline at the call site (see ``validator.chain.facade``), so an adapter may block on I/O freely.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Neuron:
    """A registered hotkey on the subnet."""

    uid: int
    hotkey: str
    registered_block: int  # block of the current registration; older commitments are ignored


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

    async def set_weights(self, netuid: int, weights: dict[int, float], version_key: int) -> WeightSetResult:
        """Set this validator's weights (uid -> non-negative weight); the adapter normalises."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...
