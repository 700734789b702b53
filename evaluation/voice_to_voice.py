"""One voice-to-voice sample: ask for a spoken answer, hear it, score what it says, check it against the
miner's own text, and rate how it sounds.

Order of the checks, each cheaper than the next:

1. the client's limits (size, length, dtype, sample rate, finiteness: :meth:`MinerClient.inference`);
2. the signal check: a silent answer scores 0 without reaching the ASR (Whisper invents words in silence);
3. ASR of the audio (in a thread, under a deadline), scored by the subset's VoiceBench evaluator;
4. consistency: WER between the miner's text and the transcript, turned into a factor on the score;
5. MOS, when a predictor is configured (in a thread, under the same deadline).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from evaluation.asr import SpeechRecognizer
from evaluation.errors import InfrastructureError, MinerResponseError
from evaluation.judge.port import AsyncEvaluator
from evaluation.miner_client import INFERENCE_PATH, VOICE_TO_VOICE_PATHS, MinerClient, SpokenAnswer
from evaluation.speech import (
    MosPredictor,
    check_signal,
    clamp_mos,
    consistency_factor,
    mean_mos,
    mos_to_percent,
    word_error_rate,
)
from evaluation.types import SampleResult, SpeechDetails
from evaluation.voicebench.dataset import Item
from evaluation.voicebench.evaluators.base import Evaluator

SILENT_ERROR = "returned audio is silent"

_T = TypeVar("_T")


@dataclass(frozen=True)
class VoiceToVoiceConfig:
    """Limits and rules of the voice-to-voice evaluation."""

    path: str = INFERENCE_PATH  # or /api/v1/v2v
    max_audio_s: float = 120.0  # longest spoken answer accepted
    max_response_bytes: int = 16 * 2**20  # 120 s of float32 at 24 kHz is 15 MiB of base64
    wer_tolerance: float = 0.2  # WER between text and transcript that costs nothing (ASR noise)
    model_timeout_s: float = 300.0  # deadline of one ASR or MOS call on our side

    def __post_init__(self) -> None:
        if self.path not in VOICE_TO_VOICE_PATHS:
            raise ValueError(f"path must be one of {VOICE_TO_VOICE_PATHS}, got {self.path!r}")
        if self.max_audio_s <= 0 or self.max_response_bytes <= 0 or self.model_timeout_s <= 0:
            raise ValueError("max_audio_s, max_response_bytes and model_timeout_s must be positive")
        consistency_factor(None, self.wer_tolerance)  # raises for a tolerance outside [0, 1)


@dataclass(frozen=True)
class Heard:
    """A spoken answer received for ``item``, not yet scored."""

    item: Item
    answer: SpokenAnswer
    latency_s: float


class VoiceToVoiceScorer:
    """Scores spoken answers with a speech recognizer and, optionally, a MOS predictor."""

    def __init__(
        self,
        recognizer: SpeechRecognizer,
        config: VoiceToVoiceConfig | None = None,
        *,
        mos: MosPredictor | None = None,
    ) -> None:
        self._recognizer = recognizer
        self._config = config or VoiceToVoiceConfig()
        self._mos = mos

    @property
    def measures_mos(self) -> bool:
        """Whether a MOS predictor is configured."""
        return self._mos is not None

    def describe(self) -> dict[str, str]:
        """What scored the answers, recorded with each evaluation (a score is reproducible only with it)."""
        return {
            "v2v_asr_model": self._recognizer.name,
            "v2v_mos_predictor": self._mos.name if self._mos is not None else "none",
            "v2v_wer_tolerance": f"{self._config.wer_tolerance:g}",
            "v2v_path": self._config.path,
        }

    async def query(self, client: MinerClient, item: Item, evaluator: Evaluator) -> SampleResult:
        """Send ``item`` to the miner and score its spoken answer (:meth:`ask`, then :meth:`score`).

        Miner faults (bad response, silent audio) give a 0-score result with ``error`` set; our own
        faults (ASR or MOS model failing or past its deadline, judge outage) raise InfrastructureError
        or the judge's error, so the evaluation is retried instead of scoring the miner.
        """
        asked = await self.ask(client, item)
        return asked if isinstance(asked, SampleResult) else await self.score(asked, evaluator)

    async def ask(self, client: MinerClient, item: Item) -> Heard | SampleResult:
        """The miner's spoken answer to ``item``, or the failed sample's result when the miner is at fault.

        Only this part holds the miner's request slot; :meth:`score` runs after it is given back, so the
        miner never idles while the ASR or the judge works.
        """
        started = time.monotonic()
        config = self._config
        try:
            answer = await client.inference(
                item.audio,
                item.sample_rate,
                path=config.path,
                max_audio_s=config.max_audio_s,
                max_response_bytes=config.max_response_bytes,
            )
        except MinerResponseError as exc:
            return SampleResult(item.subset, item.item_id, 0.0, "", str(exc), time.monotonic() - started)
        return Heard(item, answer, time.monotonic() - started)

    async def score(self, heard: Heard, evaluator: Evaluator) -> SampleResult:
        """Check, transcribe and score a spoken answer (see the module's docstring for the order)."""
        item, answer, latency, config = heard.item, heard.answer, heard.latency_s, self._config
        signal = await asyncio.to_thread(check_signal, answer.audio, answer.sample_rate)
        if signal.silent:
            details = SpeechDetails(
                transcript="",
                text=answer.text,
                content_score=0.0,
                wer=None,
                consistency=0.0,
                mos=None,
                duration_s=signal.duration_s,
                silent=True,
                clipped_fraction=signal.clipped_fraction,
            )
            return SampleResult(item.subset, item.item_id, 0.0, "", SILENT_ERROR, latency, details)
        transcript = await self._run_model(
            "ASR", self._recognizer.transcribe, answer.audio, answer.sample_rate
        )
        content = await _score(evaluator, item, transcript)
        # Up to a few hundred ms of pure Python on long answers: off the event loop.
        wer = (
            None if answer.text is None else await asyncio.to_thread(word_error_rate, answer.text, transcript)
        )
        factor = consistency_factor(wer, config.wer_tolerance)
        mos = None
        if self._mos is not None:
            mos = clamp_mos(
                await self._run_model("MOS predictor", self._mos.predict, answer.audio, answer.sample_rate)
            )
        details = SpeechDetails(
            transcript=transcript,
            text=answer.text,
            content_score=content,
            wer=wer,
            consistency=factor,
            mos=mos,
            duration_s=signal.duration_s,
            silent=False,
            clipped_fraction=signal.clipped_fraction,
        )
        return SampleResult(item.subset, item.item_id, content * factor, transcript, None, latency, details)

    async def _run_model(self, what: str, fn: Callable[..., _T], *args: object) -> _T:
        """Run a blocking model call in a thread under the deadline; our failures are infrastructure."""
        try:
            async with asyncio.timeout(self._config.model_timeout_s):
                return await asyncio.to_thread(fn, *args)
        except TimeoutError as exc:
            # The thread cannot be killed; it finishes in the background and its result is dropped.
            raise InfrastructureError(f"{what} took longer than {self._config.model_timeout_s:g}s") from exc
        except (ValueError, RuntimeError, OSError) as exc:
            raise InfrastructureError(f"{what} failed: {type(exc).__name__}: {exc}") from exc

    def summary(self, results: Sequence[SampleResult]) -> dict[str, str]:
        """Evaluation-level voice-to-voice figures for the details record (strings, as details are).

        ``v2v_mos`` is the mean over every sample (failed or silent ones at 1), or "not measured".
        """
        spoken = [r.speech for r in results if r.speech is not None]
        with_text = [s for s in spoken if s.wer is not None]
        figures = {
            "v2v_samples": str(len(results)),
            "v2v_silent": str(sum(1 for s in spoken if s.silent)),
            "v2v_with_text": str(len(with_text)),
            "v2v_mean_consistency": _mean_text([s.consistency for s in with_text]),
            "v2v_mean_wer": _mean_text([s.wer for s in with_text if s.wer is not None]),
        }
        mos = self.mean_mos(results)
        figures["v2v_mos"] = "not measured" if mos is None else f"{mos:.3f}"
        return figures

    def mean_mos(self, results: Sequence[SampleResult]) -> float | None:
        """Mean MOS over ``results`` (failed or silent at the minimum); None without a predictor."""
        if self._mos is None or not results:
            return None
        return mean_mos([r.speech.mos if r.speech is not None else None for r in results])

    def mos_percent(self, results: Sequence[SampleResult]) -> float | None:
        """:meth:`mean_mos` on the 0-100 scale, None without a predictor."""
        mos = self.mean_mos(results)
        return None if mos is None else mos_to_percent(mos)


async def _score(evaluator: Evaluator, item: Item, response: str) -> float:
    """The evaluator's score of ``response``; the judge's outage propagates (our side)."""
    if isinstance(evaluator, AsyncEvaluator):
        return await evaluator.ascore(item, response)
    return evaluator.score(item, response)


def _mean_text(values: Sequence[float]) -> str:
    return "n/a" if not values else f"{math.fsum(values) / len(values):.3f}"
