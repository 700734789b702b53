"""DockerSandbox against the project's real dockerd: real builds, real containers, real isolation checks.

Run ``scripts/dockerd.sh`` and ``scripts/base_image.sh`` first (as root); without them the Docker tests
skip and say which of the two is missing. Network traffic stays on this machine: containers the tests
start, and listeners the tests open on addresses they create (198.51.100.0/24 is a documentation range).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import io
import json
import secrets
import shutil
import socket
import time
from collections.abc import AsyncIterator, Generator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import docker
import numpy as np
import pytest

from evaluation.errors import BuildFailed, InfrastructureError, StartFailed, SubmissionRejected
from evaluation.sandbox import docker_sandbox
from evaluation.sandbox.docker_sandbox import (
    LABEL_ID,
    LABEL_MANAGED,
    DockerSandbox,
    SandboxConfig,
    image_tag,
    object_labels,
    ownership_filter,
    run_name,
    safe_revision,
)
from evaluation.sandbox.port import RunningModel, Sandbox
from evaluation.types import Submission
from tests.conftest import remove_validator_objects
from tests.listeners import Listener, documentation_address
from tests.sandbox_contract import check_build_failure, check_serves_then_stops

EXAMPLE_MINER = Path(__file__).resolve().parents[1] / "docker" / "example_miner"
REVISION = "0123456789abcdef0123456789abcdef01234567"


def submission(uid: int = 7) -> Submission:
    return Submission(uid=uid, hotkey="5Test", repo_id="tester/voice", revision=REVISION)


def example_repo(dest: Path, answer: str) -> Path:
    """A copy of the example miner configured to answer ``answer``."""
    shutil.copytree(EXAMPLE_MINER, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    config_path = dest / "model" / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["answer"] = answer
    config_path.write_text(json.dumps(config), encoding="utf-8")
    return dest


def custom_repo(dest: Path, dockerfile_body: str, files: dict[str, str] | None = None) -> Path:
    """A miner repo whose Dockerfile builds FROM the test base image and then runs ``dockerfile_body``."""
    dest.mkdir(parents=True)
    header = "ARG BASE_IMAGE=python:3.11-slim\nFROM ${BASE_IMAGE}\n"
    (dest / "Dockerfile").write_text(header + dockerfile_body, encoding="utf-8")
    for name, text in (files or {}).items():
        (dest / name).write_text(text, encoding="utf-8")
    return dest


def npy_b64(audio: np.ndarray) -> str:
    buffer = io.BytesIO()
    np.save(buffer, audio)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


# ------------------------------------------------------------------------------------ pure helpers


def test_image_tag_names_validator_uid_and_short_revision() -> None:
    assert image_tag("val-1", 42, REVISION) == "voice-validator-miner:val-1-uid42-0123456789ab"


def test_unsafe_revision_cannot_escape_a_docker_name() -> None:
    assert safe_revision("../../etc x") == "etc-x"
    for revision in ("../../etc x", "a/b:c@d", "", "...."):
        cleaned = safe_revision(revision)
        assert cleaned and all(c.isalnum() or c in "_.-" for c in cleaned), cleaned
        assert not cleaned.startswith((".", "-"))
    name = run_name("val", 3, "a/b:c", "beef")
    assert name == "vv-val-uid3-a-b-c-beef"


def test_labels_and_filter_select_one_validator() -> None:
    labels = object_labels("val-1", 5, REVISION)
    assert labels == {
        LABEL_MANAGED: "true",
        LABEL_ID: "val-1",
        "voice-validator.uid": "5",
        "voice-validator.revision": REVISION,
    }
    assert ownership_filter("val-1") == {"label": [f"{LABEL_MANAGED}=true", f"{LABEL_ID}=val-1"]}


@pytest.mark.parametrize("bad", ["", "Upper", "has space", "-lead", "x" * 65, "a/b"])
def test_config_rejects_validator_ids_docker_cannot_name(bad: str) -> None:
    with pytest.raises(ValueError):
        SandboxConfig(validator_id=bad)


async def test_unreachable_daemon_is_an_infrastructure_error(tmp_path: Path) -> None:
    sandbox = DockerSandbox(SandboxConfig(docker_host=f"unix://{tmp_path}/no-such-docker.sock"))
    try:
        with pytest.raises(InfrastructureError, match="docker"):
            await sandbox.start(submission(), example_repo(tmp_path / "repo", "A"))
        with pytest.raises(InfrastructureError):
            await sandbox.cleanup()
    finally:
        await sandbox.close()


def test_docker_sandbox_satisfies_the_port() -> None:
    sandbox: Sandbox = DockerSandbox(SandboxConfig())
    assert callable(sandbox.start) and callable(sandbox.stop) and callable(sandbox.cleanup)


# ------------------------------------------------------------------------------------ real docker


@pytest.fixture
def client(docker_host: str) -> Iterator[docker.DockerClient]:
    """A plain docker SDK client, for checking what the sandbox did."""
    docker_client = docker.DockerClient(base_url=docker_host, timeout=60)
    yield docker_client
    docker_client.close()


@pytest.fixture
async def sandbox(sandbox_config: SandboxConfig) -> AsyncIterator[DockerSandbox]:
    docker_sandbox = DockerSandbox(sandbox_config)
    yield docker_sandbox
    await docker_sandbox.cleanup()
    await docker_sandbox.close()


def owned(client: docker.DockerClient, validator_id: str) -> tuple[list[Any], list[Any]]:
    """Containers and networks carrying ``validator_id``'s labels."""
    filters = ownership_filter(validator_id)
    return client.containers.list(all=True, filters=filters), client.networks.list(filters=filters)


