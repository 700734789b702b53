"""The daemon end to end on real parts except the container runtime: a local chain file, a real hub
server on 127.0.0.1 with real huggingface_hub downloads, a real SQLite file, the espeak-ng VoiceBench
fixture, and the in-process sandbox (the Docker version of this test is tests/test_e2e_docker.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from evaluation.voicebench.dataset import load_subset
from tests.fakes import InProcessSandbox
from tests.sandbox_contract import check_build_failure, check_serves_then_stops
from tests.scenario import NETUID, world
from validator.app import open_app
from validator.service import _supervise

ALICE_A, BOB_B, CAROL_COPY, DAN_BAD = "5Alice-miner", "5Bob-miner", "5Carol-miner", "5Dan-miner"


@pytest.fixture(scope="module")
def benchmark(voicebench_dir: Path) -> dict[str, list]:
    return {"openbookqa": load_subset(voicebench_dir, "openbookqa")}


async def test_fake_sandbox_meets_the_sandbox_contract(tmp_path: Path, voicebench_dir: Path) -> None:
    async with world(tmp_path, voicebench_dir) as w:
        from evaluation.types import Submission
        from validator.demo import default_example_dir, prepare_repo

        good = prepare_repo(default_example_dir(), tmp_path / "good", "hk", {"answer": "C"})
        bad = prepare_repo(default_example_dir(), tmp_path / "bad", "hk", {"broken": "build"})
        sandbox = InProcessSandbox()
        sub = Submission(uid=1, hotkey="hk", repo_id="ns/x", revision="f" * 40)
        await check_serves_then_stops(sandbox, sub, good, "C")
        await check_build_failure(sandbox, sub, bad)
        assert w.hub_url.startswith("http://127.0.0.1:")


async def test_round_restart_and_new_revision(tmp_path: Path, voicebench_dir: Path, benchmark: dict) -> None:
    async with world(tmp_path, voicebench_dir) as w:
        rev_a = w.miner(ALICE_A, "alice/voice", "A")
        w.miner(BOB_B, "bob/voice", "B")
        w.miner(CAROL_COPY, "carol/voice", "A", repo_hotkey=ALICE_A)  # a copy of Alice's repo
        w.register(DAN_BAD)
        w.chain.commit(NETUID, DAN_BAD, "not a commitment: " + "x" * 40)

        sandbox = InProcessSandbox()
        async with open_app(w.settings, sandbox=sandbox, benchmark=benchmark) as app:
            report = await app.service.sync_once()
            assert (report.queued, report.rejected) == (3, 1)  # Dan's string is skipped, not fatal
            while await app.service.evaluate_next():
                pass
            result = await app.service.set_weights_once()
            assert result is not None and result.success

            standings = app.store.standings(await w.chain.neurons(NETUID))
            scores = {st.uid: st.scores[-1] for st in standings if st.scores}
            rows = {r.hotkey: r for r in app.store.miner_rows()}
        weights = w.weights()
        uid = w.uids
        # The fixture's answer key has more A's than B's: a constant-A model must outscore constant-B.
        assert scores[uid[ALICE_A]] > scores[uid[BOB_B]] > 0
        assert weights[uid[ALICE_A]] > weights[uid[BOB_B]] > 0
        assert rows[CAROL_COPY].status == "rejected" and "hotkey" in (rows[CAROL_COPY].error or "")
        assert uid[CAROL_COPY] not in weights and uid[DAN_BAD] not in weights
        assert {s.hotkey for s in sandbox.started} == {ALICE_A, BOB_B}  # the copy never got built

        # A restart evaluates nothing again.
        async with open_app(w.settings, sandbox=sandbox, benchmark=benchmark) as app:
            assert (await app.service.sync_once()).queued == 0
            assert not await app.service.evaluate_next()
            assert app.store.evaluation_count(ALICE_A, rev_a) == 1

            # A new revision from Alice (now answering B) is evaluated, and her weight follows it.
            rev_a2 = w.miner(ALICE_A, "alice/voice", "B", name="alice-v2")
            assert (await app.service.sync_once()).queued == 1
            assert await app.service.evaluate_next()
            assert app.store.evaluation_count(ALICE_A, rev_a2) == 1
            assert await app.service.set_weights_once() is not None
        # Alice now ties Bob at 25; a tie is no margin, so the leader stays and nothing flip-flops.
        assert w.weights() == {uid[ALICE_A]: pytest.approx(0.8), uid[BOB_B]: pytest.approx(0.2)}


async def test_daemon_loop_settles_and_survives_a_broken_miner(
    tmp_path: Path, voicebench_dir: Path, benchmark: dict
) -> None:
    async with world(tmp_path, voicebench_dir) as w:
        w.miner(ALICE_A, "alice/voice", "A")
        w.miner(BOB_B, "bob/voice", "B", broken="start")
        async with open_app(w.settings, sandbox=InProcessSandbox(), benchmark=benchmark) as app:
            stop = asyncio.Event()
            daemon = asyncio.create_task(app.service.run(stop))
            try:
                async with asyncio.timeout(60):
                    while not w.weights() or app.store.pending_count():
                        await asyncio.sleep(0.2)
            finally:
                stop.set()
                await daemon
            rows = {r.hotkey: r for r in app.store.miner_rows()}
        assert rows[BOB_B].status == "rejected" and "StartFailed" in (rows[BOB_B].error or "")
        assert w.weights() == {w.uids[ALICE_A]: pytest.approx(1.0)}


async def test_interrupted_evaluation_resumes_after_restart(
    tmp_path: Path, voicebench_dir: Path, benchmark: dict
) -> None:
    async with world(tmp_path, voicebench_dir) as w:
        revision = w.miner(ALICE_A, "alice/voice", "A")
        async with open_app(w.settings, sandbox=InProcessSandbox(), benchmark=benchmark) as app:
            await app.service.sync_once()
            claim = app.store.claim_next()  # a worker took it, then the process died
            assert claim is not None
        async with open_app(w.settings, sandbox=InProcessSandbox(), benchmark=benchmark) as app:
            stop = asyncio.Event()
            daemon = asyncio.create_task(app.service.run(stop))
            try:
                async with asyncio.timeout(30):
                    while app.store.pending_count():
                        await asyncio.sleep(0.1)
            finally:
                stop.set()
                await daemon
            assert app.store.miner_rows()[0].status == "evaluated"
            # The interrupted evaluation was continued, not started over.
            assert app.store.evaluation_count(ALICE_A, revision) == 1


async def test_supervisor_restarts_a_failing_task(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("validator.service.MAX_RESTART_BACKOFF_S", 0.01)
    calls = 0
    finished = asyncio.Event()

    async def flaky() -> None:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise RuntimeError("chain hiccup")
        finished.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(_supervise("flaky", flaky))
    await asyncio.wait_for(finished.wait(), timeout=10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert calls == 3


async def test_evaluation_time_budget_fails_the_remaining_samples(tmp_path: Path, benchmark: dict) -> None:
    from evaluation.fetch import LocalDirSource
    from evaluation.pipeline import Pipeline, PipelineConfig
    from evaluation.types import Submission
    from validator.demo import default_example_dir, prepare_repo

    repo = prepare_repo(default_example_dir(), tmp_path / "repo", "hk", {"answer": "A"})
    config = PipelineConfig(evaluation_budget_s=1e-9, check_hotkey=False)
    pipeline = Pipeline(LocalDirSource(repo), InProcessSandbox(), benchmark, config, tmp_path / "work")
    result = await pipeline.evaluate(Submission(uid=1, hotkey="hk", repo_id="ns/m", revision="0" * 40))
    (subset,) = result.subsets
    assert subset.failures == subset.samples and result.score == 0.0


async def test_round_seed_follows_the_chain(tmp_path: Path, voicebench_dir: Path, benchmark: dict) -> None:
    async with world(tmp_path, voicebench_dir, round_blocks=10) as w:
        async with open_app(w.settings, sandbox=InProcessSandbox(), benchmark=benchmark) as app:
            first = await app.service.round_seed()
            assert await app.service.round_seed() == first  # same round, same seed
            w.chain.advance(10)
            second = await app.service.round_seed()
        assert second != first
        # Another validator reading the same chain derives the same seed.
        async with open_app(w.settings, sandbox=InProcessSandbox(), benchmark=benchmark) as other:
            assert await other.service.round_seed() == second


async def test_every_miner_of_a_round_gets_the_same_items_and_audio(
    tmp_path: Path, voicebench_dir: Path, benchmark: dict
) -> None:
    from evaluation.fetch import LocalDirSource
    from evaluation.pipeline import Pipeline, PipelineConfig

    config = PipelineConfig(samples_per_subset=5, perturb=True)
    pipeline = Pipeline(LocalDirSource(tmp_path), InProcessSandbox(), benchmark, config, tmp_path / "w")
    again = Pipeline(LocalDirSource(tmp_path), InProcessSandbox(), benchmark, config, tmp_path / "w")
    one, same, other = pipeline.round_items(7), again.round_items(7), again.round_items(8)
    ids = [i.item_id for i in one["openbookqa"]]
    assert len(ids) == 5 and ids == [i.item_id for i in same["openbookqa"]]
    assert all(
        a.audio.tobytes() == b.audio.tobytes()
        for a, b in zip(one["openbookqa"], same["openbookqa"], strict=True)
    )
    originals = {i.item_id: i.audio.tobytes() for i in benchmark["openbookqa"]}
    assert all(originals[i.item_id] != i.audio.tobytes() for i in one["openbookqa"])  # perturbed
    assert [i.item_id for i in other["openbookqa"]] != ids or any(
        a.audio.tobytes() != b.audio.tobytes()
        for a, b in zip(one["openbookqa"], other["openbookqa"], strict=True)
    )


async def test_pipeline_scores_judge_columns_and_never_blames_a_miner_for_an_outage(
    tmp_path: Path, voicebench_dir: Path
) -> None:
    import aiohttp

    from evaluation.errors import InfrastructureError
    from evaluation.fetch import LocalDirSource
    from evaluation.judge.client import JudgeClient
    from evaluation.judge.port import JudgeInfo
    from evaluation.pipeline import Pipeline, PipelineConfig
    from evaluation.types import Submission
    from tests.judge_fake import FakeJudge, reply, status
    from validator.demo import default_example_dir, prepare_repo

    benchmark = {"commoneval": load_subset(voicebench_dir, "commoneval")}
    repo = prepare_repo(default_example_dir(), tmp_path / "repo", "hk", {"answer": "A"})
    sub = Submission(uid=1, hotkey="hk", repo_id="ns/m", revision="0" * 40)
    config = PipelineConfig(check_hotkey=False, perturb=False)
    info = JudgeInfo("fake-judge", "r1", "open-qa-v1")
    async with aiohttp.ClientSession() as session:
        async with FakeJudge(default=reply("4", "4", "3")) as judge:
            client = JudgeClient(judge.url, session, model="fake-judge", info=info, backoff_s=0.01)
            pipeline = Pipeline(
                LocalDirSource(repo), InProcessSandbox(), benchmark, config, tmp_path / "w", judge=client
            )
            result = await pipeline.evaluate(sub)
        assert result.score == pytest.approx(100 * (11 / 3) / 5)  # VoiceBench: mean 3.67 x 20
        async with FakeJudge(default=status(503)) as down:
            client = JudgeClient(
                down.url, session, model="fake-judge", info=info, backoff_s=0.01, retries=1, max_wait_s=1
            )
            pipeline = Pipeline(
                LocalDirSource(repo), InProcessSandbox(), benchmark, config, tmp_path / "w", judge=client
            )
            with pytest.raises(InfrastructureError):  # retried later by the service, never scored
                await pipeline.evaluate(sub)


async def test_the_miner_is_not_kept_waiting_while_the_judge_works(tmp_path: Path) -> None:
    """With one request in flight to the miner, every answer reaches the judge before any verdict is
    back: an answer is judged after the miner's slot is given back (the judge holds each request until
    all have arrived, which never happens if judging holds the slot)."""
    import aiohttp
    import numpy as np

    from evaluation.fetch import LocalDirSource
    from evaluation.judge.client import JudgeClient
    from evaluation.judge.port import JudgeInfo
    from evaluation.pipeline import Pipeline, PipelineConfig
    from evaluation.types import Submission
    from evaluation.voicebench.dataset import Item
    from tests.judge_fake import FakeJudge, reply
    from validator.demo import default_example_dir, prepare_repo

    n = 3
    all_arrived = asyncio.Event()

    async def hold_until_all_arrived(body: dict) -> object:
        if judge.requests == n:
            all_arrived.set()
        await asyncio.wait_for(all_arrived.wait(), 5)
        return await reply("4")(body)

    audio = np.zeros(1600, np.float32)
    items = {"commoneval": [Item("commoneval", f"q{i}", audio, 16_000, "Hi.", None, {}) for i in range(n)]}
    repo = prepare_repo(default_example_dir(), tmp_path / "repo", "hk", {"answer": "A"})
    sub = Submission(uid=1, hotkey="hk", repo_id="ns/m", revision="0" * 40)
    config = PipelineConfig(check_hotkey=False, perturb=False, concurrency=1)
    info = JudgeInfo("fake-judge", "r1", "open-qa-v1")
    async with aiohttp.ClientSession() as session, FakeJudge(default=hold_until_all_arrived) as judge:
        client = JudgeClient(judge.url, session, model="fake-judge", info=info, retries=0)
        source, sandbox = LocalDirSource(repo), InProcessSandbox()
        pipeline = Pipeline(source, sandbox, items, config, tmp_path / "w", judge=client)
        result = await pipeline.evaluate(sub)
    assert result.ok and result.score == pytest.approx(80.0)
    assert judge.max_in_flight == n


async def test_shutdown_ends_a_task_that_swallowed_its_cancellation() -> None:
    """Python 3.11's wait_for can drop a cancellation; the daemon's shutdown must still end the task."""
    from validator.service import _cancel_all

    swallowed = asyncio.Event()

    async def stubborn() -> None:
        while True:
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                if swallowed.is_set():
                    raise
                swallowed.set()  # lose the first cancellation, as the race in wait_for does

    task = asyncio.create_task(stubborn(), name="stubborn")
    await asyncio.sleep(0.02)
    await asyncio.wait_for(_cancel_all([task]), timeout=5)
    assert swallowed.is_set() and task.cancelled()
