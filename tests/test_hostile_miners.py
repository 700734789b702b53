"""Hostile miners through the real validator: a local chain, a hub on 127.0.0.1, real builds and containers
on the project dockerd, the daemon's own loop, a real SQLite file.

One round evaluates an honest control miner next to one hostile miner per attack (tests/hostile_miners/
holds their server and Dockerfiles). Each test then checks, for its attack, that the validator kept
running (the round settled, the control was scored and got the weight), that the host and the other
containers were unharmed (listeners the test opened got no connection, the host could still spawn
processes, nothing of the round is left running, the validator's memory stayed bounded), and that the
hostile miner got a recorded failure reason and no weight.

Network traffic stays on this machine: containers the round starts, listeners the test opens on
127.0.0.1's host, on 0.0.0.0 and on a 198.51.100.x address of a bridge it creates.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import io
import json
import os
import re
import secrets
import shutil
import socket
import sqlite3
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import docker
import numpy as np
import pytest

from evaluation.errors import MinerResponseError
from evaluation.localhub import publish
from evaluation.miner_client import MinerClient
from evaluation.sandbox.docker_sandbox import (
    IMAGE_REPOSITORY,
    LABEL_ID,
    LABEL_UID,
    DockerSandbox,
    SandboxConfig,
    ownership_filter,
)
from evaluation.types import SampleResult, Submission
from tests.scenario import World, world
from validator.app import open_app
from validator.demo import default_example_dir, prepare_repo
from validator.store import MinerRow

pytestmark = pytest.mark.docker

HOSTILE = Path(__file__).resolve().parent / "hostile_miners"
SAMPLES = 4
MINER_TIMEOUT_S = 3.0
START_TIMEOUT_S = 20.0
PIDS_LIMIT = 64
MAX_REPO_BYTES = 1_000_000
RESPONSE_CAP = 4 * 2**20
DNS_NAME = "hostile-probe.invalid"  # reserved: never a real name, whatever resolver sees it
CONTROL = "5H-control"
# Build-time bounds of the round: small, so that the hostile builds reach them within seconds.
BUILD_PIDS_LIMIT = 128
BUILD_DISK_LIMIT = "300m"
# A hostile Dockerfile: the example's layout with one hostile step (build_probe.py is copied beside it).
BUILD_TEMPLATE = """ARG BASE_IMAGE=python:3.11-slim
FROM ${{BASE_IMAGE}}
WORKDIR /app
COPY build_probe.py /build_probe.py
{step}
COPY inference.py server.py hotkey.txt ./
COPY model/ ./model/
CMD ["python3", "server.py"]
"""


def gzip_bomb() -> bytes:
    """A small .tar.gz that ADD would unpack into 64 MiB of zeros."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        info = tarfile.TarInfo("zeros.bin")
        info.size = 64 << 20
        archive.addfile(info, io.BytesIO(bytes(info.size)))
    return buffer.getvalue()


@dataclass(frozen=True)
class Case:
    """One miner of the round: its repo is the example miner with these changes."""

    name: str
    config: dict[str, Any] = field(default_factory=dict)
    hostile_server: bool = True
    dockerfile: str | None = None
    dockerfile_text: str | None = None  # a Dockerfile written by the test (BUILD_TEMPLATE and a step)
    repo_hotkey: str | None = None
    extra_files: dict[str, bytes] = field(default_factory=dict)

    @property
    def hotkey(self) -> str:
        return f"5H-{self.name}"


class Listener:
    """A TCP listener that counts accepted connections, or a UDP one that counts datagrams."""

    def __init__(self, address: str, kind: int = socket.SOCK_STREAM) -> None:
        self.address = address
        self.count = 0
        self._kind = kind
        self._socket = socket.socket(socket.AF_INET, kind)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((address, 0))
        if kind == socket.SOCK_STREAM:
            self._socket.listen(16)
        self._socket.settimeout(0.2)
        self.port = int(self._socket.getsockname()[1])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                if self._kind == socket.SOCK_STREAM:
                    connection, _ = self._socket.accept()
                    connection.close()
                else:
                    self._socket.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            self.count += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._socket.close()