def container_of(client: docker.DockerClient, model: RunningModel) -> Any:
    return client.containers.get(model.container_id)


@pytest.mark.docker
async def test_example_miner_builds_starts_answers_and_stops(
    sandbox: DockerSandbox, client: docker.DockerClient, tmp_path: Path
) -> None:
    repo = example_repo(tmp_path / "repo", "C")
    started = time.monotonic()
    model = await sandbox.start(submission(), repo)
    start_s = time.monotonic() - started
    container = container_of(client, model)
    network_name = container.labels["voice-validator.network"]
    network = client.networks.get(network_name)
    try:
        assert start_s < 60
        assert model.image_id.startswith("sha256:")
        assert client.images.get(model.image_id).labels[LABEL_ID] == sandbox.config.validator_id
        assert image_tag(sandbox.config.validator_id, 7, REVISION) in client.images.get(model.image_id).tags

        async with aiohttp.ClientSession() as session:
            async with session.get(f"{model.base_url}/api/v1/health") as response:
                assert (await response.json())["initialization_status"] == {
                    "model_loaded": True,
                    "error": None,
                }
            tone = np.sin(np.linspace(0, 200 * np.pi, 16_000)).astype(np.float32)
            body = {"audio_data": npy_b64(tone), "sample_rate": 16_000}
            async with session.post(f"{model.base_url}/api/v1/v2t", json=body) as response:
                assert response.status == 200
                assert await response.json() == {"text": "The answer is C."}
            async with session.post(f"{model.base_url}/api/v1/inference", json=body) as response:
                answer = await response.json()
            echoed = np.load(io.BytesIO(base64.b64decode(answer["audio_data"])), allow_pickle=False)
            assert answer["text"] == "The answer is C."
            assert echoed.dtype == np.float32 and np.allclose(echoed, tone)
            bad = {"audio_data": npy_b64(np.zeros((2, 10), dtype=np.float32)), "sample_rate": 16_000}
            async with session.post(f"{model.base_url}/api/v1/v2t", json=bad) as response:
                assert response.status == 400
                assert "1-D" in (await response.json())["detail"]

        # Isolation settings as the daemon recorded them.
        host_config = container.attrs["HostConfig"]
        assert host_config["ReadonlyRootfs"] is True
        assert host_config["CapDrop"] == ["ALL"]
        assert "no-new-privileges" in host_config["SecurityOpt"]
        assert host_config["Memory"] == 512 * 2**20
        assert host_config["NanoCpus"] == 10**9
        assert host_config["PidsLimit"] == 256
        assert not host_config.get("PortBindings")
        assert container.attrs["Config"]["User"] == "65534:65534"
        assert set(container.attrs["NetworkSettings"]["Networks"]) == {network_name}
        assert network.attrs["Internal"] is True
        assert network.attrs["Labels"][LABEL_ID] == sandbox.config.validator_id
    finally:
        await sandbox.stop(model)

    with pytest.raises(docker.errors.NotFound):
        client.containers.get(model.container_id)
    with pytest.raises(docker.errors.NotFound):
        client.networks.get(network.id)
    await sandbox.stop(model)  # already gone: still fine
    print(f"example miner build+start: {start_s:.1f}s")


