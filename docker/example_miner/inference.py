"""The example miner's "model": a constant-answer baseline, plus the audio decoding every miner needs.

Replace ``BaselineModel`` with a real model (speech recognition + language model, or an end-to-end
speech model). Keep ``decode_audio`` / ``encode_audio``: they implement the wire format the validator
uses, a base64-encoded ``.npy`` file holding a 1-D float array.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MIN_SAMPLE_RATE = 8_000
MAX_SAMPLE_RATE = 192_000
MAX_SECONDS = 600  # VoiceBench clips are well under a minute; anything this long is a mistake.
MAX_SAMPLES = 16_000 * MAX_SECONDS
# base64 grows data by 4/3; the .npy header adds at most a few hundred bytes.
MAX_BASE64_CHARS = (MAX_SAMPLES * 8 + 1024) * 4 // 3 + 4
ANSWER_LETTERS = ("A", "B", "C", "D")


class InvalidAudio(ValueError):
    """The request's audio cannot be used; the server answers HTTP 400 with this message."""


@dataclass(frozen=True)
class BaselineModel:
    """Always gives the same multiple-choice answer: the floor any real model must beat."""

    name: str
    answer: str

    def voice_to_text(self, audio: np.ndarray, sample_rate: int) -> str:
        """Answer a spoken question with text. The baseline ignores the audio."""
        return f"The answer is {self.answer}."

    def voice_to_voice(self, audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, str]:
        """Answer with audio and text. The baseline parrots the input back at the same sample rate."""
        reply = np.clip(audio, -1.0, 1.0).astype(np.float32, copy=False)
        return reply, self.voice_to_text(audio, sample_rate)


def load_model(model_dir: Path) -> BaselineModel:
    """Read ``model_dir/config.json`` and build the model. Raises ``ValueError`` on a bad config."""
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    if not isinstance(config, dict):
        raise ValueError("config.json must hold a JSON object")
    answer = str(config.get("answer", "")).strip().upper()
    if answer not in ANSWER_LETTERS:
        raise ValueError(f"config.json 'answer' must be one of {', '.join(ANSWER_LETTERS)}, got {answer!r}")
    return BaselineModel(name=str(config.get("name", "baseline")), answer=answer)


def decode_audio(audio_data: str, sample_rate: int) -> np.ndarray:
    """Turn the request's base64 ``.npy`` payload into a 1-D float32 array, or raise ``InvalidAudio``."""
    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise InvalidAudio(f"sample_rate must be between {MIN_SAMPLE_RATE} and {MAX_SAMPLE_RATE} Hz")
    if len(audio_data) > MAX_BASE64_CHARS:
        raise InvalidAudio("audio_data is too large")
    try:
        raw = base64.b64decode(audio_data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidAudio(f"audio_data is not valid base64: {exc}") from exc
    try:
        # allow_pickle=False: a pickled object array would run the sender's code here.
        array = np.load(io.BytesIO(raw), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InvalidAudio(f"audio_data is not a .npy array: {exc}") from exc
    if not isinstance(array, np.ndarray) or array.dtype.kind != "f":
        raise InvalidAudio("audio must be a floating-point array")
    if array.ndim != 1:
        raise InvalidAudio(f"audio must be 1-D (mono), got shape {array.shape}")
    if array.size == 0:
        raise InvalidAudio("audio is empty")
    if array.size > min(MAX_SAMPLES, sample_rate * MAX_SECONDS):
        raise InvalidAudio(f"audio is longer than {MAX_SECONDS} s")
    if not np.isfinite(array).all():
        raise InvalidAudio("audio contains NaN or infinite samples")
    return array.astype(np.float32, copy=False)


def encode_audio(audio: np.ndarray) -> str:
    """Encode a 1-D float32 array the way the validator expects: base64 of ``np.save`` output."""
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(audio, dtype=np.float32), allow_pickle=False)
    return base64.b64encode(buffer.getvalue()).decode("ascii")