@dataclass
class Outcome:
    """What the round left behind, for the per-attack tests."""

    uids: dict[str, int]
    rows: dict[str, MinerRow]
    samples: dict[str, list[SampleResult]]
    weights: dict[int, float]
    images_by_uid: dict[int, int]
    leftover_containers: list[str]
    leftover_networks: list[str]
    host_spawns: int
    host_spawn_failures: list[str]
    rss_growth_mib: float
    threads_left: list[str]
    listeners: dict[str, int]
    listener_ports: dict[str, int]
    probe_address: str | None
    duration_s: float
    settle_error: str | None = None

    def row(self, case: str) -> MinerRow:
        return self.rows[f"5H-{case}"]

    def report(self, case: str) -> dict[str, Any]:
        """The last REPORT line a start-up mode printed, as the recorded StartFailed error quotes it."""
        error = self.row(case).error or ""
        lines = [line for line in error.splitlines() if line.startswith("REPORT ")]
        assert lines, f"no report in the recorded error: {error!r}"
        report: dict[str, Any] = json.loads(lines[-1][len("REPORT ") :])
        return report


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def make_probe_interface() -> tuple[str, str] | None:
    """A bridge with a 198.51.100.x address (documentation range), or None without root and iproute2."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return None
    name = f"vvh{secrets.token_hex(3)}"
    address = f"198.51.100.{secrets.randbelow(250) + 2}"
    subprocess.run(["ip", "link", "add", name, "type", "bridge"], check=True)
    subprocess.run(["ip", "addr", "add", f"{address}/32", "dev", name], check=True)
    subprocess.run(["ip", "link", "set", name, "up"], check=True)
    return name, address


def publish_case(w: World, case: Case) -> None:
    src = prepare_repo(
        default_example_dir(), w.root / "src" / case.name, case.repo_hotkey or case.hotkey, case.config
    )
    if case.hostile_server:
        shutil.copyfile(HOSTILE / "hostile_server.py", src / "server.py")
    if case.dockerfile:
        shutil.copyfile(HOSTILE / case.dockerfile, src / "Dockerfile")
    if case.dockerfile_text:
        (src / "Dockerfile").write_text(case.dockerfile_text)
        shutil.copyfile(HOSTILE / "build_probe.py", src / "build_probe.py")
    for rel, data in case.extra_files.items():
        (src / rel).write_bytes(data)
    repo_id = f"hostile/{case.name.replace('_', '-')}"
    revision = publish(w.hub_root, repo_id, src)
    w.register(case.hotkey)
    w.commit(case.hotkey, repo_id, revision)


def build_cases(base_image: str, probe_address: str | None, listeners: dict[str, Listener]) -> list[Case]:
    """Miners whose attack is in their Dockerfile: refused before the daemon sees it, or bounded while
    it builds."""
    loopback = listeners["loopback_tcp"].port
    probe: dict[str, Any] = {
        "gateway_tcp": [listeners["host_tcp"].port],
        "via_proxy": [f"http://127.0.0.1:{loopback}/", f"http://localhost:{loopback}/"],
    }
    if probe_address is not None:
        probe["tcp"] = [[probe_address, listeners["outside_tcp"].port]]
        probe["via_proxy"].append(f"http://{probe_address}:{listeners['outside_tcp'].port}/")
    step = BUILD_TEMPLATE.format
    return [
        Case("build_add_url", dockerfile_text=step(step=f"ADD http://127.0.0.1:{loopback}/secret /secret")),
        Case("build_copy_from", dockerfile_text=step(step=f"COPY --from={base_image} /etc/hostname /x")),
        Case(
            "build_archive",
            dockerfile_text=step(step="ADD bomb.tar.gz /opt/"),
            extra_files={"bomb.tar.gz": gzip_bomb()},
        ),
        Case(
            "build_egress",
            dockerfile_text=step(step=f"RUN python3 /build_probe.py probe '{json.dumps(probe)}'"),
        ),
        # Backtracking bait for a regex-based matcher: the validator's own matcher takes milliseconds.
        Case(
            "build_dockerignore",
            {"mode": "idk"},
            extra_files={".dockerignore": ("**/" * 150 + "a*" * 200 + "b\n").encode() * 20},
        ),
        Case("build_fork_bomb", dockerfile_text=step(step="RUN python3 /build_probe.py fork 5000")),
        Case("build_disk_fill", dockerfile_text=step(step="RUN python3 /build_probe.py fill 2048")),
    ]


def cases(base_image: str, probe_address: str | None, listeners: dict[str, Listener]) -> list[Case]:
    found = [
        *build_cases(base_image, probe_address, listeners),
        Case("control", {"answer": "A"}, hostile_server=False),
        Case("dns", {"mode": "probe", "dns": [DNS_NAME]}),
        Case(
            "gateway",
            {
                "mode": "probe",
                "gateway_tcp": [listeners["host_tcp"].port],
                "tcp": [["127.0.0.1", listeners["host_tcp"].port]],
            },
        ),
        Case("fork_bomb", {"mode": "fork_bomb"}),
        Case("memory_bomb", {"mode": "memory_bomb"}),
        Case("disk_fill", {"mode": "disk_fill"}),
        Case("huge", {"mode": "huge"}),
        Case("endless", {"mode": "endless"}),
        Case("slow", {"mode": "slow"}),
        Case("never_healthy", {"mode": "never_healthy"}),
        Case("nested_health", {"mode": "nested_health"}),
        Case("crash", {"mode": "crash_after", "requests": 2}),
        Case("wrong_hotkey", {"answer": "B"}, hostile_server=False, repo_hotkey=CONTROL),
        Case(
            "oversized",
            {"answer": "C"},
            hostile_server=False,
            extra_files={"model/weights.bin": os.urandom(2 * MAX_REPO_BYTES)},
        ),
        Case("privileged", {"mode": "privileged"}, dockerfile="privileged.Dockerfile"),
        Case("host_mount", {"answer": "D"}, hostile_server=False, dockerfile="host_mount.Dockerfile"),
    ]
    if probe_address is not None:
        found.append(
            Case(
                "egress_ip",
                {
                    "mode": "probe",
                    "tcp": [[probe_address, listeners["outside_tcp"].port]],
                    "udp": [[probe_address, listeners["outside_udp"].port]],
                },
            )
        )
    return found


async def settle(w: World, outcome: dict[str, Any], timeout_s: float = 240.0) -> None:
    """Run the daemon until every submission is finished and weights follow the last evaluation.

    Meanwhile, sample the validator's memory and prove the host can still start processes."""
    async with open_app(w.settings) as app:
        baseline = rss_mib()
        peak = baseline
        spawns, failures = 0, []
        stop = asyncio.Event()
        daemon = asyncio.create_task(app.service.run(stop))
        next_spawn = 0.0
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    await asyncio.sleep(0.2)
                    peak = max(peak, rss_mib())
                    if time.monotonic() >= next_spawn:
                        next_spawn = time.monotonic() + 1.0
                        try:
                            done = await asyncio.to_thread(subprocess.run, ["true"], timeout=10)
                            spawns += 1
                            if done.returncode != 0:
                                failures.append(f"exit {done.returncode}")
                        except (OSError, subprocess.SubprocessError) as exc:
                            failures.append(repr(exc))
                    assert not daemon.done(), "the daemon stopped on its own"
                    weights = app.store.last_weight_set()
                    settled = app.service.last_sync_block >= 0 and app.store.pending_count() == 0
                    if settled and weights and weights.created_at >= app.store.last_evaluation_finished_at():
                        break
        finally:
            stop.set()
            await daemon
        outcome["rows"] = {r.hotkey: r for r in app.store.miner_rows()}
        with sqlite3.connect(w.settings.database_path) as conn:
            evaluations = conn.execute(
                "SELECT e.id, s.hotkey FROM evaluations e JOIN submissions s ON s.id = e.submission_id"
            ).fetchall()
        outcome["samples"] = {hotkey: app.store.sample_results(eid) for eid, hotkey in evaluations}
        outcome.update(rss_growth_mib=peak - baseline, host_spawns=spawns, host_spawn_failures=failures)