@pytest.mark.docker
async def test_meets_the_shared_sandbox_contract(sandbox: DockerSandbox, tmp_path: Path) -> None:
    await check_serves_then_stops(sandbox, submission(uid=8), example_repo(tmp_path / "good", "B"), "B")
    broken = custom_repo(tmp_path / "bad", "RUN exit 1\n")
    await check_build_failure(sandbox, submission(uid=8), broken)


@pytest.mark.docker
async def test_runs_as_non_root_with_read_only_root(
    sandbox: DockerSandbox, client: docker.DockerClient, tmp_path: Path
) -> None:
    model = await sandbox.start(submission(), example_repo(tmp_path / "repo", "A"))
    try:
        container = container_of(client, model)
        code, output = container.exec_run(["id", "-u"])
        assert (code, output.decode().strip()) == (0, "65534")
        code, output = container.exec_run(["sh", "-c", "touch /probe-file"])
        assert code != 0 and b"Read-only file system" in output
        code, output = container.exec_run(["sh", "-c", "touch /app/probe-file"])
        assert code != 0
        code, output = container.exec_run(["sh", "-c", "echo scratch > /tmp/probe && cat /tmp/probe"])
        assert (code, output.strip()) == (0, b"scratch")
    finally:
        await sandbox.stop(model)


@pytest.fixture
def probe_address() -> Iterator[str]:
    """A non-loopback address on an interface this test creates (and removes)."""
    with documentation_address("vvp") as address:
        yield address


PROBE_SCRIPT = """
import json, socket, sys
results = []
for target in sys.argv[1:]:
    host, port = target.rsplit(":", 1)
    s = socket.socket()
    s.settimeout(3)
    try:
        s.connect((host, int(port)))
        results.append("connected")
    except OSError as exc:
        results.append(f"blocked: {exc}")
    finally:
        s.close()
print(json.dumps(results))
"""


@pytest.mark.docker
async def test_container_cannot_open_connections_out(
    sandbox: DockerSandbox, client: docker.DockerClient, tmp_path: Path, probe_address: str
) -> None:
    model = await sandbox.start(submission(), example_repo(tmp_path / "repo", "A"))
    container = container_of(client, model)
    network = client.networks.get(container.labels["voice-validator.network"])
    gateway = network.attrs["IPAM"]["Config"][0]["Gateway"]
    outside = Listener(probe_address)  # a host address outside the container's network
    host_side = Listener(gateway)  # the host's own address on the container's network
    try:
        # Both listeners work: the host itself can connect to them.
        for listener in (outside, host_side):
            with socket.create_connection((listener.address, listener.port), timeout=3):
                pass
        targets = [f"{outside.address}:{outside.port}", f"{gateway}:{host_side.port}", "127.0.0.1:8000"]
        code, output = container.exec_run(["python3", "-c", PROBE_SCRIPT, *targets])
        assert code == 0, output
        to_outside, to_host, to_itself = json.loads(output)
        assert to_itself == "connected"  # the probe can connect when a path exists
        assert to_outside.startswith("blocked"), to_outside
        assert to_host.startswith("blocked"), f"{to_host} (is the host guard of scripts/dockerd.sh in place?)"
        await asyncio.sleep(0.5)
        assert (outside.accepted, host_side.accepted) == (1, 1)  # only the host's own connections
    finally:
        outside.close()
        host_side.close()
        await sandbox.stop(model)


