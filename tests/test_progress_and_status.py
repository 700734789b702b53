"""Progress of long work (logs, the miner's progress bar) and the operator's status command (evaluations
under way, judge and Docker health)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import structlog
from aiohttp import web

from evaluation.fetch import LocalDirSource
from evaluation.judge.server import pick_free_port
from evaluation.pipeline import Pipeline, PipelineConfig
from evaluation.progress import LoggedProgress, Throttle
from evaluation.types import SampleResult, Submission
from evaluation.voicebench.dataset import load_subset
from tests.fakes import InProcessSandbox
from validator.cli import main as cli_main
from validator.cli import show_health, show_status
from validator.demo import default_example_dir, prepare_repo
from validator.logging import configure_logging
from validator.progress_bar import TerminalProgress, format_duration, render_bar
from validator.settings import load_settings
from validator.store import Store

# ------------------------------------------------------------------------------------- progress


def test_throttle_reports_every_n_or_every_s() -> None:
    now = [0.0]
    throttle = Throttle(every_n=3, every_s=10.0, clock=lambda: now[0])
    assert [throttle.due() for _ in range(6)] == [False, False, True, False, False, True]
    throttle.due()
    now[0] = 11.0
    assert throttle.due()  # time, not count
    with pytest.raises(ValueError):
        Throttle(every_n=0, every_s=1)


def test_bar_rendering() -> None:
    assert format_duration(95) == "1m35s" and format_duration(3725) == "1h02m" and format_duration(4) == "4s"
    line = render_bar(25, 100, 2, 10.0, width=10)
    assert line.startswith("[##........]  25/100   25%  2.5/s  ETA 30s  2 failed")
    assert "ETA" not in render_bar(100, 100, 0, 10.0)


def _results(n: int) -> list[SampleResult]:
    return [SampleResult("bbh", str(i), 1.0, "yes", None if i % 10 else "timeout") for i in range(n)]


def test_progress_without_a_terminal_writes_few_plain_lines() -> None:
    out = io.StringIO()
    progress = TerminalProgress(out, tty=False, clock=lambda: 0.0)
    progress.stage("fetch")
    progress.stage("query", total=200)
    for result in _results(200):
        progress.sample(result)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("fetching") and lines[1] == "sending samples (200)..."
    bars = lines[2:]
    # The first answer, then one line per 10 %: not one per sample.
    assert len(bars) == 11 and "\r" not in out.getvalue()
    assert " 1/200 " in bars[0]
    assert "200/200" in bars[-1] and "100%" in bars[-1] and "20 failed" in bars[-1]


def test_progress_on_a_terminal_redraws_one_line() -> None:
    out = io.StringIO()
    clock = iter(float(i) for i in range(1000))
    progress = TerminalProgress(out, tty=True, clock=lambda: next(clock))
    progress.stage("query", total=5)
    for result in _results(5):
        progress.sample(result)
    text = out.getvalue()
    assert text.count("\r") == 5 and text.endswith("5/5  100%  1.0/s  1 failed\n")


async def test_pipeline_logs_its_stages_and_samples_with_the_miner_bound(
    tmp_path: Path, voicebench_dir: Path
) -> None:
    benchmark = {"openbookqa": load_subset(voicebench_dir, "openbookqa")}
    total = len(benchmark["openbookqa"])
    repo = prepare_repo(default_example_dir(), tmp_path / "repo", "hk", {"answer": "A"})
    config = PipelineConfig(check_hotkey=False, perturb=False)
    pipeline = Pipeline(LocalDirSource(repo), InProcessSandbox(), benchmark, config, tmp_path / "w")
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    try:
        with structlog.contextvars.bound_contextvars(uid=9, hotkey="hk"):
            progress = LoggedProgress(every_n=4, every_s=3600)
            await pipeline.evaluate(
                Submission(uid=9, hotkey="hk", repo_id="ns/m", revision="0" * 40), progress=progress
            )
    finally:
        logging.getLogger().handlers.clear()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    stages = [line["stage"] for line in lines if line["event"] == "evaluation stage"]
    assert stages == ["fetch", "start", "query"]
    counts = [line["done"] for line in lines if line["event"] == "evaluation progress"]
    assert counts[-1] == total and counts == sorted(counts)
    assert len(counts) == total // 4 + (total % 4 != 0)
    assert all(line.get("uid") == 9 for line in lines if line["event"].startswith("evaluation "))


# --------------------------------------------------------------------------------------- status


@asynccontextmanager
async def models_server(delay_s: float = 0.0, code: int = 200) -> AsyncIterator[str]:
    """An OpenAI-style server answering GET /v1/models only."""

    async def models(_: web.Request) -> web.Response:
        await asyncio.sleep(delay_s)
        return web.json_response({"object": "list", "data": [{"id": "judge-model"}]}, status=code)

    app = web.Application()
    app.router.add_get("/v1/models", models)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
    finally:
        await runner.cleanup()


def _judged(tmp_path: Path, **values: object):  # type: ignore[no-untyped-def]
    return load_settings(
        [], data_dir=tmp_path / "var", subsets=["commoneval"], health_timeout_s=1.0, **values
    )


async def test_health_reports_docker_and_judge(tmp_path: Path, docker_host: str) -> None:
    async with models_server() as url:
        out = io.StringIO()
        code = await show_health(_judged(tmp_path, judge="url", judge_url=url, docker_host=docker_host), out)
    assert code == 0, out.getvalue()
    assert "docker: ok (" in out.getvalue() and "Docker 2" in out.getvalue()
    assert f"judge: ok ({url.removesuffix('/v1')}/v1/models: judge-model)" in out.getvalue()


async def test_health_reports_what_is_down_within_its_deadline(tmp_path: Path) -> None:
    dead_port = pick_free_port()
    settings = _judged(tmp_path, judge="vllm", judge_port=dead_port, docker_host="unix:///nonexistent.sock")
    started = time.monotonic()
    out = io.StringIO()
    assert await show_health(settings, out) == 1
    assert "docker: DOWN" in out.getvalue() and f"judge: DOWN (http://127.0.0.1:{dead_port}" in out.getvalue()
    # A judge that hangs is reported, not waited for.
    async with models_server(delay_s=30) as url:
        out = io.StringIO()
        await show_health(_judged(tmp_path, judge="url", judge_url=url, docker_host="unix:///x"), out)
    assert "judge: DOWN" in out.getvalue() and "TimeoutError" in out.getvalue()
    assert time.monotonic() - started < 10


async def test_health_skips_the_judge_when_no_subset_needs_it(tmp_path: Path) -> None:
    settings = load_settings([], data_dir=tmp_path, subsets=["bbh"], docker_host="unix:///x")
    out = io.StringIO()
    await show_health(settings, out)
    assert "judge: - (not needed" in out.getvalue()


def test_status_shows_the_evaluation_under_way(tmp_path: Path) -> None:
    settings = load_settings([], data_dir=tmp_path, subsets=["bbh", "mmsu"], samples_per_subset=25)
    store = Store.open(settings.database_path)
    try:
        store.record_submission(Submission(uid=3, hotkey="5Run", repo_id="ns/run", revision="ab" * 20))
        claim = store.claim_next()
        assert claim is not None
        store.save_sample(claim.evaluation_id, SampleResult("bbh", "1", 1.0, "yes"))
        store.save_sample(claim.evaluation_id, SampleResult("bbh", "2", 0.0, "", "timeout"))
    finally:
        store.close()
    out = io.StringIO()
    assert show_status(settings, out) == 0
    assert "evaluating uid 3 ns/run@abababab: 2 of at most 50 samples done (1 failed)" in out.getvalue()


async def test_status_command_prints_both_parts(
    tmp_path: Path, docker_host: str, capsys: pytest.CaptureFixture[str]
) -> None:
    Store.open(tmp_path / "var" / "validator.db").close()
    async with models_server() as url:
        argv = ["status", "--data-dir", str(tmp_path / "var"), "--docker-host", docker_host]
        argv += ["--subsets", '["commoneval"]', "--judge", "url", "--judge-url", url, "--log-format", "json"]
        # The command runs its own event loop: run it off this test's loop, which serves the judge.
        code = await asyncio.to_thread(cli_main, argv)
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "weights: never set" in printed and "docker: ok" in printed and "judge: ok" in printed