@pytest.fixture(scope="module")
def hostile_round(
    tmp_path_factory: pytest.TempPathFactory, voicebench_dir: Path, sandbox_config: SandboxConfig
) -> Iterator[Outcome]:
    root = tmp_path_factory.mktemp("hostile")
    validator_id = f"{sandbox_config.validator_id}-hostile"
    interface = make_probe_interface()
    probe_address = interface[1] if interface else None
    listeners = {"host_tcp": Listener("0.0.0.0"), "loopback_tcp": Listener("127.0.0.1")}
    if probe_address:
        listeners["outside_tcp"] = Listener(probe_address)
        listeners["outside_udp"] = Listener(probe_address, socket.SOCK_DGRAM)
    client = docker.DockerClient(base_url=sandbox_config.docker_host, timeout=60)
    try:
        # The listeners work: the host itself reaches them (these connections are not counted below).
        for key in ("host_tcp", "loopback_tcp", "outside_tcp"):
            if key in listeners:
                with socket.create_connection((listeners[key].address, listeners[key].port), timeout=3):
                    pass
        time.sleep(0.5)
        counted_before = {key: listener.count for key, listener in listeners.items()}

        settings = {
            "docker_host": sandbox_config.docker_host,
            "validator_id": validator_id,
            # The production default: a network per build, out only through the egress proxy.
            "build_network": "proxy",
            "build_pids_limit": BUILD_PIDS_LIMIT,
            "build_disk_limit": BUILD_DISK_LIMIT,
            "build_args": dict(sandbox_config.build_args),
            "sandbox_memory": "256m",
            "sandbox_cpus": 1.0,
            "sandbox_pids_limit": PIDS_LIMIT,
            "start_timeout_s": START_TIMEOUT_S,
            "miner_timeout_s": MINER_TIMEOUT_S,
            "samples_per_subset": SAMPLES,
            "miner_concurrency": 4,
            "max_repo_bytes": MAX_REPO_BYTES,
            "max_attempts": 2,
        }
        outcome: dict[str, Any] = {}
        started = time.monotonic()

        async def run() -> World:
            async with world(root, voicebench_dir, **settings) as w:
                for case in cases(sandbox_config.build_args["BASE_IMAGE"], probe_address, listeners):
                    publish_case(w, case)
                await settle(w, outcome)
                return w

        threads_before = set(threading.enumerate())
        w = asyncio.run(run())  # returns once the loop's worker threads have all ended
        outcome["threads_left"] = sorted(t.name for t in set(threading.enumerate()) - threads_before)
        duration = time.monotonic() - started
        time.sleep(0.5)
        filters = ownership_filter(validator_id)
        # Tags and labels both name the uid an image was built for (a reused image may carry several).
        images_by_uid: dict[int, int] = {}
        seen = {image.id: image for image in client.images.list(IMAGE_REPOSITORY)}
        seen.update({image.id: image for image in client.images.list(filters=filters)})
        for image in seen.values():
            # Only this round's validator: other test sessions on the daemon use the same uids.
            ours = LABEL_UID in image.labels and image.labels.get(LABEL_ID) == validator_id
            uids = {int(image.labels[LABEL_UID])} if ours else set()
            for tag in image.tags:
                match = re.match(rf"{IMAGE_REPOSITORY}:{re.escape(validator_id)}-uid(\d+)-", tag)
                if match:
                    uids.add(int(match[1]))
            for uid in uids:
                images_by_uid[uid] = images_by_uid.get(uid, 0) + 1
        yield Outcome(
            uids=dict(w.uids),
            rows=outcome["rows"],
            samples=outcome["samples"],
            weights=w.weights(),
            images_by_uid=images_by_uid,
            leftover_containers=[c.name for c in client.containers.list(all=True, filters=filters)],
            leftover_networks=[n.name for n in client.networks.list(filters=filters)],
            host_spawns=outcome["host_spawns"],
            host_spawn_failures=outcome["host_spawn_failures"],
            rss_growth_mib=outcome["rss_growth_mib"],
            threads_left=outcome["threads_left"],
            listeners={key: listener.count - counted_before[key] for key, listener in listeners.items()},
            listener_ports={key: listener.port for key, listener in listeners.items()},
            probe_address=probe_address,
            duration_s=duration,
        )
    finally:
        for listener in listeners.values():
            listener.close()
        if interface:
            subprocess.run(["ip", "link", "del", interface[0]], check=False)

        async def remove_all() -> None:
            sandbox = DockerSandbox(dataclasses.replace(sandbox_config, validator_id=validator_id))
            try:
                await sandbox.cleanup()
                await sandbox.prune_images()
            finally:
                await sandbox.close()

        asyncio.run(remove_all())
        client.close()