@pytest.mark.docker
async def test_failing_dockerfile_is_build_failed_with_the_log(
    sandbox: DockerSandbox, client: docker.DockerClient, tmp_path: Path
) -> None:
    repo = custom_repo(tmp_path / "repo", "RUN echo build-marker-5150 && exit 3\n")
    with pytest.raises(BuildFailed) as info:
        await sandbox.start(submission(), repo)
    assert "build-marker-5150" in str(info.value)
    assert "returned a non-zero code: 3" in str(info.value)
    assert owned(client, sandbox.config.validator_id) == ([], [])


@pytest.mark.docker
async def test_unparsable_dockerfile_is_build_failed(sandbox: DockerSandbox, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "Dockerfile").write_text("FROMM nothing\n", encoding="utf-8")
    with pytest.raises(BuildFailed, match=r"(?i)unknown instruction"):
        await sandbox.start(submission(), repo)


@pytest.mark.docker
async def test_repo_without_dockerfile_is_build_failed(sandbox: DockerSandbox, tmp_path: Path) -> None:
    (tmp_path / "repo").mkdir()
    with pytest.raises(BuildFailed, match="no Dockerfile"):
        await sandbox.start(submission(), tmp_path / "repo")


@pytest.mark.docker
async def test_build_past_its_deadline_is_stopped(
    sandbox_config: SandboxConfig, client: docker.DockerClient, tmp_path: Path
) -> None:
    marker = f"sleep 120 # deadline-{secrets.token_hex(4)}"
    repo = custom_repo(tmp_path / "repo", f"RUN {marker}\n")
    sandbox = DockerSandbox(dataclasses.replace(sandbox_config, build_timeout_s=3))
    started = time.monotonic()
    try:
        with pytest.raises(BuildFailed, match="exceeded 3s"):
            await sandbox.start(submission(), repo)
    finally:
        await sandbox.close()
    assert time.monotonic() - started < 15

    # Dropping the build connection makes the daemon cancel the step and remove its container.
    def leftovers() -> list[Any]:
        return [
            c
            for c in client.containers.list(all=True)
            if marker in " ".join(c.attrs["Config"].get("Cmd") or [])
        ]

    for _ in range(40):
        if not leftovers():
            break
        await asyncio.sleep(0.5)
    assert leftovers() == []


@pytest.mark.docker
async def test_server_that_exits_is_start_failed_at_once(
    sandbox: DockerSandbox, client: docker.DockerClient, tmp_path: Path
) -> None:
    repo = custom_repo(
        tmp_path / "repo", 'CMD ["python3", "-c", "import sys; print(\'crash-marker-77\'); sys.exit(7)"]\n'
    )
    started = time.monotonic()
    with pytest.raises(StartFailed) as info:
        await sandbox.start(submission(), repo)
    elapsed = time.monotonic() - started
    assert elapsed < 20 < sandbox.config.start_timeout_s  # did not sit out the 60 s deadline
    assert "code 7" in str(info.value)
    assert "crash-marker-77" in str(info.value)
    assert isinstance(info.value, SubmissionRejected)
    assert owned(client, sandbox.config.validator_id) == ([], [])


@pytest.mark.docker
async def test_image_whose_command_cannot_run_is_start_failed(sandbox: DockerSandbox, tmp_path: Path) -> None:
    repo = custom_repo(tmp_path / "repo", 'CMD ["/no/such/program"]\n')
    with pytest.raises(StartFailed, match=r"could not start|exited with code"):
        await sandbox.start(submission(), repo)


NEVER_LOADED_SERVER = """
import json
from http.server import BaseHTTPRequestHandler, HTTPServer

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"status": "initializing",
                           "initialization_status": {"model_loaded": False, "error": None}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

HTTPServer(("0.0.0.0", 8000), Handler).serve_forever()
"""


