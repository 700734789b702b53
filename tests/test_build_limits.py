"""The build's process and disk bounds (evaluation/sandbox/build_limits.py), as a hostile miner meets them.

The Docker tests send their own ``POST /build`` requests carrying ``limits.params`` (the sandbox's SDK
build call cannot carry ``cgroupparent`` yet), on the project's dockerd, with small bounds: a fork bomb
against 64 processes, 2 GiB of writes against 300 MiB. Each checks the host afterwards: it can still
start processes, nothing of the build runs or stays behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import json
import os
import re
import secrets
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import structlog

from evaluation.errors import BuildFailed, InfrastructureError
from evaluation.sandbox.build_cgroup import cgroup_mounts
from evaluation.sandbox.build_disk import DiskVerdict, classify_disk_failure, mentions_out_of_space, ran_low
from evaluation.sandbox.build_limits import BuildHost, BuildLimits, BuildLimitsConfig, daemon_facts
from evaluation.sandbox.docker_sandbox import (
    DockerSandbox,
    SandboxConfig,
    build_limits_config,
    object_labels,
    ownership_filter,
)
from evaluation.types import Submission

GIB = 1 << 30
MIB = 1 << 20
# This machine's cgroup mounts (v1 with a v2 hierarchy beside it), a v2-only host, and a container's
# namespaced view (root "/docker/abc"), which must not count.
MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime shared:9 - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
52 31 0:40 /docker/abc /ns/pids rw,relatime - cgroup cgroup rw,pids
"""


# ----------------------------------------------------------------------------------------- pure rules

DAEMON_ENOSPC = (
    "failed to register layer: Error processing tar file(exit status 1): write /usr/lib/libx.so: "
    "no space left on device"
)
PIP_ENOSPC = "ERROR: Could not install packages due to an OSError: [Errno 28] No space left on device"


@pytest.mark.parametrize(
    ("text", "written", "ran", "expected"),
    [
        # Past its own bound it is the miner's, whatever the disk did.
        (DAEMON_ENOSPC, 400 * MIB, True, DiskVerdict.MINER),
        ("The command '/bin/sh -c dd' returned a non-zero code: 137", 400 * MIB, False, DiskVerdict.MINER),
        # Out of disk under its bound while the data root really ran low: ours.
        (DAEMON_ENOSPC, 100 * MIB, True, DiskVerdict.OURS),
        (PIP_ENOSPC, 100 * MIB, True, DiskVerdict.OURS),
        ("mkdir /var/lib/docker/overlay2/x: disk quota exceeded", 0, True, DiskVerdict.OURS),
        # A remote daemon's disk cannot be seen: the report is believed.
        (DAEMON_ENOSPC, 100 * MIB, None, DiskVerdict.OURS),
        # "No space" printed by a build while the disk never ran low: the miner's own text.
        ("The command '/bin/sh -c echo No space left on device; false' returned a non-zero code: 1",
         100 * MIB, False, DiskVerdict.NOT_DISK),
        # Nothing about disk at all.
        ("The command '/bin/sh -c false' returned a non-zero code: 1", 0, True, DiskVerdict.NOT_DISK),
    ],
)  # fmt: skip
def test_disk_failure_classification(
    text: str, written: int, ran: bool | None, expected: DiskVerdict
) -> None:
    verdict = classify_disk_failure(text, written_bytes=written, limit_bytes=300 * MIB, disk_ran_low=ran)
    assert verdict is expected


def test_out_of_space_wordings() -> None:
    for text in (DAEMON_ENOSPC, PIP_ENOSPC, "write error: ENOSPC", "Disk quota exceeded", "EDQUOT"):
        assert mentions_out_of_space(text), text
    assert not mentions_out_of_space("Successfully built 1a2b3c4d5e6f; space left: plenty")


def test_a_full_disk_is_bytes_or_inodes() -> None:
    assert ran_low(100 * MIB, 10**6)
    assert ran_low(100 * GIB, 50)
    assert not ran_low(100 * GIB, 10**6)
    assert not ran_low(100 * GIB, None)


def test_cgroup_mounts_of_root_hierarchies_only() -> None:
    mounts = cgroup_mounts(MOUNTINFO)
    assert mounts == {
        "cpu": "/sys/fs/cgroup/cpu",
        "memory": "/sys/fs/cgroup/memory",
        "pids": "/sys/fs/cgroup/pids",
        "name=systemd": "/sys/fs/cgroup/systemd",
        "": "/sys/fs/cgroup/unified",
    }
    assert cgroup_mounts("30 1 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate") == {
        "": "/sys/fs/cgroup"
    }