# ------------------------------------------------------------------------------------------- checks


def assert_validator_and_host_unharmed(outcome: Outcome) -> None:
    """The daemon settled, the control was scored and holds all the weight, nothing leaked on the host."""
    control = outcome.rows[CONTROL]
    assert control.status == "evaluated" and control.error is None, control
    assert control.score is not None and control.score > 0, control
    assert outcome.weights == {outcome.uids[CONTROL]: pytest.approx(1.0)}
    control_samples = outcome.samples[CONTROL]
    assert len(control_samples) == SAMPLES and all(s.error is None for s in control_samples)
    assert outcome.leftover_containers == [] and outcome.leftover_networks == []
    assert outcome.host_spawns > 0 and outcome.host_spawn_failures == []
    assert outcome.listeners.get("host_tcp") == 0 and outcome.listeners.get("loopback_tcp") == 0
    assert outcome.rss_growth_mib < 100, f"validator RSS grew by {outcome.rss_growth_mib:.0f} MiB"


def assert_rejected(outcome: Outcome, case: str, kind: str, *fragments: str) -> str:
    """The miner's submission is 'rejected' with ``kind`` and the fragments in the recorded reason."""
    row = outcome.row(case)
    assert row.status == "rejected", row
    error = row.error or ""
    assert error.startswith(f"{kind}: "), error
    for fragment in fragments:
        assert fragment in error, f"{fragment!r} not in {error!r}"
    assert row.score == 0
    assert outcome.uids[row.hotkey] not in outcome.weights
    return error


