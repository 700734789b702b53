"""One submission, end to end: fetch, check, build and run isolated, query, judge, score, clean up.

The pipeline knows nothing about chains or databases. The caller hands it a sink that receives each
sample result as soon as it exists, so a crash in the middle loses at most the requests in flight.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import aiohttp
import structlog

from evaluation.competition import DEFAULT_SPEC, CompetitionSpec, combined_score
from evaluation.errors import MinerResponseError, SubmissionRejected
from evaluation.fetch import RepoSource
from evaluation.fingerprint import content_fingerprint, weights_fingerprint
from evaluation.judge.client import JudgeClient
from evaluation.judge.port import AsyncEvaluator
from evaluation.miner_client import MinerClient
from evaluation.prebuild import PrebuildConfig, check_before_build
from evaluation.progress import EvaluationProgress
from evaluation.sandbox.port import RunningModel, Sandbox
from evaluation.types import EvaluationResult, SampleResult, Submission, SubsetScore
from evaluation.voice_to_voice import Heard, VoiceToVoiceScorer
from evaluation.voicebench.dataset import Item, sample_items
from evaluation.voicebench.evaluators import JUDGED_EVALUATORS, SUBSET_EVALUATOR, get_evaluator
from evaluation.voicebench.evaluators.base import Evaluator
from evaluation.voicebench.perturb import apply as apply_perturbation
from evaluation.voicebench.perturb import draw_perturbation
from evaluation.voicebench.scoring import overall_score, subset_score

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class PipelineConfig:
    """How much of the benchmark to send, and how hard to push one miner."""

    samples_per_subset: int | None = None  # None: every item
    subset_samples: Mapping[str, int] = field(default_factory=dict)  # per-subset overrides
    seed: int = 0  # used when evaluate() is given no round seed (a miner's local run)
    perturb: bool = True  # seeded anti-lookup perturbation of every item's audio
    concurrency: int = 4
    miner_timeout_s: float = 60.0
    evaluation_budget_s: float = 1800.0  # all requests of one evaluation; samples after it fail
    check_hotkey: bool = True
    # Size caps and the Dockerfile policy checked before the sandbox sees the repo.
    prebuild: PrebuildConfig = field(default_factory=PrebuildConfig)


class ResultSink(Protocol):
    """Receives each sample result as soon as it is judged."""

    async def sample(self, result: SampleResult) -> None:
        """Persist or display one result."""
        ...


class Pipeline:
    """Evaluates submissions against a loaded benchmark."""

    def __init__(
        self,
        source: RepoSource,
        sandbox: Sandbox,
        benchmark: Mapping[str, Sequence[Item]],
        config: PipelineConfig,
        work_dir: Path,
        *,
        judge: JudgeClient | None = None,
        competitions: Mapping[str, CompetitionSpec] | None = None,
        voice: VoiceToVoiceScorer | None = None,
    ) -> None:
        """``judge`` is required when the benchmark has judge-scored subsets (open, qa).

        ``competitions`` maps a submission's competition id to what is measured (default: voice to
        text, VoiceBench only, also for ids not in the map); ``voice`` scores spoken answers and is
        required when a competition is ``v2v`` (with a MOS predictor when one weighs MOS).
        """
        unknown = [subset for subset in benchmark if subset not in SUBSET_EVALUATOR]
        if unknown:
            raise ValueError(f"no evaluator for subset(s) {unknown}; known: {sorted(SUBSET_EVALUATOR)}")
        self._competitions = dict(competitions or {})
        for name, spec in self._competitions.items():
            if spec.task == "v2v" and voice is None:
                raise ValueError(f"competition {name!r} is voice-to-voice: pass a VoiceToVoiceScorer")
            if spec.needs_mos and (voice is None or not voice.measures_mos):
                raise ValueError(f"competition {name!r} weighs MOS but no MOS predictor is configured")
        self._voice = voice
        self._source = source
        self._sandbox = sandbox
        self._config = config
        self._work_dir = work_dir
        self._benchmark = benchmark
        self._rounds: dict[int, dict[str, list[Item]]] = {}
        self._details: dict[str, str] = {}
        if judge is not None and any(SUBSET_EVALUATOR[s] in JUDGED_EVALUATORS for s in benchmark):
            # Recorded with every result, so a judged score can be reproduced and a low-quality
            # (CPU) judge's scores told apart.
            self._details = {
                "judge_model": judge.info.model,
                "judge_revision": judge.info.revision,
                "judge_prompt_version": judge.info.prompt_version,
                "judge_low_quality": str(judge.info.low_quality).lower(),
            }
        self._evaluators: dict[str, Evaluator] = {
            subset: get_evaluator(SUBSET_EVALUATOR[subset], judge=judge) for subset in benchmark
        }

    @property
    def sample_count(self) -> int:
        """Requests one evaluation sends."""
        return sum(self._sample_size(subset, len(items)) for subset, items in self._benchmark.items())

    def _sample_size(self, subset: str, available: int) -> int:
        wanted = self._config.subset_samples.get(subset, self._config.samples_per_subset)
        return available if wanted is None else min(wanted, available)

    def round_items(self, seed: int) -> dict[str, list[Item]]:
        """The items of the round with ``seed``, perturbed with the same seed (blocking: CPU work).

        Every miner evaluated with one seed gets exactly these items and bytes; the next round's seed
        gives other items and other audio, so a table of past answers keyed by audio hash is useless.
        """
        if seed not in self._rounds:
            items = {
                subset: sample_items(pool, self._sample_size(subset, len(pool)), seed)
                for subset, pool in self._benchmark.items()
            }
            if self._config.perturb:
                items = {subset: [_perturbed(i, seed) for i in pool] for subset, pool in items.items()}
            self._rounds = {seed: items}  # one round at a time: old rounds' audio is not kept
        return self._rounds[seed]

    async def evaluate(
        self,
        submission: Submission,
        sink: ResultSink | None = None,
        *,
        seed: int | None = None,
        progress: EvaluationProgress | None = None,
        sandbox: Sandbox | None = None,
        done: Mapping[tuple[str, str], SampleResult] | None = None,
    ) -> EvaluationResult:
        """Evaluate one submission on the round ``seed`` (default: the configured seed).

        ``done`` holds results already obtained for some of the round's items, keyed by (subset,
        item_id), when an interrupted evaluation is resumed: those items are not sent again (nor given
        to ``sink``), and the score covers them and the new ones, each once.

        Miner faults give a zero-score result with ``error`` set; ``InfrastructureError`` (our side)
        propagates so the caller can retry later. ``progress`` hears each stage and sample; ``sandbox``
        replaces the pipeline's own for this call (a worker's GPU slot).
        """
        sandbox = sandbox or self._sandbox
        started = time.monotonic()
        seed = self._config.seed if seed is None else seed
        spec = self.competition(submission.competition)
        bound = log.bind(
            uid=submission.uid,
            hotkey=submission.hotkey,
            repo=submission.repo_id,
            revision=submission.short_revision,
        )
        self._work_dir.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f"uid{submission.uid}-", dir=self._work_dir))
        fingerprints: tuple[str, ...] = ()
        crash: str | None = None
        repo_dir: Path | None = None
        try:
            if progress is not None:
                progress.stage("fetch")
            repo_dir = await self._source.fetch(submission, scratch)
            fingerprints = await asyncio.to_thread(repo_fingerprints, repo_dir)
            await asyncio.to_thread(
                check_before_build,
                repo_dir,
                self._config.prebuild,
                submission.hotkey if self._config.check_hotkey else None,
            )
            bound.info("repo fetched and checked")
            items = await asyncio.to_thread(self.round_items, seed)
            finished = dict(done or {})
            planned = [i for pool in items.values() for i in pool]
            results = [finished[k] for k in ((i.subset, i.item_id) for i in planned) if k in finished]
            todo = [i for i in planned if (i.subset, i.item_id) not in finished]
            if todo:  # a resume with every answer in hand still fetched the repo for its fingerprints
                if progress is not None:
                    progress.stage("start")
                model = await sandbox.start(submission, repo_dir)
                bound.info("miner ready", url=model.base_url, samples=len(todo), already_done=len(results))
                try:
                    if progress is not None:
                        progress.stage("query", total=len(todo))
                    answered = await self._query_all(model, todo, sink, progress, spec)
                    results += answered
                    if any(r.error is not None for r in answered):
                        # Failed samples are the miner's only if its container is alive or ended by
                        # its own doing; a runtime that lost it raises InfrastructureError here.
                        ended = await sandbox.exit_report(model)
                        if ended is not None:
                            crash = ended.describe()
                            bound.warning("miner container exited mid-evaluation", reason=crash)
                finally:
                    await sandbox.stop(model)
            subsets = [_aggregate(subset, [r for r in results if r.subset == subset]) for subset in items]
        except SubmissionRejected as exc:
            bound.warning("submission rejected", reason=str(exc), kind=type(exc).__name__)
            return EvaluationResult(
                submission=submission,
                score=0.0,
                error=f"{type(exc).__name__}: {exc}",
                duration_s=time.monotonic() - started,
                fingerprints=fingerprints,
                seed=seed,
            )
        finally:
            if repo_dir is not None:
                await self._source.release(repo_dir)
            await asyncio.to_thread(shutil.rmtree, scratch, True)
        voicebench = overall_score({s.subset: s.score for s in subsets})
        details = {**self._details, "competition": submission.competition, "task": spec.task}
        if crash is not None:
            details["container_exit"] = crash
        mos_percent = None
        if spec.task == "v2v" and self._voice is not None:
            mos_percent = self._voice.mos_percent(results)
            details.update(self._voice.describe())
            details.update(self._voice.summary(results))
        score = combined_score(spec, voicebench, mos_percent)
        if spec.task == "v2v":
            # Each part beside the combined score, so the README's formula can be checked on any result.
            details["voicebench_score"] = f"{voicebench:.4f}"
            details["mos_score"] = "not measured" if mos_percent is None else f"{mos_percent:.4f}"
            details["score_weights"] = f"voicebench={spec.voicebench_weight:g},mos={spec.mos_weight:g}"
        bound.info(
            "evaluated",
            score=round(score, 2),
            task=spec.task,
            subsets={s.subset: round(s.score, 2) for s in subsets},
        )
        return EvaluationResult(
            submission=submission,
            score=score,
            subsets=tuple(subsets),
            duration_s=time.monotonic() - started,
            fingerprints=fingerprints,
            seed=seed,
            details=details,
        )

    def competition(self, competition_id: str) -> CompetitionSpec:
        """What is measured for ``competition_id``: its spec, or voice to text when it has none."""
        return self._competitions.get(competition_id, DEFAULT_SPEC)

    async def _query_all(
        self,
        model: RunningModel,
        items: Sequence[Item],
        sink: ResultSink | None,
        progress: EvaluationProgress | None = None,
        spec: CompetitionSpec = DEFAULT_SPEC,
    ) -> list[SampleResult]:
        gate = asyncio.Semaphore(self._config.concurrency)
        # A miner that answers each request just inside its timeout must not hold a GPU slot for hours.
        deadline = time.monotonic() + self._config.evaluation_budget_s
        timeout = aiohttp.ClientTimeout(total=self._config.miner_timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            client = MinerClient(model.base_url, session, timeout_s=self._config.miner_timeout_s)
            voice = self._voice if spec.task == "v2v" else None

            async def one(item: Item) -> SampleResult:
                # The gate bounds requests in flight to the miner, nothing else: an answer is judged
                # after its slot is given back, so the miner never idles while the judge works (the
                # judge client bounds its own load).
                async with gate:
                    if time.monotonic() > deadline:
                        answered: _Answer | Heard | SampleResult = SampleResult(
                            item.subset, item.item_id, 0.0, "", "evaluation time budget spent"
                        )
                    elif voice is not None:
                        answered = await voice.ask(client, item)
                    else:
                        answered = await _ask(client, item)
                if isinstance(answered, SampleResult):
                    result = answered
                elif isinstance(answered, Heard):
                    assert voice is not None  # only the voice scorer hears spoken answers
                    result = await voice.score(answered, self._evaluators[item.subset])
                else:
                    result = await _score(answered, self._evaluators[item.subset])
                if sink is not None:
                    await sink.sample(result)
                if progress is not None:
                    progress.sample(result)
                return result

            tasks = [asyncio.ensure_future(one(i)) for i in items]
            try:
                return list(await asyncio.gather(*tasks))
            except BaseException:
                # One failure on our side (judge outage, store error) ends the evaluation: the other
                # requests must not go on saving samples behind the caller's back.
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise


def _perturbed(item: Item, seed: int) -> Item:
    perturbation = draw_perturbation(seed, f"{item.subset}/{item.item_id}")
    audio = apply_perturbation(item.audio, item.sample_rate, perturbation, seed)
    return dataclasses.replace(item, audio=audio)


def repo_fingerprints(repo_dir: Path) -> tuple[str, ...]:
    """The repo's fingerprints, tagged by kind so a content hash never meets a weights hash."""
    found = [f"content:{content_fingerprint(repo_dir)}"]
    weights = weights_fingerprint(repo_dir)
    if weights is not None:
        found.append(f"weights:{weights}")
    return tuple(found)


