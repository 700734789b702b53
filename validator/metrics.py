"""Prometheus metrics of one validator, and the loopback HTTP server that exposes them.

One :class:`Metrics` object per app, on its own :class:`CollectorRegistry` (nothing module-level: two
apps in one process, as in the tests, never share or clash). The composition root (``validator.app``)
creates it and hands its methods to the parts that measure: the service, the Docker sandbox (build
times) and the judge client (request latency).

Label values come only from fixed vocabularies chosen here or from the operator's configuration (subset
names, worker numbers): never from error text, repo names, hotkeys or anything else a miner controls, so
a hostile miner cannot grow the number of time series.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from evaluation.progress import LoggedProgress, Stage
from evaluation.types import SampleResult
from validator.version import package_version

log = structlog.get_logger(__name__)

PREFIX = "voice_validator"
METRICS_HOST = "127.0.0.1"

# Failure reasons, by the exception class the evaluation library raised. Anything else is "other";
# the class name is matched exactly, never a substring of a message.
FAILURE_REASONS: dict[str, str] = {
    "RepoInvalid": "repo_invalid",
    "BuildFailed": "build_failed",
    "StartFailed": "start_failed",
    "MinerResponseError": "miner_response",
    "SubmissionRejected": "rejected",
    "InfrastructureError": "infrastructure",
    "JudgeUnavailable": "judge_unavailable",
    "JudgeServerError": "judge_unavailable",
}
OTHER_REASON = "other"

# An evaluation takes from seconds (a cached image, few samples) to an hour (a 20 GB repo, a slow model).
_EVALUATION_BUCKETS = (10, 30, 60, 120, 300, 600, 900, 1200, 1800, 2700, 3600, 5400, 7200)
_BUILD_BUCKETS = (5, 15, 30, 60, 120, 300, 600, 900, 1200, 1800)
_JUDGE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60)


def failure_reason(kind: str) -> str:
    """The bounded label value for an error of class ``kind`` (see :data:`FAILURE_REASONS`)."""
    return FAILURE_REASONS.get(kind, OTHER_REASON)


def error_kind(error: str | None) -> str:
    """The exception class name at the head of a recorded error ("BuildFailed: ...")."""
    head, sep, _ = (error or "").partition(":")
    return head.strip() if sep and head.strip().isidentifier() else ""


class Metrics:
    """Every metric the validator exports. Methods are cheap and never raise on the caller's path."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.info = Gauge(f"{PREFIX}_info", "Always 1; the label is the version.", ["version"], registry=r)
        self.info.labels(version=package_version()).set(1)
        self.evaluations_started = Counter(
            f"{PREFIX}_evaluations_started", "Evaluations a worker began.", registry=r
        )
        self.evaluations_finished = Counter(
            f"{PREFIX}_evaluations_finished",
            "Evaluations ended: evaluated (scored), rejected (miner's fault, score 0), failed (our side, "
            "retried later).",
            ["outcome"],
            registry=r,
        )
        self.evaluation_duration = Histogram(
            f"{PREFIX}_evaluation_duration_seconds",
            "Wall time of one evaluation, fetch to last sample, by outcome.",
            ["outcome"],
            buckets=_EVALUATION_BUCKETS,
            registry=r,
        )
        self.evaluation_failures = Counter(
            f"{PREFIX}_evaluation_failures",
            "Rejected or failed evaluations by reason (a fixed set of words).",
            ["reason"],
            registry=r,
        )
        self.evaluations_in_progress = Gauge(
            f"{PREFIX}_evaluations_in_progress", "Evaluations running now.", registry=r
        )
        self.samples = Counter(
            f"{PREFIX}_samples_evaluated",
            "Benchmark samples sent and scored; outcome failed: no usable answer (scores 0).",
            ["subset", "outcome"],
            registry=r,
        )
        self.worker_samples_done = Gauge(
            f"{PREFIX}_worker_samples_done",
            "Samples done in the worker's current evaluation.",
            ["worker"],
            registry=r,
        )
        self.worker_samples_planned = Gauge(
            f"{PREFIX}_worker_samples_planned",
            "Samples in the worker's current evaluation (0 while fetching or building).",
            ["worker"],
            registry=r,
        )
        self.judge_duration = Histogram(
            f"{PREFIX}_judge_request_duration_seconds",
            "Latency of one HTTP attempt to the judge, by outcome.",
            ["outcome"],
            buckets=_JUDGE_BUCKETS,
            registry=r,
        )
        self.judge_errors = Counter(
            f"{PREFIX}_judge_request_errors",
            "Judge attempts that failed, by reason (timeout, connection, http_5xx, http_429, malformed, "
            "rejected).",
            ["reason"],
            registry=r,
        )
        self.build_duration = Histogram(
            f"{PREFIX}_build_duration_seconds",
            "Wall time of one miner image build, by outcome (built, failed, error).",
            ["outcome"],
            buckets=_BUILD_BUCKETS,
            registry=r,
        )
        self.weight_sets = Counter(
            f"{PREFIX}_weight_sets",
            "Weight set attempts by outcome: success, dry_run, not_ready, rate_limited, or the refusal kind "
            "(not_registered, no_permit, stake, version_key, runtime, invalid, connection, transient).",
            ["outcome"],
            registry=r,
        )
        self.queue_length = Gauge(
            f"{PREFIX}_queue_length", "Submissions queued or under evaluation.", registry=r
        )
        self.chain_block = Gauge(f"{PREFIX}_chain_block", "Newest block the validator has read.", registry=r)
        self.last_weights_block = Gauge(
            f"{PREFIX}_last_weights_block", "Block of this validator's last accepted weight set.", registry=r
        )
        self.weights_in_force = Gauge(
            f"{PREFIX}_weights_in_force",
            "1 when the last accepted weight set is on chain (under commit-reveal: read back after its "
            "reveal), 0 when a reveal is pending or did not land.",
            registry=r,
        )
        self.weights_reveal_pending = Gauge(
            f"{PREFIX}_weights_reveal_pending",
            "1 while a committed weight set waits for its reveal, else 0.",
            registry=r,
        )
        self.validator_permit = Gauge(
            f"{PREFIX}_validator_permit",
            "1 when this validator's hotkey holds a validator permit, 0 when not (its weights would not "
            "count), -1 when it is not registered.",
            registry=r,
        )
        self.weights_blocked = Gauge(
            f"{PREFIX}_weights_blocked",
            "1 while weights cannot land until the operator acts (not registered, no permit, stake, "
            "version key, a runtime this SDK cannot use), else 0.",
            registry=r,
        )

    # Callbacks handed to the evaluation library (see evaluation.progress.Observe).

    def observe_build(self, seconds: float, outcome: str) -> None:
        """One image build ended."""
        self.build_duration.labels(outcome=outcome).observe(seconds)

    def observe_judge(self, seconds: float, outcome: str) -> None:
        """One judge attempt ended; anything but "ok" is also counted as an error."""
        self.judge_duration.labels(outcome=outcome).observe(seconds)
        if outcome != "ok":
            self.judge_errors.labels(reason=outcome).inc()

    def evaluation_finished(self, outcome: str, seconds: float, error_class: str | None = None) -> None:
        """An evaluation ended with ``outcome`` (evaluated, rejected, failed) after ``seconds``."""
        self.evaluations_finished.labels(outcome=outcome).inc()
        self.evaluation_duration.labels(outcome=outcome).observe(seconds)
        if outcome != "evaluated":
            self.evaluation_failures.labels(reason=failure_reason(error_class or "")).inc()

    def render(self) -> bytes:
        """The registry in Prometheus' text format."""
        return generate_latest(self.registry)


