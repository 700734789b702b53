"""Prometheus metrics: served on loopback by a running validator, counting what happened, with label
values a miner cannot choose."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from evaluation.judge.client import JudgeClient
from evaluation.judge.port import JudgeInfo, JudgeUnavailable
from evaluation.judge.server import pick_free_port
from evaluation.types import SampleResult
from evaluation.voicebench.dataset import load_subset
from tests.fakes import InProcessSandbox
from tests.judge_fake import FakeJudge, garbage, hang, reply, status
from tests.scenario import world
from validator.app import open_app
from validator.metrics import (
    FAILURE_REASONS,
    OTHER_REASON,
    Metrics,
    ObservedProgress,
    error_kind,
    serve_metrics,
)

ALICE, BOB = "5Alice-miner", "5Bob-miner"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a /metrics page: (name, sorted labels) -> value."""
    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def value(page: dict, name: str, **labels: str) -> float:
    return page[(name, tuple(sorted(labels.items())))]


async def scrape(port: int) -> str:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}/metrics", timeout=aiohttp.ClientTimeout(5)) as r:
            assert r.status == 200
            assert r.headers["Content-Type"].startswith("text/plain")
            return await r.text()


def non_loopback_address() -> str | None:
    """An address of this machine other than loopback, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: no packet is sent for a UDP connect
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


async def test_running_validator_serves_metrics_of_what_it_did(tmp_path: Path, voicebench_dir: Path) -> None:
    benchmark = {"openbookqa": load_subset(voicebench_dir, "openbookqa")}
    port = pick_free_port()
    async with world(tmp_path, voicebench_dir, metrics_port=port, eval_workers=2) as w:
        w.miner(ALICE, "alice/voice", "A")
        # A miner whose failure text is hostile: it must never become a label value.
        w.miner(BOB, "bob/voice", "B", broken="start")
        async with open_app(w.settings, sandbox=InProcessSandbox(), benchmark=benchmark) as app:
            assert app.metrics_port == port
            before = samples(await scrape(port))
            assert value(before, "voice_validator_evaluations_started_total") == 0
            stop = asyncio.Event()
            daemon = asyncio.create_task(app.service.run(stop))
            try:
                async with asyncio.timeout(60):
                    while not w.weights() or app.store.pending_count():
                        await asyncio.sleep(0.2)
                    # The weights loop may count before the evaluation's own metrics are final.
                    while True:
                        page = samples(await scrape(port))
                        if page.get(("voice_validator_weight_sets_total", (("outcome", "success"),))):
                            break
                        await asyncio.sleep(0.2)
            finally:
                stop.set()
                await daemon
            page = samples(await scrape(port))
        items = len(benchmark["openbookqa"])
        assert value(page, "voice_validator_evaluations_started_total") == 2
        assert value(page, "voice_validator_evaluations_finished_total", outcome="evaluated") == 1
        assert value(page, "voice_validator_evaluations_finished_total", outcome="rejected") == 1
        assert value(page, "voice_validator_evaluation_failures_total", reason="start_failed") == 1
        assert value(page, "voice_validator_evaluation_duration_seconds_count", outcome="evaluated") == 1
        assert value(page, "voice_validator_evaluations_in_progress") == 0
        answered = value(
            page, "voice_validator_samples_evaluated_total", subset="openbookqa", outcome="answered"
        )
        assert answered == items
        assert value(page, "voice_validator_queue_length") == 0
        assert value(page, "voice_validator_chain_block") >= 1
        assert value(page, "voice_validator_last_weights_block") >= 1
        assert value(page, "voice_validator_weight_sets_total", outcome="success") >= 1
        workers = {labels for (name, labels) in page if name == "voice_validator_worker_samples_done"}
        assert workers <= {(("worker", "0"),), (("worker", "1"),)}
        # Label values only from fixed sets or the configuration.
        reasons = {dict(labels)["reason"] for (name, labels) in page if name.endswith("failures_total")}
        assert reasons <= set(FAILURE_REASONS.values()) | {OTHER_REASON}
        # The server went with the app.
        with pytest.raises(aiohttp.ClientConnectionError):
            await scrape(port)


async def test_metrics_listen_on_loopback_only() -> None:
    address = non_loopback_address()
    async with serve_metrics(Metrics(), 0) as port:
        assert "voice_validator_info" in await scrape(port)
        if address is None:
            pytest.skip("this machine has no non-loopback address to try")
        with pytest.raises(OSError):
            await asyncio.wait_for(asyncio.open_connection(address, port), 5)


def test_two_apps_have_separate_registries() -> None:
    one, two = Metrics(), Metrics()  # a process-wide registry would refuse the second (duplicate names)
    one.evaluations_started.inc()
    assert b"voice_validator_evaluations_started_total 1.0" in one.render()
    assert b"voice_validator_evaluations_started_total 0.0" in two.render()


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        ("BuildFailed: build of x failed: RUN exit 1", "build_failed"),
        ("StartFailed: not ready after 600s", "start_failed"),
        ("RepoInvalid: hotkey.txt names another hotkey", "repo_invalid"),
        ("MinerResponseError: HTTP 500", "miner_response"),
        # Text a miner controls, shaped like a label value or a class: still one of the fixed words.
        ('EvilMiner"} 1e9\nvoice_validator_x{a="b: owned', OTHER_REASON),
        ("rm -rf /: nope", OTHER_REASON),
        ("no colon at all", OTHER_REASON),
        (None, OTHER_REASON),
    ],
)
def test_failure_reasons_are_a_fixed_set(error: str | None, reason: str) -> None:
    metrics = Metrics()
    metrics.evaluation_finished("rejected", 1.0, error_kind(error))
    page = samples(metrics.render().decode())
    assert value(page, "voice_validator_evaluation_failures_total", reason=reason) == 1


def test_many_hostile_errors_add_no_series() -> None:
    metrics = Metrics()
    for n in range(500):
        metrics.evaluation_finished("rejected", 1.0, error_kind(f"Miner{n}Error: payload {n}"))
    reasons = {
        dict(labels)["reason"]
        for (name, labels) in samples(metrics.render().decode())
        if name == "voice_validator_evaluation_failures_total"
    }
    assert reasons == {OTHER_REASON}


def test_observed_progress_counts_samples_per_worker() -> None:
    metrics = Metrics()
    progress = ObservedProgress(metrics, worker=1, every_n=1000, every_s=1000)
    progress.stage("query", total=3)
    progress.sample(SampleResult("bbh", "1", 1.0, "yes"))
    progress.sample(SampleResult("bbh", "2", 0.0, "", "timeout"))
    page = samples(metrics.render().decode())
    assert value(page, "voice_validator_worker_samples_planned", worker="1") == 3
    assert value(page, "voice_validator_worker_samples_done", worker="1") == 2
    assert value(page, "voice_validator_samples_evaluated_total", subset="bbh", outcome="answered") == 1
    assert value(page, "voice_validator_samples_evaluated_total", subset="bbh", outcome="failed") == 1


async def test_judge_latency_and_errors_are_observed() -> None:
    metrics = Metrics()
    info = JudgeInfo("fake-judge", "r1", "open-qa-v1")
    messages = [{"role": "user", "content": "hi"}]
    async with aiohttp.ClientSession() as session:
        script = (status(503), garbage(), hang(2), status(429), reply("4"))
        async with FakeJudge(*script) as judge:
            client = JudgeClient(
                judge.url,
                session,
                model="fake-judge",
                info=info,
                timeout_s=0.5,
                backoff_s=0.0,
                retries=5,
                observe=metrics.observe_judge,
            )
            assert await client.complete(messages, n=1, temperature=0.0, max_tokens=1) == ["4"]
        async with FakeJudge(default=status(404)) as judge:
            client = JudgeClient(judge.url, session, model="x", info=info, observe=metrics.observe_judge)
            with pytest.raises(JudgeUnavailable):
                await client.complete(messages, n=1, temperature=0.0, max_tokens=1)
    page = samples(metrics.render().decode())
    for reason in ("http_5xx", "malformed", "timeout", "http_429", "rejected"):
        assert value(page, "voice_validator_judge_request_errors_total", reason=reason) == 1, reason
    assert value(page, "voice_validator_judge_request_duration_seconds_count", outcome="ok") == 1
    assert value(page, "voice_validator_judge_request_duration_seconds_sum", outcome="timeout") >= 0.5