def test_only_a_unix_socket_daemon_with_its_data_root_here_is_local(tmp_path: Path) -> None:
    (tmp_path / "overlay2").mkdir()
    info = {"DockerRootDir": str(tmp_path), "Driver": "overlay2", "CgroupDriver": "cgroupfs"}
    local = daemon_facts(info, "http+docker://localhost")
    assert local.local and local.data_root == str(tmp_path)
    assert local.storage_dir == str(tmp_path / "overlay2")
    assert not daemon_facts(info, "http://10.0.0.5:2375").local
    assert not daemon_facts(info, "http+docker://ssh").local
    elsewhere = daemon_facts({**info, "DockerRootDir": str(tmp_path / "absent")}, "http+docker://localhost")
    assert not elsewhere.local and elsewhere.data_root is None


def test_config_maps_and_validates_the_build_bounds() -> None:
    config = SandboxConfig(build_pids_limit=77, build_disk_limit="300m", build_min_free_disk="0")
    limits = build_limits_config(config)
    assert (limits.pids_limit, limits.disk_limit_bytes, limits.min_free_bytes) == (77, 300 * MIB, 0)
    assert limits.memory_bytes == 4 * GIB  # the per-step memory limit, for the build as a whole
    bad: list[dict[str, Any]] = [
        {"build_disk_limit": "0"},
        {"build_disk_limit": "lots"},
        {"build_min_free_disk": "-1g"},
        {"build_pids_limit": 0},
        {"build_disk_poll_s": 0},
    ]
    for fields in bad:
        with pytest.raises(ValueError):
            SandboxConfig(**fields)


async def test_a_build_past_its_bound_is_the_miners_whatever_it_printed() -> None:
    limits = BuildLimits(BuildHost(BuildLimitsConfig(disk_limit_bytes=300 * MIB)), None, "unit")
    limits.exceeded, limits.written_bytes = True, 400 * MIB
    limits.reason = "the build wrote more than 0.29 GiB"
    verdict = await limits.verdict(BuildFailed(DAEMON_ENOSPC), ["no space left on device"])
    assert isinstance(verdict, BuildFailed) and "wrote more than" in str(verdict)


# ----------------------------------------------------------------------------------------- real builds


@dataclasses.dataclass
class RawBuild:
    """What a raw build request under some limits saw."""

    limits: BuildLimits
    log: list[str]
    error: str | None
    verdict: Exception | None
    peak_pids: int = 0