@pytest.mark.docker
async def test_server_that_never_loads_is_start_failed_after_the_deadline(
    sandbox_config: SandboxConfig, client: docker.DockerClient, tmp_path: Path
) -> None:
    repo = custom_repo(
        tmp_path / "repo",
        'COPY server.py /app/server.py\nCMD ["python3", "/app/server.py"]\n',
        {"server.py": NEVER_LOADED_SERVER},
    )
    sandbox = DockerSandbox(dataclasses.replace(sandbox_config, start_timeout_s=5))
    started = time.monotonic()
    try:
        with pytest.raises(StartFailed) as info:
            await sandbox.start(submission(), repo)
    finally:
        await sandbox.close()
    elapsed = time.monotonic() - started
    assert 5 <= elapsed < 30
    assert "not ready after 5s" in str(info.value)
    assert "model_loaded=False" in str(info.value)
    assert owned(client, sandbox_config.validator_id) == ([], [])


@pytest.mark.docker
async def test_cleanup_removes_only_this_validators_objects(
    sandbox_config: SandboxConfig, client: docker.DockerClient, base_image: str
) -> None:
    mine = dataclasses.replace(sandbox_config, validator_id=f"{sandbox_config.validator_id}-mine")
    other_id = f"{sandbox_config.validator_id}-other"
    made: list[Any] = []
    try:
        made.append(
            client.networks.create(
                f"vv-{mine.validator_id}-net", labels=object_labels(mine.validator_id, 1, "r")
            )
        )
        made.append(
            client.containers.create(
                base_image, ["sleep", "60"], labels=object_labels(mine.validator_id, 1, "r")
            )
        )
        other_net = client.networks.create(f"vv-{other_id}-net", labels=object_labels(other_id, 1, "r"))
        other = client.containers.create(base_image, ["sleep", "60"], labels=object_labels(other_id, 1, "r"))
        unlabelled = client.containers.create(base_image, ["sleep", "60"])
        made += [other_net, other, unlabelled]

        sandbox = DockerSandbox(mine)
        try:
            assert await sandbox.cleanup() == 2
            assert await sandbox.cleanup() == 0
        finally:
            await sandbox.close()
        assert owned(client, mine.validator_id) == ([], [])
        for survivor in (other, unlabelled):
            survivor.reload()  # raises NotFound if cleanup() took it
        other_net.reload()
    finally:
        for obj in reversed(made):
            try:
                obj.remove(force=True) if hasattr(obj, "exec_run") else obj.remove()
            except docker.errors.NotFound:
                pass


# ------------------------------------------------------------------------------------ hardening


def test_config_rejects_bad_sizes_and_limits() -> None:
    for bad in ({"shm_size": "lots"}, {"build_memory": "0"}, {"nofile_limit": 0}, {"image_cache_size": -1}):
        with pytest.raises(ValueError):
            SandboxConfig(**bad)  # type: ignore[arg-type]


@pytest.fixture
def own_validator(sandbox_config: SandboxConfig) -> Iterator[SandboxConfig]:
    """A config with an id of its own, so cache and prune tests never touch other tests' images."""
    config = dataclasses.replace(
        sandbox_config, validator_id=f"{sandbox_config.validator_id}-{secrets.token_hex(3)}"
    )
    yield config
    remove_validator_objects(config)


