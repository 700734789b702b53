"""Voice-to-voice measures on a spoken answer: signal check, consistency (WER) and speech quality (MOS).

Everything here except a MOS predictor's model is pure and deterministic, so the rules that decide a
miner's score can be read and unit-tested on their own:

- :func:`check_signal` finds silent (and reports clipped) audio before any model looks at it: Whisper
  is known to "hear" words in silence, so silence must never reach the transcript.
- :func:`word_error_rate` and :func:`consistency_factor`: the penalty for audio that does not say what
  the miner's own text says.
- :class:`MosPredictor` is the port of a speech-quality model; :func:`mean_mos` averages it over every
  sample, a failed or silent one counting as the scale's minimum.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

# The MOS scale (ITU-T P.800 absolute category rating): 1 bad ... 5 excellent.
MOS_MIN = 1.0
MOS_MAX = 5.0

# A 20 ms frame is "active" above -50 dBFS RMS: quiet speech sits around -30 to -20 dBFS, the
# perturbation noise floor we add to questions at -60 to -50 dBFS. A clip needs 0.2 s of active frames
# (a short word) to count as speech at all.
_FRAME_S = 0.02
_ACTIVE_DBFS = -50.0
_MIN_ACTIVE_S = 0.2
# A sample at or beyond this magnitude is clipped (float audio's full scale is 1.0).
_CLIP_LEVEL = 0.999


@dataclass(frozen=True)
class SignalReport:
    """Cheap signal-level facts about a returned clip."""

    duration_s: float
    active_s: float  # seconds of 20 ms frames above -50 dBFS
    peak: float  # largest absolute sample
    clipped_fraction: float  # share of samples at or beyond full scale

    @property
    def silent(self) -> bool:
        """Too little sound to hold a spoken answer."""
        return self.active_s < _MIN_ACTIVE_S


def check_signal(audio: np.ndarray, sample_rate: int) -> SignalReport:
    """Measure ``audio`` (1-D float, full scale 1.0) at ``sample_rate`` Hz.

    Raises ValueError for audio that is not 1-D or a sample rate that is not positive.
    """
    signal = np.asarray(audio, dtype=np.float64)
    if signal.ndim != 1:
        raise ValueError(f"audio must be 1-D, got shape {signal.shape}")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    if signal.size == 0:
        return SignalReport(0.0, 0.0, 0.0, 0.0)
    frame = max(1, round(_FRAME_S * sample_rate))
    usable = signal.size - signal.size % frame
    active_frames = 0
    if usable:
        frames = signal[:usable].reshape(-1, frame)
        rms = np.sqrt(np.mean(frames * frames, axis=1))
        threshold = 10.0 ** (_ACTIVE_DBFS / 20.0)
        active_frames = int(np.count_nonzero(rms > threshold))
    magnitude = np.abs(signal)
    return SignalReport(
        duration_s=signal.size / sample_rate,
        active_s=active_frames * frame / sample_rate,
        peak=float(magnitude.max()),
        clipped_fraction=float(np.count_nonzero(magnitude >= _CLIP_LEVEL)) / signal.size,
    )


_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "`": "'"})
_NOT_WORD = re.compile(r"[^\w']+")


def normalize_words(text: str) -> list[str]:
    """Words for WER: NFKC, lower case, punctuation dropped (apostrophes kept inside words).

    Deliberately small, so that the rule is easy to predict: "The answer is A." and "the answer is a"
    are the same four words; "two" and "2" are not.
    """
    folded = unicodedata.normalize("NFKC", text).translate(_APOSTROPHES).lower()
    words = (word.strip("'_") for word in _NOT_WORD.split(folded))
    return [word for word in words if word]


MAX_WER_WORDS = 600


def word_error_rate(reference: str, hypothesis: str) -> float:
    """(substitutions + deletions + insertions) / reference words, on :func:`normalize_words`.

    An empty reference gives 0.0 when the hypothesis is empty too, else 1.0. The value may exceed 1
    when the hypothesis has many more words than the reference.
    """
    # Bounded: both texts come from the miner (one directly, one through ASR of its audio), and the
    # distance is quadratic. Words past the cap are not compared (an answer is far shorter).
    ref = normalize_words(reference)[:MAX_WER_WORDS]
    hyp = normalize_words(hypothesis)[:MAX_WER_WORDS]
    if not ref:
        return 0.0 if not hyp else 1.0
    # Levenshtein distance over words, one row at a time: O(len(ref) * len(hyp)) time, O(len(hyp)) memory.
    # Words as small integers: comparing ints is cheaper than comparing strings in the inner loop.
    ids: dict[str, int] = {}
    ref_ids = [ids.setdefault(word, len(ids)) for word in ref]
    hyp_ids = [ids.setdefault(word, len(ids)) for word in hyp]
    previous = list(range(len(hyp_ids) + 1))
    for i, ref_word in enumerate(ref_ids, start=1):
        current = [i] + [0] * len(hyp_ids)
        for j, hyp_word in enumerate(hyp_ids, start=1):
            current[j] = min(
                previous[j] + 1,  # deletion
                current[j - 1] + 1,  # insertion
                previous[j - 1] + (ref_word != hyp_word),  # substitution or match
            )
        previous = current
    return previous[-1] / len(ref)


def consistency_factor(wer: float | None, tolerance: float) -> float:
    """What the content score is multiplied by, given the WER between text and transcript.

    ``min(1, max(0, (1 - wer) / (1 - tolerance)))``: a WER up to ``tolerance`` costs nothing (the ASR's
    own errors), above it the factor falls linearly and reaches 0 at WER 1. ``wer`` None (the miner sent
    no text: consistency not applicable) gives 1. Raises ValueError for a tolerance outside [0, 1) or a
    negative or non-finite WER.
    """
    if not 0.0 <= tolerance < 1.0:
        raise ValueError(f"tolerance must be in [0, 1), got {tolerance!r}")
    if wer is None:
        return 1.0
    if not math.isfinite(wer) or wer < 0:
        raise ValueError(f"wer must be a finite number >= 0, got {wer!r}")
    return min(1.0, max(0.0, (1.0 - wer) / (1.0 - tolerance)))


class MosPredictor(Protocol):
    """A speech-quality model: predicts the mean opinion score (1-5) of a clip.

    ``predict`` is blocking (a model runs); callers run it in a thread. ``name`` is recorded with every
    evaluation so scores from different predictors are never compared unknowingly.
    """

    name: str

    def predict(self, audio: np.ndarray, sample_rate: int) -> float:
        """MOS of ``audio`` (1-D float at ``sample_rate`` Hz), in [1, 5]."""
        ...


def clamp_mos(value: float) -> float:
    """A predictor's output pinned to [1, 5]; NaN (a broken model) raises ValueError."""
    if math.isnan(value):
        raise ValueError("MOS predictor returned NaN")
    return min(MOS_MAX, max(MOS_MIN, float(value)))


def mean_mos(per_sample: Sequence[float | None]) -> float:
    """Mean MOS over every sample sent; None (failed request, silent audio) counts as the minimum, 1.

    A miner cannot raise its mean by failing the questions it would say badly. Raises ValueError for an
    empty sequence.
    """
    if not per_sample:
        raise ValueError("no samples")
    return math.fsum(MOS_MIN if value is None else clamp_mos(value) for value in per_sample) / len(per_sample)


def mos_to_percent(mos: float) -> float:
    """MOS 1-5 on the 0-100 scale of the other scores: (MOS - 1) / 4 x 100."""
    return 100.0 * (clamp_mos(mos) - MOS_MIN) / (MOS_MAX - MOS_MIN)