def assert_failed_samples(outcome: Outcome, case: str, fragment: str, expected: int = SAMPLES) -> None:
    """The miner was evaluated, ``expected`` samples failed with ``fragment`` recorded, and it scored 0."""
    row = outcome.row(case)
    assert row.status == "evaluated" and row.score == 0, row
    samples = outcome.samples[row.hotkey]
    assert len(samples) == SAMPLES
    failed = [s for s in samples if s.error is not None]
    assert len(failed) == expected, samples
    for sample in failed:
        assert fragment in sample.error and sample.score == 0, sample  # type: ignore[operator]
    assert outcome.uids[row.hotkey] not in outcome.weights


def no_image_built(outcome: Outcome, case: str) -> None:
    uid = outcome.uids[f"5H-{case}"]
    assert outcome.images_by_uid.get(uid, 0) == 0, "an image was built for a repo rejected before the build"
    assert sum(outcome.images_by_uid.values()) > 0  # images of this round are visible to the check


# ------------------------------------------------------------------------------------------- tests


def test_round_settles_with_the_control_scored(hostile_round: Outcome) -> None:
    assert_validator_and_host_unharmed(hostile_round)
    print(
        f"hostile round: {hostile_round.duration_s:.0f}s, RSS growth {hostile_round.rss_growth_mib:.0f} MiB"
    )
    assert hostile_round.duration_s < 240


def test_egress_by_ip_is_blocked(hostile_round: Outcome) -> None:
    if hostile_round.probe_address is None:
        pytest.skip("needs root and iproute2 to create the probe interface (198.51.100.x)")
    assert_rejected(hostile_round, "egress_ip", "StartFailed", "exited with code 3")
    report = hostile_round.report("egress_ip")
    tcp = report[f"tcp {hostile_round.probe_address}:{hostile_round.listener_ports['outside_tcp']}"]
    assert tcp.startswith("failed"), report
    assert hostile_round.listeners["outside_tcp"] == 0
    assert hostile_round.listeners["outside_udp"] == 0  # the datagram it sent never arrived
    assert_validator_and_host_unharmed(hostile_round)


def test_dns_resolution_fails(hostile_round: Outcome) -> None:
    assert_rejected(hostile_round, "dns", "StartFailed", "exited with code 3")
    result = hostile_round.report("dns")[f"dns {DNS_NAME}"]
    # EAI_AGAIN (-3): no resolver answered at all. A reachable resolver would have said NXDOMAIN (-2).
    assert result.startswith("failed: gaierror -3"), result
    assert_validator_and_host_unharmed(hostile_round)


def test_host_services_are_unreachable_through_the_gateway(hostile_round: Outcome) -> None:
    assert_rejected(hostile_round, "gateway", "StartFailed", "exited with code 3")
    report = hostile_round.report("gateway")
    port = hostile_round.listener_ports["host_tcp"]
    gateway = [
        value for key, value in report.items() if key.startswith("gateway ") and key.endswith(f":{port}")
    ]
    assert gateway and not gateway[0].startswith("connected"), report
    assert not report[f"tcp 127.0.0.1:{port}"].startswith("connected"), report  # its own loopback
    assert hostile_round.listeners["host_tcp"] == 0
    assert_validator_and_host_unharmed(hostile_round)


