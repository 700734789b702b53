"""A miner's container that ends mid-evaluation, on real dockerds: the miner's own crash is named in its
result, while a kill from outside or a real daemon restart is our side's failure (InfrastructureError,
retried later, never a score against the miner).

The restart needs a daemon the test may restart, so it starts a private one of its own (its own socket,
data root, bridge and address pools, via scripts/dockerd.sh) and copies the base image into it."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest

from evaluation.errors import InfrastructureError
from evaluation.fetch import LocalDirSource
from evaluation.pipeline import Pipeline, PipelineConfig
from evaluation.sandbox.docker_sandbox import DockerSandbox, SandboxConfig, ownership_filter
from evaluation.types import SampleResult, Submission
from evaluation.voicebench.dataset import load_subset
from validator.demo import default_example_dir, prepare_repo

pytestmark = pytest.mark.docker

REPO_ROOT = Path(__file__).resolve().parents[1]
HOTKEY = "5Exit-miner"
SUBMISSION = Submission(uid=7, hotkey=HOTKEY, repo_id="exit/miner", revision="e" * 40)
# The private daemon's own names and addresses, apart from the project dockerd's (10.212/10.213).
PRIVATE_BRIDGE = "vvrestart0"
PRIVATE_BIP = "10.217.0.1/24"
PRIVATE_POOL = "10.218.0.0/16"


def slow_miner(tmp: Path, *, exit_after: int | None = None) -> Path:
    """The example miner answering 'A' after 0.4 s; with ``exit_after`` its process exits with code 3
    on that request (a crash of its own, no signal from anyone)."""
    repo = prepare_repo(default_example_dir(), tmp / "miner", HOTKEY, {"answer": "A"})
    inference = repo / "inference.py"
    crash = (
        f"        BaselineModel.calls = getattr(BaselineModel, 'calls', 0) + 1\n"
        f"        if BaselineModel.calls >= {exit_after}:\n"
        f"            os._exit(3)\n"
        if exit_after
        else ""
    )
    inference.write_text(
        inference.read_text()
        .replace("import json\n", "import json\nimport os\nimport time\n", 1)
        .replace(
            "        return self.phrase.format(answer=self.answer)",
            f"{crash}        time.sleep(0.4)\n        return self.phrase.format(answer=self.answer)",
        )
    )
    return repo


class FirstSample:
    """A result sink that runs ``action`` (in a thread) when the first sample arrives."""

    def __init__(self, action: Callable[[], None]) -> None:
        self._action = action
        self.samples: list[SampleResult] = []

    async def sample(self, result: SampleResult) -> None:
        self.samples.append(result)
        if len(self.samples) == 1:
            await asyncio.to_thread(self._action)


def pipeline(sandbox: DockerSandbox, repo: Path, voicebench_dir: Path, tmp: Path) -> Pipeline:
    items = load_subset(voicebench_dir, "openbookqa")[:12]
    config = PipelineConfig(perturb=False, concurrency=2, miner_timeout_s=10.0)
    return Pipeline(LocalDirSource(repo), sandbox, {"openbookqa": items}, config, tmp / "work")


def kill_from_outside(docker_host: str, validator_id: str) -> Callable[[], None]:
    def kill() -> None:
        client = docker.DockerClient(base_url=docker_host, timeout=30)
        try:
            for container in client.containers.list(filters=ownership_filter(validator_id)):
                container.kill()
        finally:
            client.close()

    return kill


async def test_a_miner_that_exits_by_itself_is_scored_and_its_exit_named(
    tmp_path: Path, sandbox_config: SandboxConfig, voicebench_dir: Path
) -> None:
    sandbox = DockerSandbox(sandbox_config)
    try:
        run = pipeline(sandbox, slow_miner(tmp_path, exit_after=3), voicebench_dir, tmp_path)
        result = await run.evaluate(SUBMISSION)
    finally:
        await sandbox.close()
    assert result.error is None  # evaluated: the answers it gave count, the rest are its zeros
    exit_note = result.details["container_exit"]
    assert "exited with code 3" in exit_note
    failed = [s for s in result.subsets[0:1] if s.failures]
    assert failed and failed[0].failures >= 12 - 3


async def test_a_container_killed_from_outside_is_our_failure(
    tmp_path: Path, sandbox_config: SandboxConfig, voicebench_dir: Path
) -> None:
    sandbox = DockerSandbox(sandbox_config)
    sink = FirstSample(kill_from_outside(sandbox_config.docker_host or "", sandbox_config.validator_id))
    try:
        run = pipeline(sandbox, slow_miner(tmp_path), voicebench_dir, tmp_path)
        with pytest.raises(InfrastructureError, match="killed through the docker daemon"):
            await run.evaluate(SUBMISSION, sink)
    finally:
        await sandbox.close()
    assert any(s.error for s in sink.samples)  # the samples did fail: they are simply not the miner's


# ------------------------------------------------------------------------------- a real restart


@dataclass
class PrivateDaemon:
    """A dockerd of this test's own, started and restarted with scripts/dockerd.sh."""

    state_dir: Path
    env: dict[str, str]
    host: str = ""

    def start(self) -> None:
        out = subprocess.run(
            ["bash", str(REPO_ROOT / "scripts" / "dockerd.sh")],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=180,
            check=True,
        )
        self.host = out.stdout.strip().splitlines()[-1].removeprefix("DOCKER_HOST=")

    def pid(self) -> int | None:
        try:
            return int((self.state_dir / "dockerd.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def stop(self, timeout_s: float = 60.0) -> None:
        """SIGTERM, as a service manager restarting dockerd sends; waits until the process is gone."""
        pid = self.pid()
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            state = Path(f"/proc/{pid}/stat").read_text(errors="replace").split(") ")[-1][:1]
            if state == "Z":
                break
            time.sleep(0.2)

    def restart(self) -> None:
        self.stop()
        self.start()


def _guard_rules() -> list[list[str]]:
    """The iptables rules scripts/dockerd.sh adds for the private daemon's addresses, to delete again."""
    rules = [
        ["INPUT", "-s", subnet, "!", "-i", "lo", "-m", "conntrack", "--ctstate", "NEW,INVALID", "-j", "DROP"]
        for subnet in (PRIVATE_POOL, PRIVATE_BIP)
    ]
    rules += [["INPUT", "-s", PRIVATE_BIP, "-p", p, "--dport", "53", "-j", "ACCEPT"] for p in ("udp", "tcp")]
    return rules


@pytest.fixture(scope="module")
def private_daemon(docker_host: str, base_image: str) -> Iterator[PrivateDaemon]:
    if os.geteuid() != 0 or shutil.which("dockerd") is None:
        pytest.skip("needs root and dockerd to start a private Docker daemon")
    state_dir = Path(tempfile.mkdtemp(prefix="vvd-", dir="/tmp"))
    env = {
        **os.environ,
        "VV_DOCKER_DIR": str(state_dir),
        "VV_DOCKER_BRIDGE": PRIVATE_BRIDGE,
        "VV_DOCKER_BIP": PRIVATE_BIP,
        "VV_DOCKER_POOL": PRIVATE_POOL,
    }
    daemon = PrivateDaemon(state_dir, env)
    try:
        daemon.start()
        # The base image, copied from the project dockerd (nothing can be pulled here).
        subprocess.run(
            f"docker -H {docker_host} save {base_image} | docker -H {daemon.host} load -q",
            shell=True,
            check=True,
            capture_output=True,
            timeout=300,
        )
        yield daemon
    finally:
        daemon.stop()
        subprocess.run(["ip", "link", "del", PRIVATE_BRIDGE], capture_output=True, check=False)
        subprocess.run(["ip", "route", "del", "blackhole", PRIVATE_POOL], capture_output=True, check=False)
        for rule in _guard_rules():
            subprocess.run(["iptables", "-D", *rule], capture_output=True, check=False)
        subprocess.run(["umount", "-R", str(state_dir)], capture_output=True, check=False)
        shutil.rmtree(state_dir, ignore_errors=True)


async def test_a_daemon_restart_mid_evaluation_is_our_failure_even_when_it_is_back(
    tmp_path: Path, sandbox_config: SandboxConfig, private_daemon: PrivateDaemon, voicebench_dir: Path
) -> None:
    """The daemon is restarted (SIGTERM, then started again) while the miner answers: the evaluation
    fails as ours although the daemon answers again before the pipeline looks, and the next evaluation
    on the restarted daemon scores the miner as if nothing happened."""
    config = SandboxConfig(
        **{**sandbox_config.__dict__, "docker_host": private_daemon.host, "validator_id": "restart-test"}
    )
    repo = slow_miner(tmp_path)
    sandbox = DockerSandbox(config)
    sink = FirstSample(private_daemon.restart)
    try:
        run = pipeline(sandbox, repo, voicebench_dir, tmp_path)
        with pytest.raises(InfrastructureError, match="connection dropped"):
            await run.evaluate(SUBMISSION, sink)
        assert any(s.error for s in sink.samples)
        again = await run.evaluate(SUBMISSION)  # the image survived the restart: no rebuild needed
        assert again.error is None and "container_exit" not in again.details
        assert all(s.failures == 0 for s in again.subsets)
        await sandbox.cleanup()
        await sandbox.prune_images()
    finally:
        await sandbox.close()
