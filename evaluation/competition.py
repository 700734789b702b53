"""What a competition measures and how its parts make one score (pure).

A miner's commitment names a competition id; the validator maps each id to a :class:`CompetitionSpec`:

- ``task`` ``v2t``: the miner's ``/api/v1/v2t`` text is scored by the VoiceBench evaluators.
- ``task`` ``v2v``: the miner's spoken answer (``/api/v1/inference``) is transcribed, the transcript
  scored by the same evaluators, each item's score multiplied by the consistency factor (see
  :func:`evaluation.speech.consistency_factor`); speech quality (MOS) is measured when a predictor is
  configured.

The final score is :func:`combined_score`: the weighted mean of the VoiceBench score and the MOS score
(both 0-100), weights normalised to sum to 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Task = Literal["v2t", "v2v"]


@dataclass(frozen=True)
class CompetitionSpec:
    """How one competition is evaluated: the task and the weights of its score's parts."""

    task: Task = "v2t"
    voicebench_weight: float = 1.0
    mos_weight: float = 0.0

    def __post_init__(self) -> None:
        if self.task not in ("v2t", "v2v"):
            raise ValueError(f"task must be 'v2t' or 'v2v', got {self.task!r}")
        for name in ("voicebench_weight", "mos_weight"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.voicebench_weight + self.mos_weight <= 0:
            raise ValueError("at least one weight must be positive")
        if self.task == "v2t" and self.mos_weight > 0:
            raise ValueError("a v2t competition has no audio answers, so no MOS: set mos_weight to 0")

    @property
    def needs_mos(self) -> bool:
        """Whether the score uses speech quality (so a MOS predictor must be configured)."""
        return self.mos_weight > 0


DEFAULT_SPEC = CompetitionSpec()


def combined_score(spec: CompetitionSpec, voicebench: float, mos_percent: float | None) -> float:
    """The competition score, 0-100: ``(w_vb * voicebench + w_mos * mos_percent) / (w_vb + w_mos)``.

    ``voicebench`` is the mean of the subset scores (0-100); ``mos_percent`` the mean MOS on 0-100
    (:func:`evaluation.speech.mos_to_percent`), None when not measured. Raises ValueError when the spec
    weighs MOS and none was measured (a configuration error, caught at start), or a part is outside
    [0, 100].
    """
    parts = {"voicebench": voicebench, "mos": mos_percent}
    for name, value in parts.items():
        if value is not None and (not math.isfinite(value) or not 0.0 <= value <= 100.0):
            raise ValueError(f"{name} score {value!r} is outside [0, 100]")
    if spec.mos_weight > 0 and mos_percent is None:
        raise ValueError("the competition weighs MOS but no MOS was measured")
    total = spec.voicebench_weight + spec.mos_weight
    weighted = spec.voicebench_weight * voicebench
    if spec.mos_weight > 0 and mos_percent is not None:
        weighted += spec.mos_weight * mos_percent
    return weighted / total