def test_fork_bomb_is_held_by_the_pids_limit(hostile_round: Outcome) -> None:
    # The miner answers every request with what its bomb achieved: HTTP 500 "bomb: N forks then ...".
    assert_failed_samples(hostile_round, "fork_bomb", "bomb:")
    reason = hostile_round.samples["5H-fork_bomb"][0].error or ""
    assert "EAGAIN" in reason, reason  # the kernel refused a fork
    current, limit = reason.rsplit("pids ", 1)[1].split("/")
    assert int(limit) == PIDS_LIMIT and int(current) <= PIDS_LIMIT, reason
    assert_validator_and_host_unharmed(hostile_round)  # includes: the host could still spawn processes


def test_memory_bomb_is_oom_killed(hostile_round: Outcome) -> None:
    assert_rejected(hostile_round, "memory_bomb", "StartFailed", "killed: out of memory")
    assert_validator_and_host_unharmed(hostile_round)


def test_disk_filling_stops_at_the_caps(hostile_round: Outcome) -> None:
    assert_rejected(hostile_round, "disk_fill", "StartFailed", "exited with code 3")
    report = hostile_round.report("disk_fill")
    for folder in ("/", "/app", "/etc", "/var/tmp", "/home", "/root"):
        assert report[f"write {folder}"].startswith("failed"), report
    # /dev/shm and /tmp are RAM: a writer stops at the mount's size (ENOSPC) or is killed at the memory
    # limit the pages are charged to; either way far from the host's disk. The container lives to say so.
    for mount, cap_mib in (("shm", 256), ("tmp", 1024)):
        written_mib, result = report[mount]
        assert written_mib <= cap_mib, report
        assert "No space left" in result or result == "killed by signal 9", report
    assert_validator_and_host_unharmed(hostile_round)


def test_huge_declared_response_is_refused_unread(hostile_round: Outcome) -> None:
    assert_failed_samples(hostile_round, "huge", f"declares {8 * 2**30} bytes, cap is {RESPONSE_CAP}")
    assert_validator_and_host_unharmed(hostile_round)  # includes: RSS grew < 100 MiB


def test_endless_response_is_cut_at_the_cap(hostile_round: Outcome) -> None:
    assert_failed_samples(hostile_round, "endless", f"larger than the {RESPONSE_CAP}-byte cap")
    assert_validator_and_host_unharmed(hostile_round)


def test_slow_responses_time_out_one_by_one(hostile_round: Outcome) -> None:
    assert_failed_samples(hostile_round, "slow", f"no complete answer within {MINER_TIMEOUT_S:g}s")
    for sample in hostile_round.samples["5H-slow"]:
        assert sample.latency_s < MINER_TIMEOUT_S + 2, sample  # failed at the deadline, not later
    assert_validator_and_host_unharmed(hostile_round)


def test_deeply_nested_health_json_is_the_miners_fault_not_our_crash(hostile_round: Outcome) -> None:
    # json.loads raises RecursionError on it: once recorded as our crash and retried forever.
    assert_rejected(hostile_round, "nested_health", "StartFailed", "not ready", "not JSON")
    assert_validator_and_host_unharmed(hostile_round)


def test_never_healthy_is_start_failed_at_the_deadline(hostile_round: Outcome) -> None:
    assert_rejected(
        hostile_round,
        "never_healthy",
        "StartFailed",
        f"not ready after {START_TIMEOUT_S:.0f}s",
        "model_loaded=False",
    )
    assert_validator_and_host_unharmed(hostile_round)


def test_crash_mid_evaluation_fails_the_remaining_samples(hostile_round: Outcome) -> None:
    assert_failed_samples(hostile_round, "crash", "connection failed", expected=SAMPLES - 2)
    answered = [s for s in hostile_round.samples["5H-crash"] if s.error is None]
    assert [s.response for s in answered] == ["I do not know."] * 2
    assert_validator_and_host_unharmed(hostile_round)


def test_wrong_hotkey_is_rejected_before_any_build(hostile_round: Outcome) -> None:
    assert_rejected(hostile_round, "wrong_hotkey", "RepoInvalid", "hotkey")
    no_image_built(hostile_round, "wrong_hotkey")
    assert_validator_and_host_unharmed(hostile_round)


def test_oversized_repo_is_rejected_before_download(hostile_round: Outcome) -> None:
    assert_rejected(hostile_round, "oversized", "RepoInvalid", str(MAX_REPO_BYTES))
    no_image_built(hostile_round, "oversized")
    assert_validator_and_host_unharmed(hostile_round)