async def counting_builds(sandbox: DockerSandbox, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Make the sandbox count its build requests; returns the (growing) list of calls."""
    calls: list[int] = []

    class CountedRequest(docker_sandbox.BuildRequest):
        def events(self) -> Generator[dict[str, Any], None, None]:
            calls.append(1)
            return super().events()

    monkeypatch.setattr(docker_sandbox, "BuildRequest", CountedRequest)
    return calls


@pytest.mark.docker
async def test_same_revision_is_not_built_twice(
    own_validator: SandboxConfig, client: docker.DockerClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = example_repo(tmp_path / "repo", "D")
    (repo / "Dockerfile").write_text(
        (repo / "Dockerfile").read_text(encoding="utf-8") + "RUN sleep 3\n", encoding="utf-8"
    )
    first = DockerSandbox(own_validator)
    try:
        builds = await counting_builds(first, monkeypatch)
        started = time.monotonic()
        model = await first.start(submission(), repo)
        first_s = time.monotonic() - started
        await first.stop(model)
        assert len(builds) == 1 and first_s > 3
    finally:
        await first.close()

    # A fresh sandbox (as after a validator restart) finds the labelled image and builds nothing.
    second = DockerSandbox(own_validator)
    try:
        builds = await counting_builds(second, monkeypatch)
        started = time.monotonic()
        again = await second.start(submission(), repo)
        second_s = time.monotonic() - started
        await second.stop(again)
        other_uid = await second.start(submission(uid=9), repo)  # same repo and revision, another uid
        await second.stop(other_uid)
        assert builds == []
        assert again.image_id == model.image_id == other_uid.image_id
        assert second_s < 3 < first_s
        image = client.images.get(model.image_id)
        assert image.labels["voice-validator.repo"] == "tester/voice"
        assert image.labels["voice-validator.revision"] == REVISION
        assert image_tag(own_validator.validator_id, 9, REVISION) in image.tags

        # Same revision but different content (a local source reusing a revision): built, not reused.
        (repo / "model" / "extra.txt").write_text("changed", encoding="utf-8")
        changed = await second.start(submission(), repo)
        await second.stop(changed)
        assert len(builds) == 1 and changed.image_id != model.image_id
    finally:
        await second.close()
    print(f"first start {first_s:.1f}s, cached start {second_s:.1f}s")


@pytest.mark.docker
async def test_image_cache_keeps_only_the_most_recent(
    own_validator: SandboxConfig, client: docker.DockerClient, tmp_path: Path
) -> None:
    sandbox = DockerSandbox(dataclasses.replace(own_validator, image_cache_size=1))
    try:
        for index in range(3):
            repo = custom_repo(tmp_path / f"repo{index}", f'RUN echo {index} > /version\nCMD ["true"]\n')
            with pytest.raises(StartFailed):  # the base image serves nothing; only the build matters
                await sandbox.start(submission(uid=index), repo)
        remaining = {
            image.id for image in client.images.list(filters=ownership_filter(own_validator.validator_id))
        }
        # After each fresh build the cache keeps that image and the one most recent other.
        assert len(remaining) == 2, remaining
        assert await sandbox.prune_images(keep_latest=1) == 1
        assert len(client.images.list(filters=ownership_filter(own_validator.validator_id))) == 1
        assert await sandbox.prune_images() == 1
        assert client.images.list(filters=ownership_filter(own_validator.validator_id)) == []
    finally:
        await sandbox.close()


@pytest.mark.docker
async def test_build_steps_run_under_the_build_memory_limit(
    sandbox_config: SandboxConfig, client: docker.DockerClient, tmp_path: Path
) -> None:
    hog = "b = bytearray(256 * 2**20); print('allo' + 'cated')"
    repo = custom_repo(tmp_path / "repo", f'RUN python3 -c "{hog}"\n')
    sandbox = DockerSandbox(dataclasses.replace(sandbox_config, build_memory="64m"))
    try:
        with pytest.raises(BuildFailed) as info:
            await sandbox.start(submission(), repo)
    finally:
        await sandbox.close()
    assert "returned a non-zero code: 137" in str(info.value)  # SIGKILL from the OOM killer
    assert "allocated" not in str(info.value)
    # The same step passes with the default limit: the failure above is the limit, not the step.
    roomy = custom_repo(tmp_path / "roomy", f'RUN python3 -c "{hog}"\nCMD ["true"]\n')
    sandbox = DockerSandbox(sandbox_config)
    try:
        with pytest.raises(StartFailed):
            await sandbox.start(submission(), roomy)
    finally:
        await sandbox.close()


@pytest.mark.docker
async def test_started_container_has_every_protection_in_its_host_config(
    sandbox: DockerSandbox, client: docker.DockerClient, tmp_path: Path
) -> None:
    model = await sandbox.start(submission(), example_repo(tmp_path / "repo", "A"))
    try:
        container = container_of(client, model)
        host_config = container.attrs["HostConfig"]
        assert host_config["Privileged"] is False
        assert not host_config.get("Binds")
        assert not host_config.get("Mounts")
        assert not host_config.get("VolumesFrom")
        assert [m["Type"] for m in container.attrs["Mounts"]] == []  # tmpfs only (listed in Tmpfs)
        assert set(host_config["Tmpfs"]) == {"/tmp"}
        assert host_config["NetworkMode"] == container.labels["voice-validator.network"]
        assert host_config["PidMode"] == ""  # private pid namespace
        assert host_config["IpcMode"] == "private"
        assert host_config["UTSMode"] == "" and host_config["UsernsMode"] == ""
        assert not host_config.get("CapAdd")
        assert not host_config.get("Devices") and not host_config.get("DeviceRequests")
        assert "no-new-privileges" in host_config["SecurityOpt"]
        assert host_config["ReadonlyRootfs"] is True
        assert host_config["ShmSize"] == 256 * 2**20
        assert host_config["MemorySwap"] == host_config["Memory"]
        assert host_config["LogConfig"]["Config"] == {"max-size": "10m", "max-file": "2"}
        ulimits = {u["Name"]: (u["Soft"], u["Hard"]) for u in host_config["Ulimits"]}
        assert ulimits == {"nofile": (4096, 4096), "core": (0, 0)}
        assert host_config["PublishAllPorts"] is False and not host_config.get("PortBindings")

        # And as the miner sees it from inside.
        code, output = container.exec_run(["sh", "-c", "ulimit -n; ulimit -c; df -k /dev/shm | tail -1"])
        assert code == 0, output
        nofile, core, shm = output.decode().splitlines()
        assert (nofile, core) == ("4096", "0")
        assert int(shm.split()[1]) == 256 * 1024
        code, output = container.exec_run(["sh", "-c", "grep CapEff /proc/self/status"])
        assert output.split()[-1] == b"0000000000000000"
    finally:
        await sandbox.stop(model)


@pytest.mark.docker
async def test_environment_holds_no_validator_secrets_or_proxy_settings(
    sandbox_config: SandboxConfig,
    client: docker.DockerClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret = f"vv-secret-{secrets.token_hex(8)}"
    monkeypatch.setenv("VV_TEST_TOKEN", secret)
    monkeypatch.setenv("HTTPS_PROXY", f"http://{secret}@127.0.0.1:9")
    # The docker SDK copies proxies from this file into builds and containers unless told not to.
    docker_config = tmp_path / "docker-config"
    docker_config.mkdir()
    proxy = f"http://user:{secret}@127.0.0.1:9"
    (docker_config / "config.json").write_text(
        json.dumps({"proxies": {"default": {"httpProxy": proxy, "httpsProxy": proxy}}}), encoding="utf-8"
    )
    monkeypatch.setenv("DOCKER_CONFIG", str(docker_config))
    repo = example_repo(tmp_path / "repo", "A")
    with (repo / "Dockerfile").open("a", encoding="utf-8") as dockerfile:
        dockerfile.write("USER 0\nRUN env > /build-env.txt\nUSER 65534:65534\n")
    sandbox = DockerSandbox(sandbox_config)
    try:
        model = await sandbox.start(submission(uid=11), repo)
        try:
            container = container_of(client, model)
            image_env = {e.split("=", 1)[0] for e in client.images.get(model.image_id).attrs["Config"]["Env"]}
            names = {e.split("=", 1)[0] for e in container.attrs["Config"]["Env"]}
            # Plus the GPU runtime's two variables, which the validator sets (none assigned here: void).
            gpu_runtime = {"NVIDIA_VISIBLE_DEVICES", "NVIDIA_DRIVER_CAPABILITIES"}
            assert names == image_env | {"HOME", "PORT"} | gpu_runtime
            code, output = container.exec_run(
                ["sh", "-c", "cat /proc/1/environ | tr '\\0' '\\n'; cat /build-env.txt"]
            )
            assert code == 0 and b"PORT=8000" in output, output
            assert secret.encode() not in output
            assert b"proxy" not in output.lower()
        finally:
            await sandbox.stop(model)
    finally:
        await sandbox.close()


@pytest.mark.docker
async def test_image_volumes_become_size_capped_tmpfs(
    sandbox_config: SandboxConfig, client: docker.DockerClient, tmp_path: Path
) -> None:
    repo = example_repo(tmp_path / "repo", "A")
    with (repo / "Dockerfile").open("a", encoding="utf-8") as dockerfile:
        dockerfile.write("VOLUME /data /cache/\n")
    volumes_before = {v.name for v in client.volumes.list()}
    sandbox = DockerSandbox(dataclasses.replace(sandbox_config, volume_tmpfs_size="8m"))
    try:
        model = await sandbox.start(submission(uid=12), repo)
        try:
            container = container_of(client, model)
            assert container.attrs["Mounts"] == []  # no anonymous volume on the host's disk
            assert set(container.attrs["HostConfig"]["Tmpfs"]) == {"/tmp", "/data", "/cache"}
            code, output = container.exec_run(
                ["sh", "-c", "dd if=/dev/zero of=/data/fill bs=1M count=32 2>&1; df -k /data | tail -1"]
            )
            assert b"No space left on device" in output, output
            assert int(output.decode().splitlines()[-1].split()[1]) == 8 * 1024
            code, _ = container.exec_run(["sh", "-c", "echo ok > /cache/x"])
            assert code == 0  # writable for the non-root miner, like /tmp
        finally:
            await sandbox.stop(model)
    finally:
        await sandbox.close()
    # Only compare our own names: other tests may create volumes concurrently.
    assert not [
        v
        for v in client.volumes.list()
        if v.name not in volumes_before
        and v.attrs.get("Labels") is None
        and model.container_id in str(v.attrs)
    ]


@pytest.mark.docker
@pytest.mark.parametrize(
    ("volumes", "named"),
    [("/proc/x", "/proc/x"), ("/dev", "/dev"), (" ".join(f"/v{i}" for i in range(17)), "17 VOLUMEs")],
)
async def test_unsafe_or_too_many_volumes_are_build_failed(
    sandbox: DockerSandbox, client: docker.DockerClient, tmp_path: Path, volumes: str, named: str
) -> None:
    repo = custom_repo(tmp_path / "repo", f'VOLUME {volumes}\nCMD ["true"]\n')
    with pytest.raises(BuildFailed, match=named):
        await sandbox.start(submission(uid=13), repo)
    assert owned(client, sandbox.config.validator_id) == ([], [])


@pytest.mark.docker
async def test_names_do_not_resolve_inside(
    sandbox: DockerSandbox, client: docker.DockerClient, tmp_path: Path
) -> None:
    # Docker's embedded DNS forwards from the container's own namespace (dropped on an internal network)
    # unless the host's resolver is on loopback, where it would query from the host: then a lookup could
    # leave this machine, which the tests must never cause.
    resolv_conf = await asyncio.to_thread(Path("/etc/resolv.conf").read_text, encoding="utf-8")
    servers = [line.split()[1] for line in resolv_conf.splitlines() if line.startswith("nameserver")]
    if any(server.startswith("127.") or server == "::1" for server in servers):
        pytest.skip("the host resolver is on loopback; a lookup test could send queries out")
    model = await sandbox.start(submission(uid=14), example_repo(tmp_path / "repo", "A"))
    try:
        container = container_of(client, model)
        script = (
            "import json, socket\n"
            "out = {}\n"
            "for name in ('example.com', socket.gethostname()):\n"
            "    try:\n"
            "        out[name] = sorted({a[4][0] for a in socket.getaddrinfo(name, 80)})\n"
            "    except OSError as exc:\n"
            "        out[name] = 'failed: ' + str(exc)\n"
            "print(json.dumps(out))\n"
        )
        started = time.monotonic()
        code, output = container.exec_run(["python3", "-c", script])
        assert code == 0, output
        results = json.loads(output)
        own = results.pop(container.attrs["Config"]["Hostname"])
        assert isinstance(own, list) and own  # resolving works where an answer exists locally
        assert str(results["example.com"]).startswith("failed"), results
        print(f"external lookup failed after {time.monotonic() - started:.1f}s: {results['example.com']}")
    finally:
        await sandbox.stop(model)
