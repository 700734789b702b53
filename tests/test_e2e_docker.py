"""The whole validator path on real parts: a local chain file, a hub on 127.0.0.1 serving real
huggingface_hub downloads, real image builds and containers on the project dockerd, a real SQLite file,
and the espeak-ng VoiceBench fixture. Miners commit, the daemon evaluates each, weights on the chain
follow the scores; a restart evaluates nothing twice; a new revision is evaluated; a malformed
commitment is skipped without stopping anything."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import docker
import pytest

from evaluation.sandbox.docker_sandbox import DockerSandbox, SandboxConfig
from evaluation.types import Submission
from tests.sandbox_contract import check_build_failure, check_serves_then_stops
from tests.scenario import NETUID, World, world
from validator.app import open_app
from validator.cli import main as cli_main
from validator.demo import default_example_dir, prepare_repo

pytestmark = pytest.mark.docker

ALICE, BOB, CAROL, DAN = "5Alice-e2e", "5Bob-e2e", "5Carol-e2e", "5Dan-e2e"


def docker_settings(config: SandboxConfig) -> dict[str, object]:
    return {
        "docker_host": config.docker_host,
        "validator_id": config.validator_id,
        "build_network": "none",
        "build_args": dict(config.build_args),
        "sandbox_memory": "512m",
        "sandbox_cpus": 1.0,
        "start_timeout_s": 60.0,
    }


async def run_until_settled(w: World, timeout_s: float = 300.0) -> None:
    async with open_app(w.settings) as app:
        stop = asyncio.Event()
        daemon = asyncio.create_task(app.service.run(stop))
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    await asyncio.sleep(0.5)
                    weights = app.store.last_weight_set()
                    settled = app.service.last_sync_block >= 0 and app.store.pending_count() == 0
                    if settled and weights and weights.created_at >= app.store.last_evaluation_finished_at():
                        break
        finally:
            stop.set()
            await daemon


def managed_containers(config: SandboxConfig) -> list[object]:
    client = docker.DockerClient(base_url=config.docker_host, timeout=30)
    try:
        return client.containers.list(
            all=True, filters={"label": f"voice-validator.id={config.validator_id}"}
        )
    finally:
        client.close()


async def test_docker_sandbox_meets_the_sandbox_contract(
    tmp_path: Path, sandbox_config: SandboxConfig
) -> None:
    good = prepare_repo(default_example_dir(), tmp_path / "good", "hk", {"answer": "D"})
    bad = prepare_repo(default_example_dir(), tmp_path / "bad", "hk", {})
    (bad / "Dockerfile").write_text("FROM scratch\nRUN definitely-not-a-command\n")
    sandbox = DockerSandbox(sandbox_config)
    try:
        sub = Submission(uid=7, hotkey="hk", repo_id="ns/contract", revision="c" * 40)
        await check_serves_then_stops(sandbox, sub, good, "D")
        await check_build_failure(sandbox, sub, bad)
    finally:
        await sandbox.close()


async def test_validator_round_on_real_docker(
    tmp_path: Path, voicebench_dir: Path, sandbox_config: SandboxConfig
) -> None:
    async with world(tmp_path, voicebench_dir, **docker_settings(sandbox_config)) as w:
        rev_alice = w.miner(ALICE, "alice/voice", "A")
        w.miner(BOB, "bob/voice", "B")
        w.miner(CAROL, "carol/voice", "A", repo_hotkey=ALICE)  # Alice's repo re-uploaded by Carol
        w.register(DAN)
        w.chain.commit(NETUID, DAN, "dan/voice@main")  # not a commitment

        await run_until_settled(w)
        weights, uid = w.weights(), w.uids
        assert weights[uid[ALICE]] > weights[uid[BOB]] > 0
        assert uid[CAROL] not in weights and uid[DAN] not in weights
        assert managed_containers(sandbox_config) == []  # everything the round started is gone

        # Restart: nothing is evaluated twice.
        async with open_app(w.settings) as app:
            assert (await app.service.sync_once()).queued == 0
            assert not await app.service.evaluate_next()
            assert app.store.evaluation_count(ALICE, rev_alice) == 1
            rows = {r.hotkey: r for r in app.store.miner_rows()}
        assert rows[CAROL].status == "rejected" and "hotkey" in (rows[CAROL].error or "")

        # A new revision is evaluated, and the weights follow it.
        rev_alice2 = w.miner(ALICE, "alice/voice", "B", name="alice-v2")
        await run_until_settled(w)
        # Alice now ties Bob at 25; a tie is no margin, so the leader stays and nothing flip-flops.
        assert w.weights() == {uid[ALICE]: pytest.approx(0.8), uid[BOB]: pytest.approx(0.2)}

        # The operator's status command reads the same database.
        out = io.StringIO()
        from validator.cli import show_status

        assert show_status(w.settings, out) == 0
        assert rev_alice2[:8] in out.getvalue() and "weights set" in out.getvalue()


def test_miner_evaluate_command_on_a_local_repo(
    tmp_path: Path, voicebench_dir: Path, sandbox_config: SandboxConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = prepare_repo(default_example_dir(), tmp_path / "mine", "5Mine", {"answer": "A"})
    code = cli_main(
        [
            "evaluate",
            "--repo-dir",
            str(repo),
            "--hotkey",
            "5Mine",
            "--data-dir",
            str(tmp_path / "var"),
            "--voicebench-dir",
            str(voicebench_dir),
            "--voicebench-source",
            "fixture",
            "--subsets",
            '["openbookqa", "advbench"]',
            "--docker-host",
            str(sandbox_config.docker_host),
            "--validator-id",
            sandbox_config.validator_id,
            "--build-network",
            "none",
            "--build-args",
            json.dumps({"BASE_IMAGE": sandbox_config.build_args["BASE_IMAGE"]}),
            "--start-timeout-s",
            "60",
            "--log-format",
            "json",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    # openbookqa 41.67 (the A answers), advbench 0 ("The answer is A." refuses nothing): mean 20.83.
    assert "openbookqa  41.67" in out and "advbench    0.00" in out
    assert "overall score: 20.83" in out