def test_privileged_dockerfile_gets_no_privileges(hostile_round: Outcome) -> None:
    assert_rejected(hostile_round, "privileged", "StartFailed", "exited with code 3")
    report = hostile_round.report("privileged")
    assert (report["uid"], report["euid"], report["gid"]) == (65534, 65534, 65534), report  # not USER 0:0
    assert int(report["CapEff"], 16) == 0 and int(report["CapBnd"], 16) == 0, report
    assert report["NoNewPrivs"] == "1", report
    assert report["sockets_present"] == [] and report["any_socket_file"] == [], report
    assert report["setuid_cat_shadow"].startswith("failed"), report
    assert report["write /etc"].startswith("failed"), report
    assert report["raw_socket"].startswith("failed"), report
    assert_validator_and_host_unharmed(hostile_round)


def test_declared_volume_is_a_capped_tmpfs_not_host_disk(hostile_round: Outcome) -> None:
    # A Dockerfile VOLUME would be a writable anonymous volume on the daemon's disk; the sandbox mounts
    # a small tmpfs there instead (sandbox-volume-tmpfs-size, 64m by default).
    report = hostile_round.report("privileged")
    written_mib, result = report["volume /data"]
    assert report["volume /data fs"] == "tmpfs"
    assert written_mib <= 64 and result != "limit reached", f"/data took {written_mib} MiB: {result}"


def test_build_time_host_mount_is_refused(hostile_round: Outcome) -> None:
    assert_rejected(hostile_round, "host_mount", "BuildFailed", "--mount")
    assert_validator_and_host_unharmed(hostile_round)


# ------------------------------------------------------------------- pickle as audio, on the client


async def test_pickled_audio_from_inference_is_refused_and_never_run(
    tmp_path: Path, sandbox_config: SandboxConfig
) -> None:
    marker, live_marker = tmp_path / "pwned-1", tmp_path / "pwned-2"
    hostile = prepare_repo(default_example_dir(), tmp_path / "pickle", "5H-pickle", {"mode": "pickle"})
    shutil.copyfile(HOSTILE / "hostile_server.py", hostile / "server.py")
    config_path = hostile / "model" / "config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "marker": str(marker)}))
    control = prepare_repo(default_example_dir(), tmp_path / "control", "5H-control", {"answer": "A"})
    config = dataclasses.replace(
        sandbox_config,
        validator_id=f"{sandbox_config.validator_id}-pickle",
        memory="256m",
        start_timeout_s=20,
    )
    sandbox = DockerSandbox(config)
    tone = np.sin(np.linspace(0, 200 * np.pi, 16_000)).astype(np.float32)
    try:
        bad = await sandbox.start(Submission(1, "5H-pickle", "hostile/pickle", "1" * 40), hostile)
        good = await sandbox.start(Submission(2, "5H-control", "hostile/control", "2" * 40), control)
        async with aiohttp.ClientSession() as session:
            client = MinerClient(bad.base_url, session, timeout_s=MINER_TIMEOUT_S)
            with pytest.raises(MinerResponseError, match="bad audio_data"):
                await client.inference(tone, 16_000)
            assert not marker.exists(), "the validator unpickled the miner's audio"

            # The payload is live: loading it with pickles allowed runs it (on a second marker path).
            body = {"audio_data": base64.b64encode(b"x").decode(), "sample_rate": 16_000}
            async with session.post(f"{bad.base_url}/api/v1/inference", json=body) as response:
                raw = base64.b64decode((await response.json())["audio_data"])
            np.load(io.BytesIO(raw.replace(b"pwned-1", b"pwned-2")), allow_pickle=True)
            assert live_marker.read_text() == "pwned" and not marker.exists()

            # The validator goes on: the control's voice-to-voice answer decodes as audio.
            echoed = await MinerClient(good.base_url, session, timeout_s=10).inference(tone, 16_000)
            assert echoed.text == "The answer is A." and np.allclose(echoed.audio, tone)
        await sandbox.stop(bad)
        await sandbox.stop(good)
        client_docker = docker.DockerClient(base_url=sandbox_config.docker_host, timeout=60)
        try:
            assert (
                client_docker.containers.list(all=True, filters=ownership_filter(config.validator_id)) == []
            )
        finally:
            client_docker.close()
    finally:
        await sandbox.cleanup()
        await sandbox.prune_images()
        await sandbox.close()


# ------------------------------------------------------------------------------- build-time attacks


