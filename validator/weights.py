"""Scores to weights: pure policy, no I/O.

For now a plain proportional normalisation over the miners that have a score; the chain issue replaces
it with the subnet's final policy. Whatever the policy, incomplete or degenerate input never produces a
weight vector: the caller then leaves the chain untouched instead of writing zeros.
"""

from __future__ import annotations

import math
from collections.abc import Mapping


class WeightsNotReady(ValueError):
    """There is nothing sound to put on chain yet; the reason says why."""


def weights_from_scores(scores: Mapping[int, float], registered_uids: set[int]) -> dict[int, float]:
    """Normalise the non-negative scores of registered uids to weights summing to 1.

    Scores of uids no longer registered are dropped; NaN and negative scores count as 0. Raises
    ``WeightsNotReady`` when no registered uid has a positive score.
    """
    clean = {
        uid: (score if math.isfinite(score) and score > 0 else 0.0)
        for uid, score in scores.items()
        if uid in registered_uids
    }
    total = sum(clean.values())
    if total <= 0:
        raise WeightsNotReady(
            f"no positive score among {len(clean)} scored of {len(registered_uids)} registered uids"
        )
    return {uid: score / total for uid, score in sorted(clean.items()) if score > 0}
