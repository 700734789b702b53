"""VoiceBench score aggregation (pure functions).

VoiceBench's overall number is the mean of its 9 leaderboard columns (AlpacaEval, CommonEval, WildVoice,
SD-QA, MMSU, OpenBookQA, BBH, IFEval, AdvBench) with the three 1-5 judge columns multiplied by 20. Every
item score here is in [0, 1] and a 1-5 judge score enters as score / 5, so a subset's 0-100 score
(mean x 100) is exactly VoiceBench's column (mean x 20 for the judge columns), and the overall score is
the plain mean of the columns evaluated. A failed request scores 0, below any answer's; the success
rate is reported beside the score so a crashing miner is told apart from a wrong one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence


def subset_score(scores: Sequence[float]) -> float:
    """Mean of per-item scores (each in [0, 1]) on a 0-100 scale.

    Failed items must be passed in as 0, not left out. Raises ValueError for an empty sequence or a
    score that is not a finite number in [0, 1].
    """
    if not scores:
        raise ValueError("no item scores")
    for value in scores:
        if not math.isfinite(value) or not 0.0 <= value <= 1.0:
            raise ValueError(f"item score {value!r} is outside [0, 1]")
    return 100.0 * math.fsum(scores) / len(scores)


def overall_score(subset_scores: Mapping[str, float]) -> float:
    """Mean of the subsets' 0-100 scores, each subset weighing the same.

    Raises ValueError for an empty mapping or a subset score outside [0, 100].
    """
    if not subset_scores:
        raise ValueError("no subset scores")
    for name, value in subset_scores.items():
        if not math.isfinite(value) or not 0.0 <= value <= 100.0:
            raise ValueError(f"subset {name!r} score {value!r} is outside [0, 100]")
    return math.fsum(subset_scores.values()) / len(subset_scores)


def success_rate(samples: int, failures: int) -> float:
    """Share of requests that got an answer, 0-1 (1 when nothing was sent)."""
    if samples < 0 or not 0 <= failures <= max(samples, 0):
        raise ValueError(f"bad counts: {failures} failures of {samples} samples")
    return 1.0 if samples == 0 else (samples - failures) / samples