class ObservedProgress(LoggedProgress):
    """Progress of one worker's evaluation: logged (see :class:`LoggedProgress`) and counted in metrics."""

    def __init__(self, metrics: Metrics, worker: int, every_n: int = 25, every_s: float = 15.0) -> None:
        super().__init__(every_n=every_n, every_s=every_s)
        self._metrics = metrics
        self._worker = str(worker)
        metrics.worker_samples_done.labels(worker=self._worker).set(0)
        metrics.worker_samples_planned.labels(worker=self._worker).set(0)

    def stage(self, stage: Stage, total: int | None = None) -> None:
        """Log it; a sample total becomes the worker's planned gauge."""
        super().stage(stage, total)
        if total is not None:
            self._metrics.worker_samples_planned.labels(worker=self._worker).set(total)

    def sample(self, result: SampleResult) -> None:
        """Log when due; count the sample by subset (a configured name) and outcome."""
        super().sample(result)
        outcome = "failed" if result.error is not None else "answered"
        self._metrics.samples.labels(subset=result.subset, outcome=outcome).inc()
        self._metrics.worker_samples_done.labels(worker=self._worker).set(self.done)


@asynccontextmanager
async def serve_metrics(metrics: Metrics, port: int, host: str = METRICS_HOST) -> AsyncIterator[int]:
    """Serve ``GET /metrics`` on ``host:port`` (loopback) until the block exits; yields the bound port.

    ``port`` 0 takes any free port (tests). The server runs on the event loop: rendering the registry is
    a few microseconds of in-memory work, and no scrape touches the database or the network.
    """

    async def handle(_: web.Request) -> web.Response:
        response = web.Response(body=metrics.render())
        response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        response.charset = "utf-8"
        return response

    app = web.Application()
    app.router.add_get("/metrics", handle)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = int(runner.addresses[0][1])
        log.info("metrics served", url=f"http://{host}:{bound}/metrics")
        yield bound
    finally:
        await runner.cleanup()