@dataclass(frozen=True)
class _Answer:
    """A miner's answer to one item, before it is scored."""

    item: Item
    text: str
    latency_s: float


async def _ask(client: MinerClient, item: Item) -> _Answer | SampleResult:
    """The miner's answer to ``item``, or the failed sample's result when the miner is at fault."""
    started = time.monotonic()
    try:
        text = await client.v2t(item.audio, item.sample_rate)
    except MinerResponseError as exc:
        return SampleResult(item.subset, item.item_id, 0.0, "", str(exc), time.monotonic() - started)
    return _Answer(item, text, time.monotonic() - started)


async def _score(answer: _Answer, evaluator: Evaluator) -> SampleResult:
    """Score an answer. A judge outage raises JudgeUnavailable (our side): the evaluation is retried,
    no one is scored."""
    item = answer.item
    if isinstance(evaluator, AsyncEvaluator):
        score = await evaluator.ascore(item, answer.text)
    else:
        score = evaluator.score(item, answer.text)
    return SampleResult(item.subset, item.item_id, score, answer.text, None, answer.latency_s)


def _aggregate(subset: str, results: Sequence[SampleResult]) -> SubsetScore:
    return SubsetScore(
        subset=subset,
        score=subset_score([r.score for r in results]),
        samples=len(results),
        failures=sum(1 for r in results if r.error is not None),
    )