def build_tar(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def post_build(
    api: Any, config: SandboxConfig, tag: str, files: dict[str, str], limits: BuildLimits, log: list[str]
) -> str | None:
    """One build over the raw API with ``limits.params`` in its query; the daemon's error, if any."""
    params = {
        "t": tag,
        "labels": json.dumps(object_labels(config.validator_id, 0, "limits")),
        "buildargs": json.dumps(dict(config.build_args)),
        "networkmode": "none",
        "rm": "1",
        "forcerm": "1",
        **limits.params,
    }
    response = api._post(
        api._url("/build"),
        params=params,
        data=build_tar(files),
        headers={"Content-Type": "application/x-tar"},
        stream=True,
        timeout=180,
    )
    try:
        for chunk in api._stream_helper(response, decode=True):
            if "stream" in chunk:
                limits.observe(str(chunk["stream"]))
                log.append(str(chunk["stream"]))  # as sent: a line may come in pieces
            if "error" in chunk:
                return str(chunk["error"])
            if limits.exceeded:
                return "stopped: past the disk bound"
    finally:
        response.close()
    return None


def sample_pids(limits: BuildLimits, stop: threading.Event, result: RawBuild) -> None:
    """Track the most processes the build's cgroup held at once (kernel's own peak where it has one)."""
    folder = limits.cgroup.pids_dir() if limits.cgroup else None
    while folder is not None and not stop.is_set():
        for name in ("pids.current", "pids.peak"):
            try:
                result.peak_pids = max(result.peak_pids, int((folder / name).read_text()))
            except (OSError, ValueError):
                pass
        time.sleep(0.02)


def memory_limit(relative: str) -> int | None:
    """The v1 memory limit of a cgroup (None without a v1 memory hierarchy)."""
    memory = cgroup_mounts(Path("/proc/self/mountinfo").read_text()).get("memory")
    return int(Path(f"{memory}{relative}/memory.limit_in_bytes").read_text()) if memory else None


async def raw_build(api: Any, config: SandboxConfig, files: dict[str, str]) -> RawBuild:
    """Build the context ``files`` (a Dockerfile and more) under the bounds ``config`` gives."""
    host = BuildHost(build_limits_config(config))
    log: list[str] = []
    stop = threading.Event()
    tag = f"voice-validator-miner:{config.validator_id}-limits-{secrets.token_hex(3)}"
    async with host.limits(api, f"{config.validator_id}-{secrets.token_hex(4)}") as limits:
        assert limits.cgroup is not None and limits.params == {"cgroupparent": limits.cgroup.relative}
        result = RawBuild(limits, log, None, None)
        # The build as a whole is held to the per-step memory limit too.
        assert memory_limit(limits.cgroup.relative) in (None, build_limits_config(config).memory_bytes)
        sampler = threading.Thread(target=sample_pids, args=(limits, stop, result), daemon=True)
        sampler.start()
        try:
            result.error = await asyncio.to_thread(post_build, api, config, tag, files, limits, log)
            if result.error is not None:
                result.verdict = await limits.verdict(BuildFailed(result.error), log[-50:])
        finally:
            stop.set()
            sampler.join(5)
    # A build that succeeded leaves its image: never another test's business.
    with contextlib.suppress(docker.errors.NotFound):
        api.remove_image(tag)
    return result


@pytest.fixture
def api(docker_host: str) -> Iterator[Any]:
    client = docker.DockerClient(base_url=docker_host, timeout=60)
    yield client.api
    client.close()


def containers_under(api: Any, cgroup_parent: str) -> list[str]:
    """Ids of every container on the daemon whose cgroup parent is ``cgroup_parent``."""
    found = []
    for item in api.containers(all=True):
        # A container may go away between the list and the inspect.
        with contextlib.suppress(docker.errors.NotFound):
            if api.inspect_container(item["Id"])["HostConfig"].get("CgroupParent") == cgroup_parent:
                found.append(item["Id"])
    return found


def assert_host_is_fine(api: Any, result: RawBuild) -> None:
    """The host still starts processes, and nothing of the build runs or stays: cgroup, steps, processes."""
    assert subprocess.run(["true"], check=False, timeout=10).returncode == 0
    relative = result.limits.cgroup.relative if result.limits.cgroup else "?"
    mounts = set(cgroup_mounts(Path("/proc/self/mountinfo").read_text()).values())
    assert [m for m in mounts if os.path.exists(m + relative)] == []
    assert containers_under(api, relative) == []
    build_id = result.limits.build_id
    stray = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if build_id in (proc / "cgroup").read_text():
                    stray.append(proc.name)
            except OSError:
                pass
    assert stray == []


FORK_BOMB = """\
import subprocess, sys, time
kids, refused = [], None
for _ in range(3000):
    try:
        kids.append(subprocess.Popen(["sleep", "120"]))
    except OSError as exc:
        refused = exc
        break
sys.stdout.write(f"spawned {len(kids)} refused: {refused}\\n")
sys.stdout.flush()
time.sleep(1.5)  # the watchdog samples the refusals while the step's cgroup exists
for kid in kids:
    kid.kill()
    kid.wait()
"""


@pytest.mark.docker
async def test_fork_bomb_in_a_run_step_stops_at_the_build_pids_limit(
    sandbox_config: SandboxConfig, api: Any, tmp_path: Path
) -> None:
    config = dataclasses.replace(sandbox_config, build_pids_limit=64, build_disk_poll_s=0.5)
    dockerfile = "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nCOPY bomb.py /\nRUN python3 /bomb.py\n"
    result = await raw_build(api, config, {"Dockerfile": dockerfile, "bomb.py": FORK_BOMB})
    text = "".join(result.log)
    spawned = re.search(r"spawned (\d+) refused: (.*)", text)
    assert spawned, text[-2000:]
    # The step saw its forks refused well before 3000, and never held more than the limit at once.
    assert int(spawned.group(1)) < 64, text[-2000:]
    assert "Resource temporarily unavailable" in spawned.group(2)
    assert 0 < result.peak_pids <= 64
    assert result.limits.fork_refusals > 0
    assert result.error is None  # the step itself went on (and cleaned up); only the forks failed
    assert_host_is_fine(api, result)


@pytest.mark.docker
async def test_build_writing_past_its_disk_bound_is_stopped_early_and_is_the_miners(
    sandbox_config: SandboxConfig, api: Any, base_image: str
) -> None:
    config = dataclasses.replace(sandbox_config, build_disk_limit="300m", build_disk_poll_s=0.5)
    # A container of ours the build names as its own step ("Running in <id>"): it must be left alone.
    decoy = api.create_container(
        base_image, ["sleep", "300"], labels=object_labels(config.validator_id, 0, "decoy"),
        host_config=api.create_host_config(network_mode="none"),
    )["Id"]  # fmt: skip
    api.start(decoy)
    try:
        dockerfile = (
            "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n"
            "RUN dd if=/dev/zero of=/warmup bs=1M count=100 status=none\n"
            f'RUN echo " ---> Running in {decoy}"; for i in $(seq 1 32); do '
            "dd if=/dev/zero of=/fill$i bs=64M count=1 status=none; echo wrote $i; sleep 0.3; done; "
            "echo FIN''ISHED\n"
        )
        result = await raw_build(api, config, {"Dockerfile": dockerfile})
        text = "".join(result.log)
        assert isinstance(result.verdict, BuildFailed), (result.error, text[-2000:])
        assert "wrote more than 0.29 GiB" in str(result.verdict)
        # Stopped well before the 2 GiB the step meant to write.
        assert "FINISHED" not in text
        written = [int(n) for n in re.findall(r"^wrote (\d+)$", text, re.MULTILINE)]
        assert written and max(written) <= 12, written
        assert 300 * MIB < result.limits.written_bytes < GIB
        # Its intermediate image (the 100 MB warm-up) and its step containers are gone; the decoy runs.
        assert result.limits.new_images
        for image_id in result.limits.new_images:
            with pytest.raises(docker.errors.ImageNotFound):
                api.inspect_image(image_id)
        assert api.inspect_container(decoy)["State"]["Running"]
        assert_host_is_fine(api, result)
        print(f"longest disk poll: {result.limits.longest_poll_s:.3f}s")
    finally:
        api.remove_container(decoy, force=True)


@pytest.mark.docker
async def test_writes_to_a_volume_outside_the_layer_count_too(
    sandbox_config: SandboxConfig, api: Any
) -> None:
    # VOLUME gives each later step an anonymous volume on the daemon's disk, outside its rw layer.
    config = dataclasses.replace(sandbox_config, build_disk_limit="200m", build_disk_poll_s=0.5)
    dockerfile = (
        "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nVOLUME /data\n"
        "RUN for i in $(seq 1 16); do dd if=/dev/zero of=/data/fill$i bs=64M count=1 status=none; "
        "echo wrote $i; sleep 0.3; done; echo FIN''ISHED\n"
    )
    result = await raw_build(api, config, {"Dockerfile": dockerfile})
    text = "".join(result.log)
    assert isinstance(result.verdict, BuildFailed) and "wrote more than" in str(result.verdict), text[-2000:]
    assert "FINISHED" not in text
    assert_host_is_fine(api, result)


@pytest.mark.docker
async def test_a_printed_no_space_error_on_a_roomy_disk_stays_the_miners(
    sandbox_config: SandboxConfig, api: Any
) -> None:
    dockerfile = (
        "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n"
        "RUN echo 'write /var/lib/docker/overlay2/x: no space left on device' && exit 1\n"
    )
    result = await raw_build(api, sandbox_config, {"Dockerfile": dockerfile})
    assert result.error and "returned a non-zero code: 1" in result.error
    # Not ours (that would retry it forever) nor a disk-bound failure: the caller's usual BuildFailed.
    assert result.verdict is None
    assert_host_is_fine(api, result)


@pytest.mark.docker
async def test_too_little_free_disk_is_ours_and_builds_nothing(
    sandbox_config: SandboxConfig, docker_host: str, tmp_path: Path
) -> None:
    # An id of its own: the other tests' images carry the session's.
    own_id = f"{sandbox_config.validator_id}-{secrets.token_hex(3)}"
    config = dataclasses.replace(sandbox_config, validator_id=own_id, build_min_free_disk="100000g")
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "Dockerfile").write_text("ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN true\n", encoding="utf-8")
    sandbox = DockerSandbox(config)
    started = time.monotonic()
    try:
        with pytest.raises(InfrastructureError, match="build-min-free-disk"):
            await sandbox.start(Submission(uid=3, hotkey="5T", repo_id="t/disk", revision="ab" * 20), repo)
    finally:
        await sandbox.close()
    assert time.monotonic() - started < 10
    client = docker.DockerClient(base_url=docker_host, timeout=30)
    try:
        assert client.images.list(filters=ownership_filter(config.validator_id)) == []
    finally:
        client.close()


@pytest.mark.docker
async def test_without_a_usable_cgroup_tree_builds_go_on_with_one_warning(
    sandbox_config: SandboxConfig, api: Any, tmp_path: Path
) -> None:
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text("")  # no cgroup hierarchy to be seen: as in a container without cgroupfs
    host = BuildHost(dataclasses.replace(build_limits_config(sandbox_config), mountinfo=mountinfo))
    with structlog.testing.capture_logs() as logs:
        for _ in range(2):
            async with host.limits(api, f"{sandbox_config.validator_id}-{secrets.token_hex(4)}") as limits:
                assert limits.params == {} and limits.cgroup is None
    warnings = [entry for entry in logs if entry["log_level"] == "warning"]
    assert len(warnings) == 1 and "without a process bound" in warnings[0]["event"]