def build_report(outcome: Outcome, case: str) -> dict[str, str]:
    """The BUILD-REPORT line a hostile RUN step printed, as the recorded BuildFailed quotes it."""
    error = outcome.row(case).error or ""
    lines = [line for line in error.splitlines() if line.startswith("BUILD-REPORT ")]
    assert lines, f"no build report in the recorded error: {error!r}"
    report: dict[str, str] = json.loads(lines[-1][len("BUILD-REPORT ") :])
    return report


def test_add_of_a_url_is_refused_before_the_daemon_fetches_it(hostile_round: Outcome) -> None:
    # ADD is fetched by the daemon in the host's own network namespace: a loopback service would be read.
    assert_rejected(hostile_round, "build_add_url", "DockerfileRefused", "line 5", "ADD")
    assert hostile_round.listeners["loopback_tcp"] == 0
    no_image_built(hostile_round, "build_add_url")
    assert_validator_and_host_unharmed(hostile_round)


def test_copy_from_another_image_on_the_daemon_is_refused(hostile_round: Outcome) -> None:
    assert_rejected(hostile_round, "build_copy_from", "DockerfileRefused", "line 5", "--from")
    no_image_built(hostile_round, "build_copy_from")
    assert_validator_and_host_unharmed(hostile_round)


def test_add_of_a_local_archive_is_refused(hostile_round: Outcome) -> None:
    assert_rejected(hostile_round, "build_archive", "DockerfileRefused", "line 5", "archive")
    no_image_built(hostile_round, "build_archive")
    assert_validator_and_host_unharmed(hostile_round)


def test_a_build_step_reaches_nothing_but_the_proxy_and_the_proxy_refuses(hostile_round: Outcome) -> None:
    assert_rejected(hostile_round, "build_egress", "BuildFailed", "BUILD-REPORT")
    report = build_report(hostile_round, "build_egress")
    assert report["proxy"].startswith("http://"), report  # the build's only way out was offered
    host_port = hostile_round.listener_ports["host_tcp"]
    gateway = [v for k, v in report.items() if k.startswith("gateway ") and k.endswith(f":{host_port}")]
    assert gateway and gateway[0].startswith("failed"), report
    through_proxy = {k: v for k, v in report.items() if k.startswith("proxy http")}
    assert through_proxy and all(v.startswith("failed") for v in through_proxy.values()), report
    if hostile_round.probe_address is not None:
        direct = report[f"tcp {hostile_round.probe_address}:{hostile_round.listener_ports['outside_tcp']}"]
        assert direct.startswith("failed"), report
        assert hostile_round.listeners["outside_tcp"] == 0
    assert hostile_round.listeners["loopback_tcp"] == 0
    assert_validator_and_host_unharmed(hostile_round)


def test_a_fork_bomb_in_a_build_step_stops_at_the_build_pids_limit(hostile_round: Outcome) -> None:
    assert_rejected(hostile_round, "build_fork_bomb", "BuildFailed", "BUILD-REPORT")
    report = build_report(hostile_round, "build_fork_bomb")
    assert int(report["forked"]) < BUILD_PIDS_LIMIT and report["failure"] == "errno 11", report
    assert_validator_and_host_unharmed(hostile_round)


def test_a_build_step_filling_the_disk_is_stopped_at_its_bound(hostile_round: Outcome) -> None:
    error = assert_rejected(hostile_round, "build_disk_fill", "BuildFailed", "build-disk-limit")
    assert "BUILD-REPORT" not in error  # stopped long before its 2 GiB were written
    no_image_built(hostile_round, "build_disk_fill")
    assert_validator_and_host_unharmed(hostile_round)


def test_a_crafted_dockerignore_is_matched_quickly_and_leaves_no_thread(hostile_round: Outcome) -> None:
    # The docker SDK turned such patterns into backtracking regular expressions run in our process.
    row = hostile_round.row("build_dockerignore")
    assert row.status == "evaluated" and row.error is None and row.score == 0, row
    assert hostile_round.uids[row.hotkey] not in hostile_round.weights
    # tqdm keeps one monitor thread per progress-bar class for the process's life (the datasets loader's);
    # one per fetch would be a leak, anything else a thread still spinning.
    left = [name for name in hostile_round.threads_left if name != "tqdm_monitor"]
    assert left == [] and hostile_round.threads_left.count("tqdm_monitor") <= 1, hostile_round.threads_left
    assert_validator_and_host_unharmed(hostile_round)
