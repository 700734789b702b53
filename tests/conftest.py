"""Shared pytest fixtures. Docker fixtures first; append others below."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from evaluation.sandbox.docker_sandbox import DockerSandbox, SandboxConfig
from evaluation.voicebench.fixture import build_fixture

# Matches scripts/dockerd.sh's default VV_DOCKER_DIR.
PROJECT_DOCKER_HOST = "unix:///var/lib/voice-validator/docker/docker.sock"
DEFAULT_BASE_IMAGE = "voice-validator/base:bookworm"


def _missing(reason: str) -> None:
    """Skip for lack of a resource; scripts/test.sh (and so CI) sets VV_REQUIRE_DOCKER=1 to fail instead,
    so a broken daemon can never pass CI as a row of skips."""
    if os.environ.get("VV_REQUIRE_DOCKER") == "1":
        pytest.fail(reason + " [VV_REQUIRE_DOCKER=1]")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def docker_host() -> str:
    """Address of a Docker daemon that answers (DOCKER_HOST, else the project dockerd's socket)."""
    import docker  # imported here so test collection needs no docker SDK work

    host = os.environ.get("DOCKER_HOST") or PROJECT_DOCKER_HOST
    try:
        client = docker.DockerClient(base_url=host, timeout=10)
        try:
            client.ping()
        finally:
            client.close()
    except Exception:
        _missing(f"needs the project dockerd (run scripts/dockerd.sh); nothing answers on {host}")
    return host


@pytest.fixture(scope="session")
def base_image(docker_host: str) -> str:
    """Tag of the local base image test miners are built FROM."""
    import docker

    tag = os.environ.get("VV_BASE_IMAGE") or DEFAULT_BASE_IMAGE
    client = docker.DockerClient(base_url=docker_host, timeout=30)
    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        _missing(f"needs the base image {tag} (run scripts/base_image.sh)")
    finally:
        client.close()
    return tag


@pytest.fixture(scope="session")
def sandbox_config(docker_host: str, base_image: str) -> Iterator[SandboxConfig]:
    """A SandboxConfig for tests: offline builds on the base image, small limits, a per-session id.

    At the end of the session every container, network and image carrying that id is removed.
    """
    config = SandboxConfig(
        docker_host=docker_host,
        validator_id=f"test-{secrets.token_hex(4)}",
        memory="512m",
        cpus=1.0,
        pids_limit=256,
        build_network="none",
        build_args={"BASE_IMAGE": base_image},
        build_timeout_s=300,
        start_timeout_s=60,
        tmpfs_size="64m",
    )
    yield config
    remove_validator_objects(config)


def remove_validator_objects(config: SandboxConfig) -> None:
    """Remove every container, network and image labelled with ``config``'s validator id."""

    async def teardown() -> None:
        sandbox = DockerSandbox(config)
        try:
            await sandbox.cleanup()
            await sandbox.prune_images()
        finally:
            await sandbox.close()

    asyncio.run(teardown())


@pytest.fixture(scope="session")
def voicebench_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The team's espeak-ng VoiceBench fixture in the hub's parquet layout, every subset (sd-qa: usa and
    gbr; mmsu: four subjects), built once per session."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("needs espeak-ng to synthesize the VoiceBench fixture (apt-get install espeak-ng)")
    return build_fixture(tmp_path_factory.mktemp("voicebench"), subsets=None)  # None: all subsets


@pytest.fixture(scope="session")
def asr_llm_miner_dir() -> Path:
    """The example miner's ASR + LLM variant as assembled by scripts/asr_llm_miner.sh (wheels, models)."""
    from validator.demo import default_asr_llm_dir

    path = default_asr_llm_dir()
    if not (path / "model" / "config.json").is_file():
        _missing(f"needs the ASR + LLM example miner at {path} (run scripts/asr_llm_miner.sh)")
    return path
