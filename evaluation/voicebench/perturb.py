"""Seeded anti-lookup perturbations of benchmark audio.

VoiceBench is public, so a miner could answer from a table keyed by a hash of the input audio instead of
listening to it. Before an item is sent, the validator changes the audio in ways a listener (or a speech
recogniser) barely notices but that change every sample: a gain change, a small speed change (by
resampling, so pitch moves by the same few percent), a stretch of leading silence and low-level white
noise over the whole clip, the silence included, so stripping exact zeros does not undo the offset.

Everything is derived from ``(seed, item_id)`` through SHA-256, never Python's salted ``hash()``: the same
validator seed gives byte-identical audio on every run and every machine with the same numpy, while a new
seed (say, per epoch) makes any table built from earlier rounds useless. The speed change resamples
with soxr when it is installed (a core dependency: about 200x faster than the numpy fallback, which
took over a second per 10 s clip), so the same seed gives the same audio for the same soxr version.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from evaluation.voicebench.dataset import resample_audio

if TYPE_CHECKING:
    from evaluation.voicebench.dataset import Item

# Ranges of the drawn parameters. Chosen to keep every word intelligible: +-3 dB is a volume knob
# nudge, +-5% speed is within normal speaking-rate variation, and up to 0.4 s of silence is a normal
# pause before speaking. Noise is -60..-50 dBFS, not the louder -50..-40 first planned: measured with
# espeak-ng speech at about -21 dBFS RMS, Whisper tiny.en lost up to two thirds of a sentence's words
# at -40 dBFS (19 dB SNR) and some at -45, none at -50 or below. Hash defeat needs no audible noise
# (any change flips every sample's bits), so the quieter range costs nothing.
GAIN_DB_RANGE = (-3.0, 3.0)
SPEED_RANGE = (0.95, 1.05)
NOISE_DBFS_RANGE = (-60.0, -50.0)
LEAD_SILENCE_S_RANGE = (0.05, 0.4)
# Domain-separation tags: the parameter draw and the noise draw must not share a random stream, and a
# future change of scheme bumps the version instead of silently changing what old seeds produce.
_PARAMS_TAG = "voicebench-perturb-params-v1"
_NOISE_TAG = "voicebench-perturb-noise-v1"
# Sanity bounds for apply(): wider than the drawn ranges (tests and callers may build their own
# Perturbation) but tight enough that a typo cannot turn a clip into minutes of silence or chipmunks.
_MAX_LEAD_SILENCE_S = 10.0
_SPEED_LIMITS = (0.5, 2.0)


@dataclass(frozen=True)
class Perturbation:
    """One item's perturbation parameters.

    ``gain_db``: level change in dB. ``speed``: playback-rate factor (>1 is faster and shorter).
    ``noise_dbfs``: RMS of the added white noise in dB relative to full scale, where 0 dBFS is an RMS of
    1.0. ``lead_silence_s``: seconds of silence prepended before the (noisy) speech.
    """

    gain_db: float
    speed: float
    noise_dbfs: float
    lead_silence_s: float


def draw_perturbation(seed: int, item_id: str) -> Perturbation:
    """Draw the perturbation for ``item_id`` under validator ``seed``; deterministic, uniform in the ranges.

    The generator is seeded with SHA-256 of a tagged ``(seed, item_id)`` string, so the result does not
    depend on the process, the platform, or the order in which items are drawn.
    """
    rng = np.random.default_rng(_digest_seed(_PARAMS_TAG, str(int(seed)), item_id))
    # The draw order below is part of the scheme: reordering would change every item's parameters.
    return Perturbation(
        gain_db=float(rng.uniform(*GAIN_DB_RANGE)),
        speed=float(rng.uniform(*SPEED_RANGE)),
        noise_dbfs=float(rng.uniform(*NOISE_DBFS_RANGE)),
        lead_silence_s=float(rng.uniform(*LEAD_SILENCE_S_RANGE)),
    )


def apply(audio: np.ndarray, sample_rate: int, p: Perturbation, seed: int) -> np.ndarray:
    """Apply ``p`` to mono ``audio`` at ``sample_rate`` Hz; returns a new float32 array clipped to [-1, 1].

    Steps, in order: speed change by resampling to ``round(sample_rate / speed)`` Hz and reading the
    result at ``sample_rate`` (so the effective factor is ``sample_rate / round(sample_rate / speed)``,
    within 1/sample_rate of ``speed``, and the length becomes ``n * round(sample_rate / speed) /
    sample_rate`` rounded by the resampler, to within one sample); gain;
    ``round(lead_silence_s * sample_rate)`` zeros prepended; white Gaussian noise of RMS
    ``10 ** (noise_dbfs / 20)`` over the whole output; clipping. The noise is drawn from a generator
    seeded by SHA-256 of ``seed`` and ``p``'s exact values, so the same ``(seed, item)`` gives
    byte-identical output and different items under one seed get different noise. Raises ValueError
    for audio that is not 1-D and finite, a bad sample rate, or parameters outside sane bounds.
    """
    signal = np.asarray(audio, dtype=np.float64)
    if signal.ndim != 1:
        raise ValueError(f"audio must be 1-D, got shape {signal.shape}")
    if not np.isfinite(signal).all():
        raise ValueError("audio contains NaN or infinite values")
    if not isinstance(sample_rate, int | np.integer) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer, got {sample_rate!r}")
    _check(p)

    # Speed: resampling to a lower rate and playing at the original rate shortens (speeds up) the clip.
    # Both resamplers band-limit, so speeding up cannot alias; they reject absurd rates themselves.
    stretched_rate = round(int(sample_rate) / p.speed)
    if stretched_rate != sample_rate:
        signal = resample_audio(signal, int(sample_rate), stretched_rate).astype(np.float64)

    signal = signal * 10.0 ** (p.gain_db / 20.0)
    lead = round(p.lead_silence_s * int(sample_rate))
    out = np.concatenate([np.zeros(lead), signal])

    # Noise over everything, the silence too: a lookup cannot recover the original by trimming zeros.
    noise_rng = np.random.default_rng(
        _digest_seed(
            _NOISE_TAG,
            str(int(seed)),
            # float.hex is exact: two perturbations that differ in any bit get different noise.
            *(float(value).hex() for value in (p.gain_db, p.speed, p.noise_dbfs, p.lead_silence_s)),
        )
    )
    out += noise_rng.standard_normal(out.size) * 10.0 ** (p.noise_dbfs / 20.0)
    return np.clip(out, -1.0, 1.0).astype(np.float32)


def perturb_item(item: Item, seed: int) -> np.ndarray:
    """The perturbed audio for a VoiceBench ``item`` under ``seed``: draw, then apply, in one call."""
    return apply(item.audio, item.sample_rate, draw_perturbation(seed, item.item_id), seed)


def _check(p: Perturbation) -> None:
    """Reject parameters no drawn perturbation has and no caller should want; raises ValueError."""
    values = (p.gain_db, p.speed, p.noise_dbfs, p.lead_silence_s)
    if not all(math.isfinite(value) for value in values):
        raise ValueError(f"perturbation parameters must be finite: {p}")
    if not _SPEED_LIMITS[0] <= p.speed <= _SPEED_LIMITS[1]:
        raise ValueError(f"speed must be in [{_SPEED_LIMITS[0]}, {_SPEED_LIMITS[1]}], got {p.speed}")
    if not 0.0 <= p.lead_silence_s <= _MAX_LEAD_SILENCE_S:
        raise ValueError(f"lead_silence_s must be in [0, {_MAX_LEAD_SILENCE_S}], got {p.lead_silence_s}")


def _digest_seed(*parts: str) -> int:
    """A 256-bit integer seed from SHA-256 of ``parts``; length prefixes keep the encoding unambiguous."""
    hasher = hashlib.sha256()
    for part in parts:
        data = part.encode("utf-8")
        hasher.update(len(data).to_bytes(8, "big"))
        hasher.update(data)
    return int.from_bytes(hasher.digest(), "big")
