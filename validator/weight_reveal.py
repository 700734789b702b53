"""Following a commit-reveal weight set to the end: pure rules, no I/O.

Under commit-reveal the chain accepts a timelocked commit and reveals it by itself once the drand pulse
of its reveal round is stored, at the next epoch boundary. "Commit accepted" therefore says nothing
about the weights in force. The weight setter keeps a :class:`PendingReveal` for its last commit and,
each round of its loop, hands :func:`judge_reveal` what the chain shows now: the newest stored drand
round and this validator's weights on chain. The verdict is one of :class:`RevealState`:

- ``pending``: the round is not stored yet, or it is and the weights have not appeared yet, within
  ``grace_blocks`` of the block at which the round was first seen stored;
- ``in_force``: the weights on chain are the committed ones (same uids, each within ``tolerance``);
- ``not_revealed``: the round has been stored for ``grace_blocks`` blocks and the weights on chain are
  still not the committed ones: the reveal did not land.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

WEIGHT_TOLERANCE = 0.01
"""How far a read-back weight (sum 1) may be from the committed one: u16 rounding and the chain's
max-weight clipping move weights by far less than a miner's share."""


class RevealState(StrEnum):
    """Where a committed weight set stands."""

    PENDING = "pending"
    IN_FORCE = "in_force"
    NOT_REVEALED = "not_revealed"


@dataclass(frozen=True)
class PendingReveal:
    """A weight set committed under commit-reveal and not yet seen in force."""

    weights: dict[int, float]
    """What was committed (uid -> weight, summing to 1)."""
    commit_block: int
    reveal_round: int
    round_seen_block: int | None = None
    """The first block at which the chain had stored the reveal round (None until then)."""

    def to_json(self) -> dict[str, Any]:
        """A plain form for the store."""
        return {
            "weights": {str(uid): w for uid, w in sorted(self.weights.items())},
            "commit_block": self.commit_block,
            "reveal_round": self.reveal_round,
            "round_seen_block": self.round_seen_block,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> PendingReveal:
        """The inverse of :meth:`to_json`; ``ValueError``/``TypeError``/``KeyError`` when malformed."""
        seen = raw.get("round_seen_block")
        return cls(
            weights={int(uid): float(w) for uid, w in dict(raw["weights"]).items()},
            commit_block=int(raw["commit_block"]),
            reveal_round=int(raw["reveal_round"]),
            round_seen_block=None if seen is None else int(seen),
        )


def weights_match(
    committed: Mapping[int, float], on_chain: Mapping[int, float], tolerance: float = WEIGHT_TOLERANCE
) -> bool:
    """Whether the weights on chain are the committed ones: same positive uids, each within tolerance."""
    wanted = {uid: w for uid, w in committed.items() if w > 0}
    found = {uid: w for uid, w in on_chain.items() if w > 0}
    if not wanted or set(wanted) != set(found):
        return False
    total = math.fsum(wanted.values())
    return all(abs(wanted[uid] / total - found[uid]) <= tolerance for uid in wanted)


def judge_reveal(
    pending: PendingReveal,
    revealed_round: int | None,
    on_chain: Mapping[int, float] | None,
    block: int,
    grace_blocks: int,
) -> tuple[RevealState, PendingReveal]:
    """The verdict on ``pending`` now, and ``pending`` updated with when its round was first seen.

    ``revealed_round`` is the newest drand round the chain has stored (None: the chain has none);
    ``on_chain`` this validator's weights now (None when not read).
    """
    if revealed_round is None or revealed_round < pending.reveal_round:
        return RevealState.PENDING, pending
    if pending.round_seen_block is None:
        pending = dataclasses.replace(pending, round_seen_block=block)
    if on_chain is not None and weights_match(pending.weights, on_chain):
        return RevealState.IN_FORCE, pending
    assert pending.round_seen_block is not None
    if block - pending.round_seen_block >= grace_blocks:
        return RevealState.NOT_REVEALED, pending
    return RevealState.PENDING, pending
