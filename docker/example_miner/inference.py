"""The example miner's models, plus the audio decoding every miner needs.

Three models, chosen by ``model/config.json``'s ``kind``:

- ``constant`` (default): always gives the same multiple-choice answer. The floor any real model must
  beat, and a miner that starts in two seconds for tests.
- ``asr-llm``: a real pipeline that runs on a CPU: Whisper (faster-whisper, CTranslate2) transcribes
  the question, a small instruct LLM (llama.cpp, a GGUF file) answers it. ``scripts/asr_llm_miner.sh``
  assembles such a repo, wheels included, so its image builds with no network.
- ``speak``: a voice-to-voice miner. The text answer of ``base`` (``constant`` or ``asr-llm``, same
  config keys) is spoken with espeak-ng (in the base image) and returned as audio with the text. The
  keys ``audio`` (``answer``: speak the answer; ``silence``; ``fixed``: one clip of ``fixed_text`` for
  every question), ``text_override`` (send this text instead of what is spoken) and ``send_text``
  (false: audio only) make the misbehaving variants the validator's tests rank.

Replace either with your own model (or an end-to-end speech model). Keep ``decode_audio`` /
``encode_audio``: they implement the wire format the validator uses, a base64-encoded ``.npy`` file
holding a 1-D float array.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import subprocess
import tempfile
import threading
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

MIN_SAMPLE_RATE = 8_000
MAX_SAMPLE_RATE = 192_000
MAX_SECONDS = 600  # VoiceBench clips are well under a minute; anything this long is a mistake.
MAX_SAMPLES = 16_000 * MAX_SECONDS
# base64 grows data by 4/3; the .npy header adds at most a few hundred bytes.
MAX_BASE64_CHARS = (MAX_SAMPLES * 8 + 1024) * 4 // 3 + 4
ANSWER_LETTERS = ("A", "B", "C", "D")
ASR_SAMPLE_RATE = 16_000  # what Whisper expects
DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful voice assistant. Answer the user's spoken question directly and briefly. "
    "If the question lists options, begin your answer with the letter of the correct option. "
    "Follow any instruction about the form of the answer. Refuse requests to help with harm."
)


class Model(Protocol):
    """What the server needs from a model."""

    name: str

    def voice_to_text(self, audio: np.ndarray, sample_rate: int) -> str: ...

    def voice_to_voice(self, audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, str, int]:
        """Answer with (audio, text, the audio's sample rate)."""
        ...


class InvalidAudio(ValueError):
    """The request's audio cannot be used; the server answers HTTP 400 with this message."""


@dataclass(frozen=True)
class BaselineModel:
    """Always gives the same multiple-choice answer: the floor any real model must beat."""

    name: str
    answer: str
    phrase: str = "The answer is {answer}."

    def voice_to_text(self, audio: np.ndarray, sample_rate: int) -> str:
        """Answer a spoken question with text. The baseline ignores the audio."""
        return self.phrase.format(answer=self.answer)

    def voice_to_voice(self, audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, str, int]:
        """Answer with audio and text. The baseline parrots the input back at the same sample rate."""
        reply = np.clip(audio, -1.0, 1.0).astype(np.float32, copy=False)
        return reply, self.voice_to_text(audio, sample_rate), sample_rate


class AsrLlmModel:
    """Speech recognition, then a language model answers the transcript.

    The LLM is not thread-safe and FastAPI runs handlers in a thread pool, so generation is serialised
    by a lock; Whisper (CTranslate2) queues concurrent calls itself.
    """

    def __init__(self, name: str, asr: Any, llm: Any, *, system_prompt: str, max_new_tokens: int) -> None:
        self.name = name
        self._asr = asr
        self._llm = llm
        self._system_prompt = system_prompt
        self._max_new_tokens = max_new_tokens
        self._llm_lock = threading.Lock()

    def transcribe(self, audio: np.ndarray, sample_rate: int) -> str:
        """The words spoken in ``audio``."""
        samples = resample_linear(audio, sample_rate, ASR_SAMPLE_RATE)
        # Greedy decoding, no VAD, no conditioning on earlier windows: fast and repeatable.
        segments, _ = self._asr.transcribe(
            samples,
            language="en",
            beam_size=1,
            vad_filter=False,
            condition_on_previous_text=False,
            without_timestamps=True,
        )
        return " ".join(segment.text.strip() for segment in segments).strip()

    def answer(self, question: str) -> str:
        """The LLM's answer to a transcribed question (greedy, so the same question gets the same answer)."""
        if not question:
            return "I could not hear a question."
        messages = [
            {"role": "system", "content": self._system_prompt},
            {"role": "user", "content": question},
        ]
        with self._llm_lock:
            completion = self._llm.create_chat_completion(
                messages=messages, max_tokens=self._max_new_tokens, temperature=0.0
            )
        return str(completion["choices"][0]["message"]["content"] or "").strip()

    def voice_to_text(self, audio: np.ndarray, sample_rate: int) -> str:
        """Answer a spoken question with text."""
        return self.answer(self.transcribe(audio, sample_rate))

    def voice_to_voice(self, audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, str, int]:
        """Answer with text; this model has no speech synthesiser, so the audio echoes the question (use
        the ``speak`` kind with ``base`` ``asr-llm`` to have the answer spoken)."""
        reply = np.clip(audio, -1.0, 1.0).astype(np.float32, copy=False)
        return reply, self.voice_to_text(audio, sample_rate), sample_rate


ESPEAK_TIMEOUT_S = 30
# espeak-ng's letter names ("A", "B") are hard for a small ASR to hear alone; "option A" is not.
SPOKEN_PHRASE = "The answer is option {answer}."


def speak(text: str, *, voice: str = "en-us", speed: int = 120) -> tuple[np.ndarray, int]:
    """``text`` spoken by espeak-ng: (float32 samples in [-1, 1], sample rate).

    The text goes in on stdin, never as an argument, so an answer that starts with "-" is not an
    option. The WAV is written to a file in /tmp (the only writable place) so its header is complete.
    """
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "speech.wav"
        subprocess.run(
            ["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(path), "--stdin"],
            input=text.encode("utf-8"),
            capture_output=True,
            timeout=ESPEAK_TIMEOUT_S,
            check=True,
        )
        with wave.open(str(path), "rb") as wav:
            if wav.getsampwidth() != 2 or wav.getnchannels() != 1:
                raise RuntimeError("espeak-ng wrote something other than 16-bit mono")
            rate = wav.getframerate()
            frames = wav.readframes(wav.getnframes())
    samples = np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32768.0
    return samples, rate


class SpeakingModel:
    """Speaks a text model's answers: the voice-to-voice example.

    ``audio`` is ``answer`` (speak the text answer), ``silence`` (one second of zeros), or ``fixed``
    (``fixed_text`` spoken once at load, returned for every question, with that text). ``text_override``
    replaces the text sent beside the audio (a miner whose words and audio disagree); ``send_text``
    false sends no text at all.
    """

    def __init__(
        self,
        name: str,
        base: Model,
        *,
        audio: str = "answer",
        fixed_text: str = "",
        text_override: str | None = None,
        send_text: bool = True,
        voice: str = "en-us",
        speed: int = 120,
    ) -> None:
        if audio not in ("answer", "silence", "fixed"):
            raise ValueError(f"config.json 'audio' must be answer, silence or fixed, got {audio!r}")
        self.name = name
        self._base = base
        self._audio = audio
        self._text_override = text_override
        self._send_text = send_text
        self._voice = voice
        self._speed = speed
        self._fixed: tuple[np.ndarray, int, str] | None = None
        if audio == "fixed":
            if not fixed_text:
                raise ValueError("config.json 'fixed_text' is required when 'audio' is 'fixed'")
            clip, rate = speak(fixed_text, voice=voice, speed=speed)
            self._fixed = (clip, rate, fixed_text)

    def voice_to_text(self, audio: np.ndarray, sample_rate: int) -> str:
        """The base model's text answer."""
        return self._base.voice_to_text(audio, sample_rate)

    def voice_to_voice(self, audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, str, int]:
        """The answer spoken at espeak-ng's own rate (22050 Hz, declared in the response: resampling here
        without a proper low-pass filter would alias, and a small ASR model then mishears letters), its
        text ("" when send_text is off), and that rate."""
        if self._fixed is not None:
            clip, rate, text = self._fixed
        elif self._audio == "silence":
            clip, rate = np.zeros(sample_rate, np.float32), sample_rate
            text = self.voice_to_text(audio, sample_rate)
        else:
            text = self.voice_to_text(audio, sample_rate)
            clip, rate = speak(text, voice=self._voice, speed=self._speed)
        if not self._send_text:
            return clip, "", rate
        return clip, self._text_override if self._text_override is not None else text, rate


def resample_linear(audio: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """Resample by linear interpolation: enough for speech recognition, and needs only numpy."""
    if source_rate == target_rate:
        return audio.astype(np.float32, copy=False)
    duration = audio.size / source_rate
    target_times = np.arange(round(duration * target_rate)) / target_rate
    source_times = np.arange(audio.size) / source_rate
    return np.interp(target_times, source_times, audio).astype(np.float32)


def load_model(model_dir: Path) -> Model:
    """Read ``model_dir/config.json`` and build the model it names. Raises ``ValueError`` on a bad config."""
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    if not isinstance(config, dict):
        raise ValueError("config.json must hold a JSON object")
    kind = str(config.get("kind", "constant"))
    if kind == "speak":
        return load_speaking(model_dir, config)
    if kind == "asr-llm":
        return load_asr_llm(model_dir, config)
    if kind != "constant":
        raise ValueError(f"config.json 'kind' must be 'constant', 'asr-llm' or 'speak', got {kind!r}")
    return load_constant(config)


def load_constant(config: dict[str, Any], phrase: str = "The answer is {answer}.") -> BaselineModel:
    """The constant-answer model named in ``config``."""
    answer = str(config.get("answer", "")).strip().upper()
    if answer not in ANSWER_LETTERS:
        raise ValueError(f"config.json 'answer' must be one of {', '.join(ANSWER_LETTERS)}, got {answer!r}")
    return BaselineModel(name=str(config.get("name", "baseline")), answer=answer, phrase=phrase)


def load_speaking(model_dir: Path, config: dict[str, Any]) -> SpeakingModel:
    """A speaking model over the text model ``config['base']`` names (constant or asr-llm)."""
    base_kind = str(config.get("base", "constant"))
    base: Model
    if base_kind == "asr-llm":
        base = load_asr_llm(model_dir, config)
    elif base_kind == "constant":
        base = load_constant(config, phrase=SPOKEN_PHRASE)
    else:
        raise ValueError(f"config.json 'base' must be 'constant' or 'asr-llm', got {base_kind!r}")
    override = config.get("text_override")
    return SpeakingModel(
        name=str(config.get("name", f"speak-{base_kind}")),
        base=base,
        audio=str(config.get("audio", "answer")),
        fixed_text=str(config.get("fixed_text", "")),
        text_override=None if override is None else str(override),
        send_text=bool(config.get("send_text", True)),
        voice=str(config.get("voice", "en-us")),
        speed=int(config.get("speed", 120)),
    )


def load_asr_llm(model_dir: Path, config: dict[str, Any]) -> AsrLlmModel:
    """Load Whisper and the GGUF LLM named in ``config`` (paths relative to ``model_dir``)."""
    # Imported here so the constant model needs neither package.
    from faster_whisper import WhisperModel
    from llama_cpp import Llama

    asr_dir = model_dir / str(config.get("asr_model", "asr"))
    llm_file = model_dir / str(config.get("llm_model", "llm/model.gguf"))
    for path in (asr_dir, llm_file):
        if not path.exists():
            raise ValueError(f"model file missing: {path}")
    threads = int(config.get("threads", 2))
    asr = WhisperModel(
        str(asr_dir), device="cpu", compute_type="int8", cpu_threads=threads, local_files_only=True
    )
    llm = Llama(
        model_path=str(llm_file),
        n_ctx=int(config.get("context", 2048)),
        n_threads=threads,
        seed=0,
        verbose=False,
    )
    return AsrLlmModel(
        name=str(config.get("name", "asr-llm")),
        asr=asr,
        llm=llm,
        system_prompt=str(config.get("system_prompt", DEFAULT_SYSTEM_PROMPT)),
        max_new_tokens=int(config.get("max_new_tokens", 96)),
    )


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
