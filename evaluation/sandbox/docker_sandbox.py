"""The Docker implementation of the sandbox port; with ``build_network``, the only importer of ``docker``.

Isolation of one miner run:

* The Dockerfile is checked against the build policy before the daemon sees it, and the built image's
  environment after (``dockerfile_policy``: allowed bases, no remote or archive ``ADD``, no foreign
  ``--from``, no ``LD_PRELOAD``).
* The image is built from the miner's repo (labelled, intermediate containers always removed, total
  build deadline). By default each build runs on an internal network of its own whose only way out is
  the validator's allow-listing egress proxy (``build_network``); ``none`` and the unsafe ``default``
  bridge remain for operators who choose them.
* The container joins one fresh *internal* bridge network made for this run only: no published ports,
  nothing else on that network. Docker's FORWARD rules drop every packet that would leave the network's
  subnet, so the miner has no route to the outside world or to other miners.
* Root filesystem read-only, a size-limited ``/tmp`` tmpfs, a forced non-root uid, every capability
  dropped (so the miner cannot change its routes or open raw sockets), ``no-new-privileges``, memory,
  CPU and pid limits, bounded logs, a bounded ``/dev/shm``, an open-file ulimit, no core dumps, a private
  IPC namespace, and an environment holding only ``HOME``, ``PORT`` and the GPU runtime's ``NVIDIA_*``
  overrides (the SDK's proxy injection is off for builds and containers, so the validator's proxy
  settings never reach a miner).
* ``VOLUME`` instructions in the image would give the miner writable anonymous volumes outside the
  read-only root and the tmpfs cap; each is covered by a small tmpfs instead (see ``_image_volumes``).
* Build steps run with a memory (and no-swap) limit and reduced CPU shares; the build containers the
  legacy builder starts are tracked from its output and removed if a failed build leaves any. The
  build as a whole runs under a process bound and a disk watchdog, after a free-space check of the
  daemon's data root (``build_limits``).
* The build context is the validator's own tar stream (:mod:`evaluation.sandbox.build_context`): the
  repo's ``.dockerignore`` is applied by a linear-time matcher of ours, never by the SDK, and the
  context is capped (``context_max_bytes``).
* No build cache is shared between miners: images carry the miner's hotkey, and a build either seeds
  its cache from that miner's own previous image (``cachefrom``: only that image and its ancestors are
  reused) or uses no cache at all. Intermediate images a build leaves (a failed step, an aborted build,
  the stages of a multi-stage build) are removed under the rule of :mod:`evaluation.sandbox.build_leftovers`.
* Images are cached per (repo, revision, build-context digest, build args): a submission already built is
  never built again; the least recently used images beyond ``image_cache_size`` are removed.

How the validator reaches the container: checked on this project's dockerd (20.10), the host can open
connections to a container's address on an internal network through the bridge gateway, so the
validator talks to ``http://{container_ip}:{port}`` directly and no port is ever published. The flip
side, seen on the same daemon: a container on an internal network still gets a default route via that
gateway, which is the host itself, so it can open connections to *host* services listening on any
non-loopback address. Docker has no per-network switch for that, hence ``scripts/dockerd.sh`` adds a host
firewall rule dropping new connections from the project's container address pool to the host (replies
to connections the host opened still pass). Operators who bring their own dockerd need the same rule;
``tests/test_sandbox_docker.py`` proves it holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import posixpath
import re
import secrets
import threading
import time
from collections import Counter, deque
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import docker
import docker.errors
import docker.types
import docker.utils
import requests
import structlog
import urllib3.exceptions

from evaluation.errors import BuildFailed, InfrastructureError, StartFailed, SubmissionRejected
from evaluation.health import Health, health_from_body
from evaluation.progress import Observe, Throttle
from evaluation.sandbox.build_context import PreparedContext, prepare_context, tar_stream
from evaluation.sandbox.build_disk import created_epoch
from evaluation.sandbox.build_leftovers import leftover_images, reported_layers
from evaluation.sandbox.build_limits import BuildHost, BuildLimitsConfig
from evaluation.sandbox.build_network import (
    BUILD_NETWORK_MODES,
    BuildEgress,
    BuildNetworks,
    build_network_name,
)
from evaluation.sandbox.container_watch import EVENT_GRACE_S, ContainerWatch, attribute_exit
from evaluation.sandbox.dockerfile_policy import (
    DEFAULT_ALLOWED_BASES,
    BuildPolicy,
    check_image_config,
    check_repo_dockerfile,
    runtime_environment,
)
from evaluation.sandbox.egress_policy import build_pool, parse_host_entries
from evaluation.sandbox.image_build import BuildRequest, build_params
from evaluation.sandbox.port import ContainerExit, RunningModel
from evaluation.types import Submission

LABEL_MANAGED = "voice-validator.managed"
LABEL_ID = "voice-validator.id"
LABEL_UID = "voice-validator.uid"
LABEL_REVISION = "voice-validator.revision"
LABEL_NETWORK = "voice-validator.network"
LABEL_REPO = "voice-validator.repo"
LABEL_CONTEXT = "voice-validator.context"
LABEL_HOTKEY = "voice-validator.hotkey"
IMAGE_REPOSITORY = "voice-validator-miner"

# Ordinary API calls (create, inspect, remove) answer in well under a second; this bounds a hung daemon.
_API_TIMEOUT_S = 60.0
_HEALTH_REQUEST_TIMEOUT_S = 3.0
_HEALTH_MAX_BYTES = 64 * 1024
_LOG_TAIL_LINES = 20
_LOG_TAIL_CHARS = 4000
_VALIDATOR_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_UNSAFE_NAME_CHARS_RE = re.compile(r"[^A-Za-z0-9_.-]")
# "Running in <id>" is how the legacy builder names the container of each RUN step.
_BUILD_CONTAINER_RE = re.compile(r"Running in ([0-9a-f]{12,64})")
# More VOLUME instructions than this is not a model server; each one costs a tmpfs mount.
_MAX_IMAGE_VOLUMES = 16
# Covering these with a tmpfs would break the container or hide the kernel's own interfaces.
_FORBIDDEN_VOLUME_ROOTS = ("/proc", "/sys", "/dev")
# "Step 3/12 : RUN ..." is how the legacy builder announces each Dockerfile instruction.
_BUILD_STEP_RE = re.compile(r"^Step (\d+)/(\d+) :")
# A build logs its step at most this often (plus its first and last step): a long pip install still
# shows signs of life without flooding the log.
_BUILD_PROGRESS_S = 15.0
# A Dockerfile has at most a few hundred steps; more " ---> <id>" lines than this are the miner's noise
# (one genuine id per stage suffices, see build_leftovers).
_MAX_REPORTED_LAYERS = 10_000
_slog = structlog.get_logger(__name__)
# Errors the docker SDK lets through from its HTTP layer when the daemon is unreachable or hangs.
_TRANSPORT_ERRORS = (
    docker.errors.DockerException,
    requests.RequestException,
    urllib3.exceptions.HTTPError,
    OSError,
)


@dataclass(frozen=True)
class SandboxConfig:
    """How miner containers are built and run.

    ``validator_id`` goes into every name and label, so two validators sharing one dockerd never touch
    each other's objects. ``docker_host`` ``None`` means the Docker SDK's default socket.
    """

    docker_host: str | None = None
    validator_id: str = "default"
    memory: str = "8g"
    cpus: float = 2.0
    pids_limit: int = 512
    gpu_device_ids: tuple[str, ...] = ()
    build_timeout_s: float = 1800
    start_timeout_s: float = 600
    # "proxy": a network per build, out only through the egress proxy; "none"; "default" (unsafe).
    build_network: str = "proxy"
    build_args: dict[str, str] = field(default_factory=dict)
    port: int = 8000
    user: str = "65534:65534"
    tmpfs_size: str = "1g"
    # Images kept per validator beyond those in use (least recently used go first); 0 keeps none.
    image_cache_size: int = 8
    # Limits of the build's RUN steps: memory (swap forbidden) and relative CPU weight (1024 = normal).
    build_memory: str = "4g"
    build_cpu_shares: int = 512
    # Run-time /dev/shm size (PyTorch data loaders use it) and open-file limit (soft = hard).
    shm_size: str = "256m"
    nofile_limit: int = 4096
    # Size of the tmpfs mounted over each VOLUME the image declares (instead of a writable volume).
    volume_tmpfs_size: str = "64m"
    # Largest build context sent to the daemon (tar headers included), after .dockerignore.
    context_max_bytes: int = 20 * 2**30 + 256 * 2**20
    # Bounds of a build as a whole (see build_limits): processes of all its steps together, bytes it
    # may write, free space the data root needs before a build starts ("0": no check), watchdog period.
    build_pids_limit: int = 1024
    build_disk_limit: str = "60g"
    build_min_free_disk: str = "20g"
    build_disk_poll_s: float = 2.0
    # Base images a Dockerfile may name (see dockerfile_policy); the build args' images are allowed too.
    allowed_bases: tuple[str, ...] = DEFAULT_ALLOWED_BASES
    # The egress of "proxy" builds: what the proxy allows (empty: this machine's pip, apt and hub
    # settings, read at the first build), its port on each build network's gateway, the address pool
    # of build networks (a /24 each) and the hub endpoint the derived allow-list includes.
    build_allowed_hosts: tuple[str, ...] = ()
    build_proxy_port: int = 3199
    build_subnet_pool: str = "10.214.0.0/16"
    hub_endpoint: str | None = None

    def __post_init__(self) -> None:
        if not _VALIDATOR_ID_RE.match(self.validator_id):
            raise ValueError(
                f"validator_id {self.validator_id!r} must match {_VALIDATOR_ID_RE.pattern} "
                "(it becomes part of docker object names)"
            )
        if self.cpus <= 0 or self.pids_limit <= 0 or not 0 < self.port < 65536:
            raise ValueError("cpus and pids_limit must be positive and port a valid TCP port")
        if self.build_timeout_s <= 0 or self.start_timeout_s <= 0:
            raise ValueError("timeouts must be positive")
        if self.image_cache_size < 0 or self.build_cpu_shares <= 0 or self.nofile_limit <= 0:
            raise ValueError("image_cache_size, build_cpu_shares and nofile_limit must not be negative")
        if self.context_max_bytes <= 0:
            raise ValueError("context_max_bytes must be positive")
        if self.build_pids_limit <= 0 or self.build_disk_poll_s <= 0:
            raise ValueError("build_pids_limit and build_disk_poll_s must be positive")
        sizes = ("memory", "tmpfs_size", "build_memory", "shm_size", "volume_tmpfs_size", "build_disk_limit")
        for name in (*sizes, "build_min_free_disk"):
            value = getattr(self, name)
            # Fail at configuration time, not at the first miner's run.
            try:
                parsed = docker.utils.parse_bytes(value)
                ok = parsed > 0 or (parsed == 0 and name not in sizes)
            except docker.errors.DockerException:
                ok = False
            if not ok:
                raise ValueError(f"{name} {value!r} is not a positive size such as '512m' or '4g'")
        if not 0 < self.build_proxy_port < 65536:
            raise ValueError(f"build_proxy_port {self.build_proxy_port} is not a TCP port")
        if self.build_network not in BUILD_NETWORK_MODES:
            raise ValueError(f"build_network {self.build_network!r} must be one of {BUILD_NETWORK_MODES}")
        parse_host_entries(self.build_allowed_hosts)  # ValueError naming the bad entry
        build_pool(self.build_subnet_pool)
        self.build_policy()  # an allowed base that is no image reference fails here

    def build_policy(self) -> BuildPolicy:
        """The Dockerfile policy every build is checked against."""
        return BuildPolicy(allowed_bases=tuple(self.allowed_bases), build_args=dict(self.build_args))


def build_limits_config(config: SandboxConfig) -> BuildLimitsConfig:
    """The bounds of each build, from the sandbox's configuration."""
    return BuildLimitsConfig(
        pids_limit=config.build_pids_limit,
        memory_bytes=docker.utils.parse_bytes(config.build_memory),
        disk_limit_bytes=docker.utils.parse_bytes(config.build_disk_limit),
        min_free_bytes=docker.utils.parse_bytes(config.build_min_free_disk),
        poll_s=config.build_disk_poll_s,
    )


def safe_revision(revision: str) -> str:
    """The first 12 characters of ``revision``, reduced to characters docker names and tags accept."""
    return _UNSAFE_NAME_CHARS_RE.sub("-", revision[:12]).lstrip(".-") or "norev"


def image_tag(validator_id: str, uid: int, revision: str) -> str:
    """The tag a miner's image is built under: one per validator, uid and revision."""
    return f"{IMAGE_REPOSITORY}:{validator_id}-uid{uid}-{safe_revision(revision)}"


def run_name(validator_id: str, uid: int, revision: str, token: str) -> str:
    """Name of one run's container; its network is this name plus ``-net``. ``token`` makes it unique."""
    return f"vv-{validator_id}-uid{uid}-{safe_revision(revision)}-{token}"


def object_labels(
    validator_id: str,
    uid: int,
    revision: str,
    repo_id: str | None = None,
    context: str | None = None,
    hotkey: str | None = None,
) -> dict[str, str]:
    """Labels put on every image, container and network made for one submission.

    Images also carry ``repo_id`` and the build-context digest: together with the revision they are the
    key under which a built image is reused. The miner's ``hotkey`` says whose cache an image may seed.
    """
    labels = {
        LABEL_MANAGED: "true",
        LABEL_ID: validator_id,
        LABEL_UID: str(uid),
        LABEL_REVISION: revision,
    }
    if repo_id is not None:
        labels[LABEL_REPO] = repo_id
    if context is not None:
        labels[LABEL_CONTEXT] = context
    if hotkey is not None:
        labels[LABEL_HOTKEY] = hotkey
    return labels


def image_volumes(image_attrs: dict[str, Any], where: str) -> list[str]:
    """The VOLUME paths an image declares; BuildFailed for paths no tmpfs can safely cover.

    Docker would back each with a writable anonymous volume on the host's disk, escaping the read-only
    root and the tmpfs size cap, so the run covers each with a small tmpfs instead (a bind or volume is
    never created). Refusing such images outright would reject honest miners whose base image declares a
    volume they never use; a capped tmpfs gives the same guarantees as ``/tmp``.
    """
    declared = sorted((image_attrs.get("Config") or {}).get("Volumes") or {})
    if len(declared) > _MAX_IMAGE_VOLUMES:
        raise BuildFailed(
            f"{where}: the image declares {len(declared)} VOLUMEs (at most {_MAX_IMAGE_VOLUMES}): "
            + ", ".join(declared[:20])
        )
    paths: list[str] = []
    for raw in declared:
        path = posixpath.normpath(raw)
        if (
            not path.startswith("/")
            or path == "/"
            or any(path == root or path.startswith(root + "/") for root in _FORBIDDEN_VOLUME_ROOTS)
        ):
            raise BuildFailed(f"{where}: the image declares VOLUME {raw!r}, which the sandbox cannot allow")
        paths.append(path)
    return paths


def device_requests(device_ids: Sequence[str]) -> list[docker.types.DeviceRequest]:
    """The container's GPU request: exactly ``device_ids`` (NVIDIA's ``--gpus '"device=0,1"'``), or none.

    Ids, never a count: a count would let the runtime pick any free GPU, including another worker's.
    """
    if not device_ids:
        return []
    return [docker.types.DeviceRequest(device_ids=list(device_ids), capabilities=[["gpu"]])]


def docker_ping(docker_host: str | None, timeout_s: float) -> str:
    """Ping the daemon and return its version (blocking; every socket operation within ``timeout_s``).

    ``docker_host`` None means the SDK's default (DOCKER_HOST, else the system socket). Raises the SDK's
    or the socket's error when the daemon does not answer.
    """
    timeout = max(1, math.ceil(timeout_s))
    client = (
        docker.DockerClient(base_url=docker_host, timeout=timeout)
        if docker_host
        else docker.from_env(timeout=timeout)
    )
    try:
        client.ping()
        return str(client.version().get("Version", "unknown version"))
    finally:
        client.close()


def ownership_filter(validator_id: str) -> dict[str, list[str]]:
    """Docker list filter selecting exactly the objects one validator created."""
    return {"label": [f"{LABEL_MANAGED}=true", f"{LABEL_ID}={validator_id}"]}


def _tail(text: str, lines: int = _LOG_TAIL_LINES, chars: int = _LOG_TAIL_CHARS) -> str:
    """The last ``lines`` lines of ``text``, at most ``chars`` characters, for error messages."""
    kept = "\n".join(line.rstrip() for line in text.strip().splitlines()[-lines:])
    return kept[-chars:]


class _ClosingStream:
    """An event stream that also closes its own client when closed."""

    def __init__(self, stream: Any, api: docker.APIClient) -> None:
        self._stream = stream
        self._api = api

    def __iter__(self) -> Any:
        return iter(self._stream)

    def close(self) -> None:
        try:
            self._stream.close()
        finally:
            self._api.close()


class _BuildAborted(Exception):
    """Raised inside the build thread when the deadline passed or the caller gave up."""


class _BuildOutput:
    """What one build's messages said: log tail, step containers, image ids, the image built.

    All of it is the miner's text as much as the builder's (a RUN step prints what it likes): the step
    containers and ids are only hints that later checks verify.
    """

    def __init__(self) -> None:
        self.log: deque[str] = deque(maxlen=200)
        self.steps: set[str] = set()
        # Ids named by " ---> <id>" lines: what the build committed or reused (checked before removal).
        self.layers: dict[str, None] = {}
        self.image_id: str | None = None
        self._flooded = False
        self._progress = Throttle(every_n=1_000_000, every_s=_BUILD_PROGRESS_S)
        self._started = time.monotonic()
        # The build thread writes while the event loop may read (a cancelled build cleaning up).
        self._lock = threading.Lock()

    def take(self, message: dict[str, Any]) -> None:
        """Record one message of the daemon; BuildFailed for its error message."""
        if "stream" in message:
            with self._lock:
                self._take_text(str(message["stream"]))
        if "error" in message:
            with self._lock:
                self.log.append(str(message["error"]))
            raise BuildFailed(str(message["error"]))
        aux = message.get("aux")
        if isinstance(aux, dict) and aux.get("ID"):
            self.image_id = str(aux["ID"])

    def _take_text(self, text: str) -> None:
        lines = [line for line in text.splitlines() if line.strip()]
        self.log.extend(lines)
        for layer in reported_layers(lines):
            if len(self.layers) < _MAX_REPORTED_LAYERS:
                self.layers.setdefault(layer)
            elif layer not in self.layers and not self._flooded:
                self._flooded = True
                _slog.warning("build output names too many image ids; not all are recorded")
        step = _BUILD_STEP_RE.match(text)
        # Only the step numbers: the instruction text is the miner's.
        if step and (self._progress.due() or step.group(1) in ("1", step.group(2))):
            _slog.info(
                "image build progress",
                step=f"{step.group(1)}/{step.group(2)}",
                elapsed_s=round(time.monotonic() - self._started),
            )
        self.steps.update(_BUILD_CONTAINER_RE.findall(text))
        match = re.search(r"Successfully built ([0-9a-f]{12,64})", text)
        if match:
            self.image_id = match.group(1)

    def lines(self) -> list[str]:
        """A copy of the log tail kept so far."""
        with self._lock:
            return list(self.log)

    def seen(self) -> tuple[set[str], list[str]]:
        """A copy of the step containers and image ids named so far."""
        with self._lock:
            return set(self.steps), list(self.layers)

    def tail(self) -> str:
        """The end of the build log, for a failure's reason."""
        with self._lock:
            return _tail("\n".join(self.log))


class DockerSandbox:
    """Builds miner repos and runs them in isolated containers on one Docker daemon."""

    def __init__(self, config: SandboxConfig, *, observe_build: Observe | None = None) -> None:
        """``observe_build`` hears each build's duration and outcome (built, failed, error)."""
        self._config = config
        self._observe_build = observe_build
        self._client: docker.DockerClient | None = None
        self._client_lock = asyncio.Lock()
        # container id -> network id, so stop() finds the network even if the container is already gone.
        self._networks: dict[str, str] = {}
        self._host_cpus = 0  # learnt on connect; a CPU limit above it is refused by the daemon
        # One lock per cache key: two starts of the same submission build once, the second reuses it.
        self._build_locks: dict[str, asyncio.Lock] = {}
        # Images a start() is about to run: pruning must not take them before their container exists.
        self._pinned: Counter[str] = Counter()
        # image id -> wall-clock time of its last use by this process; comparable with image creation
        # times, so pruning keeps the most recently used or built images.
        self._last_used: dict[str, float] = {}
        # Build-step containers seen in build output that a failed build may have left (see _build).
        self._build_containers: set[str] = set()
        # container id -> the watch of its events, from its start until it is removed (see exit_report).
        self._watches: dict[str, ContainerWatch] = {}
        # Process and disk bounds of builds; warns once when this daemon cannot have them.
        self._build_host = BuildHost(build_limits_config(config))
        self._build_networks = BuildNetworks(
            config.build_network,
            pool=config.build_subnet_pool,
            proxy_port=config.build_proxy_port,
            allowed_hosts=config.build_allowed_hosts,
            hub_endpoint=config.hub_endpoint,
        )

    @property
    def config(self) -> SandboxConfig:
        """The configuration this sandbox was made with."""
        return self._config

    # ----------------------------------------------------------------------------------------- plumbing

    async def _docker(self) -> docker.DockerClient:
        """The client, connected on first use (the SDK's constructor already talks to the daemon)."""
        async with self._client_lock:
            if self._client is None:
                host = self._config.docker_host
                # No host configured: the SDK's own default (DOCKER_HOST, else the system socket).
                self._client = await self._blocking(
                    lambda: (
                        docker.DockerClient(base_url=host, timeout=int(_API_TIMEOUT_S))
                        if host
                        else docker.from_env(timeout=int(_API_TIMEOUT_S))
                    ),
                    what=f"connect to the docker daemon at {host or 'DOCKER_HOST or the default socket'}",
                )
                info = await self._blocking(self._client.info, what="read the daemon's host facts")
                self._host_cpus = int(info.get("NCPU") or 0)
            return self._client

    async def _blocking(
        self, fn: Any, *args: Any, what: str, limit_s: float = _API_TIMEOUT_S, **kw: Any
    ) -> Any:
        """Run a blocking docker call in a thread under a deadline; daemon trouble -> InfrastructureError.

        ``NotFound`` passes through untouched: callers decide whether a missing object is an error.
        """
        try:
            return await asyncio.wait_for(asyncio.to_thread(fn, *args, **kw), limit_s)
        except docker.errors.NotFound:
            raise
        except TimeoutError as exc:
            raise InfrastructureError(f"docker: {what} timed out after {limit_s:.0f}s") from exc
        except _TRANSPORT_ERRORS as exc:
            raise InfrastructureError(f"docker: {what} failed: {exc}") from exc

    # ----------------------------------------------------------------------------------------- build

    async def _cached_image(self, client: docker.DockerClient, submission: Submission, digest: str) -> Any:
        """This validator's image of the same repo, revision and build context, or None."""
        filters = ownership_filter(self._config.validator_id)
        filters["label"] += [
            f"{LABEL_REPO}={submission.repo_id}",
            f"{LABEL_REVISION}={submission.revision}",
            f"{LABEL_CONTEXT}={digest}",
        ]
        images = await self._blocking(client.images.list, filters=filters, what="look up a cached image")
        if not images:
            return None
        return max(images, key=lambda image: created_epoch(image.attrs))

    async def _image_for(self, client: docker.DockerClient, submission: Submission, repo_dir: Path) -> str:
        """The image id to run ``submission``: reused when this exact context was built before."""
        config = self._config
        where = f"{submission.repo_id}@{submission.short_revision}"
        if not (repo_dir / "Dockerfile").is_file():
            raise BuildFailed(f"{where}: no Dockerfile in the repo")
        try:
            # Before anything reaches the daemon: ADD <url>, FROM and COPY --from are resolved by it.
            await asyncio.to_thread(check_repo_dockerfile, repo_dir, config.build_policy())
            context = await asyncio.to_thread(
                prepare_context, repo_dir, dict(config.build_args), config.context_max_bytes
            )
        except OSError as exc:
            raise BuildFailed(f"{where}: the repo cannot be read: {exc}") from exc
        digest = context.digest
        key = f"{submission.repo_id}@{submission.revision}@{digest}"
        async with self._build_locks.setdefault(key, asyncio.Lock()):
            cached = await self._cached_image(client, submission, digest)
            if cached is not None:
                image_id = str(cached.id)
                tag = image_tag(config.validator_id, submission.uid, submission.revision)
                if tag not in cached.tags:
                    # Another uid submitted the same repo and revision: tag it for this one too.
                    repository, _, version = tag.partition(":")
                    await self._blocking(client.api.tag, image_id, repository, version, what="tag an image")
            else:
                image_id = await self._timed_build(client, submission, repo_dir, context)
            self._pinned[image_id] += 1
            self._last_used[image_id] = time.time()
        if cached is None:
            # A fresh image may push the cache past its size: trim it now (never the image just built).
            try:
                await self.prune_images(keep_latest=config.image_cache_size, keep={image_id})
            except InfrastructureError:
                pass  # a full cache is not worth failing an evaluation for; the next start retries
        return image_id

    async def _timed_build(
        self, client: docker.DockerClient, submission: Submission, repo_dir: Path, context: PreparedContext
    ) -> str:
        """``_build``, timed for ``observe_build`` and logged at its start and end."""
        started = time.monotonic()
        outcome = "error"
        _slog.info("image build started", context_bytes=context.size)
        try:
            image_id = await self._build(client, submission, repo_dir, context)
            outcome = "built"
            return image_id
        except SubmissionRejected:
            outcome = "failed"
            raise
        finally:
            elapsed = time.monotonic() - started
            _slog.info("image build finished", outcome=outcome, build_s=round(elapsed, 1))
            if self._observe_build is not None:
                self._observe_build(elapsed, outcome)

    async def _remove_build_containers(self, client: docker.DockerClient, ids: Collection[str]) -> int:
        """Force-remove build-step containers a failed build left behind. Returns how many went."""
        removed = 0
        for container_id in list(ids):
            try:
                await self._blocking(
                    client.api.remove_container, container_id, force=True, v=True, what="remove a build step"
                )
                removed += 1
            except docker.errors.NotFound:
                pass
            self._build_containers.discard(container_id)
        return removed

    async def _previous_image(self, client: docker.DockerClient, submission: Submission) -> str | None:
        """This validator's most recent image of the same miner (hotkey), to seed its build cache."""
        filters = ownership_filter(self._config.validator_id)
        filters["label"].append(f"{LABEL_HOTKEY}={submission.hotkey}")
        images = await self._blocking(client.images.list, filters=filters, what="look up the miner's images")
        if not images:
            return None
        return str(max(images, key=lambda image: created_epoch(image.attrs)).id)

    def _build_params(
        self, submission: Submission, context: PreparedContext, cache_from: str | None, egress: BuildEgress
    ) -> dict[str, str]:
        """The query of this submission's build (one line per extra parameter).

        The egress's build args (the proxy's address) are not part of the context digest: they change
        with every build network, the image does not.
        """
        config = self._config
        return build_params(
            tag=image_tag(config.validator_id, submission.uid, submission.revision),
            labels=object_labels(
                config.validator_id,
                submission.uid,
                submission.revision,
                submission.repo_id,
                context.digest,
                submission.hotkey,
            ),
            build_args={**config.build_args, **egress.build_args},
            network_mode=egress.network_mode,
            memory=docker.utils.parse_bytes(config.build_memory),
            cpu_shares=config.build_cpu_shares,
            shm_size=docker.utils.parse_bytes(config.shm_size),
            cache_from=cache_from,
        )

    async def _image_ids(self, client: docker.DockerClient) -> set[str]:
        """Ids of every image on the daemon, intermediate ones included."""
        ids = await self._blocking(client.api.images, all=True, quiet=True, what="list all images")
        return {str(image_id) for image_id in ids}

    async def _remove_build_images(
        self, client: docker.DockerClient, reported: list[str], before: set[str], built: str | None
    ) -> int:
        """Remove the intermediate images this build left, under ``build_leftovers``' rule; the count."""
        listing = await self._blocking(client.api.images, all=True, what="list all images")
        removed = 0
        for image_id in leftover_images(listing, reported, before, built):
            try:
                # No force: the daemon refuses images a container uses or that have children. No
                # pruning of parents: every removal is one this rule checked.
                await self._blocking(
                    client.api.remove_image, image_id, force=False, noprune=True, what="remove a build layer"
                )
                removed += 1
            except docker.errors.NotFound:
                continue
            except InfrastructureError as exc:
                if isinstance(exc.__cause__, docker.errors.APIError) and exc.__cause__.status_code == 409:
                    continue  # in use, or a parent of an image that is not ours: not ours to remove
                raise
        if removed:
            _slog.info("build layers removed", count=removed)
        return removed

    async def _build(
        self, client: docker.DockerClient, submission: Submission, repo_dir: Path, context: PreparedContext
    ) -> str:
        """Build ``repo_dir`` and return the image id; BuildFailed carries the end of the build log."""
        config = self._config
        output = _BuildOutput()
        abort = threading.Event()
        deadline = time.monotonic() + config.build_timeout_s
        previous = await self._previous_image(client, submission)
        before = await self._image_ids(client)
        limits = self._build_host.limits(client.api, f"{config.validator_id}-{secrets.token_hex(6)}")

        def check() -> None:
            if abort.is_set() or limits.exceeded or time.monotonic() > deadline:
                raise _BuildAborted

        def run(request: BuildRequest) -> None:
            with contextlib.closing(request.events()) as events:
                for message in events:
                    if "stream" in message:
                        limits.observe(str(message["stream"]))
                    output.take(message)
                    check()

        where = f"{submission.repo_id}@{submission.short_revision}"
        network = build_network_name(config.validator_id, submission.uid, safe_revision(submission.revision))
        labels = object_labels(config.validator_id, submission.uid, submission.revision)
        egress = await self._build_networks.open(client, self._blocking, network, labels)
        try:
            # Checks the data root's free space first (InfrastructureError: nothing is built).
            async with limits:
                params = {**self._build_params(submission, context, previous, egress), **limits.params}
                body = tar_stream(repo_dir, context.members, max_bytes=config.context_max_bytes, check=check)
                # The socket timeout ends a build that goes silent for longer than the whole deadline.
                request = BuildRequest(client.api, params, body, timeout_s=int(config.build_timeout_s) + 1)
                try:
                    await asyncio.wait_for(asyncio.to_thread(run, request), config.build_timeout_s + 30)
                except BaseException as exc:
                    # Stop the thread now (also on cancellation), then remove what the build left: its
                    # step containers (forcerm and the dropped connection normally do) before its images.
                    abort.set()
                    request.cancel()
                    steps, layers = output.seen()
                    self._build_containers.update(steps)
                    with contextlib.suppress(Exception, asyncio.CancelledError):
                        # Bounded: a hung daemon must not hold a failed build for minutes.
                        leftovers = self._after_failed_build(client, steps, layers, before)
                        await asyncio.shield(asyncio.wait_for(leftovers, 30))
                    # Past its disk bound: the miner's; out of disk under it: ours (see build_limits).
                    verdict = await limits.verdict(exc, output.lines())
                    if verdict is not None:
                        raise verdict from exc
                    raise
        except (TimeoutError, _BuildAborted, urllib3.exceptions.ReadTimeoutError) as exc:
            # The SDK streams the build from the raw socket, so a build that stayed silent past the
            # socket timeout surfaces as urllib3's ReadTimeoutError.
            raise BuildFailed(
                f"build of {where} exceeded {config.build_timeout_s:.0f}s:\n{output.tail()}"
            ) from exc
        except BuildFailed as exc:
            if self._build_networks.proxy_failed_during(egress):
                raise InfrastructureError(f"build of {where} failed while the egress proxy was down") from exc
            raise BuildFailed(f"build of {where} failed: {exc}\n{output.tail()}") from exc
        except docker.errors.APIError as exc:
            if exc.is_client_error():  # e.g. a Dockerfile the daemon cannot parse
                raise BuildFailed(f"build of {where} rejected: {exc.explanation or exc}") from exc
            raise InfrastructureError(f"docker: build of {where} failed: {exc}") from exc
        except _TRANSPORT_ERRORS as exc:
            raise InfrastructureError(f"docker: build of {where} failed: {exc}") from exc
        finally:
            abort.set()
            with contextlib.suppress(Exception):
                await asyncio.shield(self._build_networks.release(client, self._blocking, egress))
        if not output.image_id:
            raise BuildFailed(f"build of {where} produced no image:\n{output.tail()}")
        built = await self._verified_image(client, output.image_id, context.digest, where)
        # A multi-stage build leaves its earlier stages behind even when it succeeds.
        with contextlib.suppress(InfrastructureError):
            await self._remove_build_images(client, output.seen()[1], before, built)
        return built

    async def _verified_image(
        self, client: docker.DockerClient, image_id: str, digest: str, where: str
    ) -> str:
        """The full id of the image the build reported, checked to be the one this build labelled.

        "Successfully built <id>" is text a RUN step can print too; the labels of the final step are not.
        """
        try:
            inspected = await self._blocking(
                client.api.inspect_image, image_id, what="inspect the built image"
            )
        except docker.errors.NotFound as exc:
            raise InfrastructureError(f"docker: the image built for {where} vanished") from exc
        labels = (inspected.get("Config") or {}).get("Labels") or {}
        if labels.get(LABEL_CONTEXT) != digest or labels.get(LABEL_ID) != self._config.validator_id:
            raise BuildFailed(f"build of {where} reported image {image_id[:19]}, which it did not build")
        return str(inspected["Id"])

    async def _after_failed_build(
        self, client: docker.DockerClient, steps: set[str], layers: list[str], before: set[str]
    ) -> None:
        """Remove the step containers, then the intermediate images, of a failed or aborted build."""
        try:
            await self._reap_build_steps(client, steps)
            await self._remove_build_images(client, layers, before, None)
        except (InfrastructureError, docker.errors.DockerException) as exc:
            # The build's own error is what the caller needs; this one only leaves layers behind.
            _slog.warning("build leftovers not removed", error=str(exc)[:300])

    async def _reap_build_steps(self, client: docker.DockerClient, steps: set[str]) -> None:
        """Remove the step containers of an aborted build once the daemon had a moment to do so itself."""
        for _ in range(10):
            left = [
                step
                for step in steps
                if await self._blocking(
                    client.containers.list, all=True, filters={"id": step}, what="look for build steps"
                )
            ]
            if not left:
                self._build_containers.difference_update(steps)
                return
            await asyncio.sleep(0.5)
        await self._remove_build_containers(client, left)

    # ----------------------------------------------------------------------------------------- run

    def _cpu_limit(self) -> float:
        """The configured CPU limit, capped at what the host has (a GPU server's setting on a laptop)."""
        if self._host_cpus and self._config.cpus > self._host_cpus:
            return float(self._host_cpus)
        return self._config.cpus

    def _container_kwargs(
        self,
        image_id: str,
        name: str,
        network: str,
        labels: dict[str, str],
        volumes: Collection[str] = (),
        device_ids: Sequence[str] | None = None,
        image_env: Sequence[str] = (),
    ) -> dict[str, Any]:
        """Arguments of ``containers.create`` for one isolated miner container.

        ``volumes`` are the image's VOLUME paths: each gets a size-capped tmpfs, which docker mounts in
        place of the writable anonymous volume it would otherwise create on the host's disk.
        ``device_ids`` None means the configured ``gpu_device_ids``. ``image_env`` is the image's own
        environment, whose ``NVIDIA_*`` variables are overridden (see ``runtime_environment``).
        """
        config = self._config
        gpu_ids = config.gpu_device_ids if device_ids is None else device_ids
        scratch = "rw,nosuid,nodev,size={size},mode=1777"
        tmpfs = {path: scratch.format(size=config.volume_tmpfs_size) for path in volumes}
        tmpfs["/tmp"] = scratch.format(size=config.tmpfs_size)
        kwargs: dict[str, Any] = {
            "image": image_id,
            "name": name,
            "detach": True,
            "labels": {**labels, LABEL_NETWORK: network},
            "network": network,
            "read_only": True,
            "tmpfs": tmpfs,
            "user": config.user,
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges"],
            "mem_limit": config.memory,
            # No swap beyond the memory limit: a miner must not push the host into swapping.
            "memswap_limit": config.memory,
            "nano_cpus": int(self._cpu_limit() * 1e9),
            "pids_limit": config.pids_limit,
            "shm_size": config.shm_size,
            "ulimits": [
                docker.types.Ulimit(name="nofile", soft=config.nofile_limit, hard=config.nofile_limit),
                # Core dumps of a multi-GB model process would only fill the capped tmpfs or fail.
                docker.types.Ulimit(name="core", soft=0, hard=0),
            ],
            # Explicit, so a daemon configured with a shareable/host default cannot widen it.
            "ipc_mode": "private",
            "privileged": False,
            # Only what the image itself sets plus these; the validator's environment never passes.
            "environment": {
                **runtime_environment(image_env, gpu_ids),
                "HOME": "/tmp",
                "PORT": str(config.port),
            },
            # Without this the SDK adds HTTP(S)_PROXY from the validator's docker config to that environment.
            "use_config_proxy": False,
            # A chatty miner must not fill the validator's disk with logs.
            "log_config": docker.types.LogConfig(
                type=docker.types.LogConfig.types.JSON, config={"max-size": "10m", "max-file": "2"}
            ),
        }
        gpus = device_requests(gpu_ids)
        if gpus:
            kwargs["device_requests"] = gpus
        return kwargs

    async def _logs_tail(self, container: Any) -> str:
        """The end of a container's output, or a note when it cannot be read."""
        try:
            raw = await self._blocking(
                container.logs, stdout=True, stderr=True, tail=_LOG_TAIL_LINES, what="read container logs"
            )
        except (InfrastructureError, docker.errors.NotFound) as exc:
            return f"(logs unavailable: {exc})"
        return _tail(raw.decode("utf-8", errors="replace"))

    async def _fetch_health(self, session: aiohttp.ClientSession, url: str) -> Health | str:
        """One health probe: the parsed payload, or a short reason why there is none yet."""
        try:
            async with session.get(url, allow_redirects=False) as response:
                body = await response.content.read(_HEALTH_MAX_BYTES)
                if response.status != 200:
                    return f"HTTP {response.status}"
                return health_from_body(body)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__

    async def _wait_ready(self, container: Any, base_url: str, where: str) -> None:
        """Poll health until the model is loaded; StartFailed if the container exits or time runs out."""
        config = self._config
        deadline = time.monotonic() + config.start_timeout_s
        url = f"{base_url}/api/v1/health"
        last: Health | str = "no answer yet"
        delay = 0.2
        timeout = aiohttp.ClientTimeout(total=_HEALTH_REQUEST_TIMEOUT_S)
        # trust_env=False: a proxy from the environment must never sit between us and a miner.
        async with aiohttp.ClientSession(timeout=timeout, trust_env=False) as session:
            while True:
                await self._blocking(container.reload, what="inspect the miner container")
                state = container.attrs.get("State", {})
                if state.get("Status") in ("exited", "dead"):
                    raise StartFailed(
                        f"{where}: container exited with code {state.get('ExitCode')} before it was ready"
                        f"{' (killed: out of memory)' if state.get('OOMKilled') else ''}:\n"
                        f"{await self._logs_tail(container)}"
                    )
                last = await self._fetch_health(session, url)
                if isinstance(last, Health) and last.ready:
                    return
                if time.monotonic() + delay > deadline:
                    break
                await asyncio.sleep(delay)
                delay = min(delay * 1.5, 2.0)
        described = (
            f"status={last.status} model_loaded={last.model_loaded} error={last.error}"
            if isinstance(last, Health)
            else last
        )
        raise StartFailed(
            f"{where}: not ready after {config.start_timeout_s:.0f}s (last health: {described}):\n"
            f"{await self._logs_tail(container)}"
        )

    async def _start_container(self, container: Any, where: str) -> None:
        """Start a created container; a start the image itself makes impossible is the miner's fault."""
        try:
            await asyncio.wait_for(asyncio.to_thread(container.start), _API_TIMEOUT_S)
        except docker.errors.APIError as exc:
            text = str(exc)
            if exc.is_client_error() or "OCI runtime" in text or "executable file not found" in text:
                raise StartFailed(f"{where}: container could not start: {exc.explanation or text}") from exc
            raise InfrastructureError(f"docker: starting the container of {where} failed: {exc}") from exc
        except TimeoutError as exc:
            raise InfrastructureError(f"docker: starting the container of {where} timed out") from exc
        except _TRANSPORT_ERRORS as exc:
            raise InfrastructureError(f"docker: starting the container of {where} failed: {exc}") from exc

    async def start(
        self, submission: Submission, repo_dir: Path, *, device_ids: Sequence[str] | None = None
    ) -> RunningModel:
        """Build ``repo_dir`` and run it isolated until ``/api/v1/health`` reports the model loaded.

        ``device_ids`` replaces the configured GPUs for this run (a worker's GPU slot, see ``for_slot``).
        Raises ``BuildFailed`` / ``StartFailed`` for the miner's faults and ``InfrastructureError`` when the
        daemon fails. Whatever was created is removed again on any failure or cancellation.
        """
        client = await self._docker()
        where = f"uid {submission.uid} ({submission.repo_id}@{submission.short_revision})"
        image_id = await self._image_for(client, submission, Path(repo_dir))
        try:
            return await self._run(client, submission, image_id, where, device_ids)
        finally:
            # From here on a container (or nothing) uses the image; prune's 409 protects it.
            self._pinned[image_id] -= 1
            if self._pinned[image_id] <= 0:
                del self._pinned[image_id]

    async def _run(
        self,
        client: docker.DockerClient,
        submission: Submission,
        image_id: str,
        where: str,
        device_ids: Sequence[str] | None = None,
    ) -> RunningModel:
        """Run an already built image isolated until it is ready (see ``start``)."""
        config = self._config
        try:
            image_attrs = await self._blocking(client.api.inspect_image, image_id, what="inspect the image")
        except docker.errors.NotFound as exc:
            raise InfrastructureError(f"docker: the image of {where} vanished before its run") from exc
        volumes = image_volumes(image_attrs, where)
        check_image_config(image_attrs, where)
        image_env = (image_attrs.get("Config") or {}).get("Env") or []

        labels = object_labels(config.validator_id, submission.uid, submission.revision)
        name = run_name(config.validator_id, submission.uid, submission.revision, secrets.token_hex(4))
        network_name = f"{name}-net"
        network_id: str | None = None
        container: Any = None
        try:
            network = await self._blocking(
                client.networks.create,
                network_name,
                driver="bridge",
                internal=True,
                labels=labels,
                check_duplicate=True,
                what="create the run's network",
            )
            network_id = network.id
            try:
                container = await self._blocking(
                    client.containers.create,
                    **self._container_kwargs(
                        image_id, name, network_name, labels, volumes, device_ids, image_env
                    ),
                    what="create the miner container",
                )
            except docker.errors.NotFound as exc:
                raise InfrastructureError(f"docker: image or network vanished during start: {exc}") from exc
            self._networks[container.id] = network_id
            self._watch(container.id)
            await self._start_container(container, where)
            await self._blocking(container.reload, what="inspect the miner container")
            address = (
                container.attrs.get("NetworkSettings", {})
                .get("Networks", {})
                .get(network_name, {})
                .get("IPAddress")
            )
            state = container.attrs.get("State", {})
            if not address and state.get("Status") in ("exited", "dead"):
                # Exited before we looked (a CMD that ends at once): the miner's fault, not the daemon's.
                raise StartFailed(
                    f"{where}: container exited with code {state.get('ExitCode')} at start:\n"
                    f"{await self._logs_tail(container)}"
                )
            if not address:
                raise InfrastructureError(
                    f"docker: the container of {where} got no address on {network_name}"
                )
            base_url = f"http://{address}:{config.port}"
            await self._wait_ready(container, base_url, where)
            return RunningModel(base_url=base_url, container_id=container.id, image_id=image_id)
        except BaseException:
            # Shielded: a second cancellation must not leave a half-started miner behind.
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.shield(self._remove(container.id if container else None, network_id))
            raise

    # ----------------------------------------------------------------------------------------- removal

    async def _remove(self, container_id: str | None, network_id: str | None) -> int:
        """Remove a container (forced) and a network; gone objects are fine. Returns how many went."""
        client = await self._docker()
        removed = 0
        if container_id:
            self._networks.pop(container_id, None)
            watch = self._watches.pop(container_id, None)
            if watch is not None:
                watch.close()  # before the removal, so our own kill is never taken for a crash
            with contextlib.suppress(docker.errors.NotFound):
                container = await self._blocking(
                    client.containers.get, container_id, what="find the container"
                )
                await self._blocking(container.remove, force=True, v=True, what="remove the container")
                removed += 1
        if network_id:
            with contextlib.suppress(docker.errors.NotFound):
                network = await self._blocking(client.networks.get, network_id, what="find the network")
                await self._blocking(network.remove, what="remove the network")
                removed += 1
        return removed

    def _watch(self, container_id: str) -> None:
        """Follow a container's events from now on (see ``exit_report``) on a connection of its own."""
        host = self._config.docker_host
        since = int(time.time()) - 1

        def open_stream() -> Any:
            # No read timeout: a healthy container sends no event for hours. Its own client, so the
            # long-lived stream never takes a connection from the pool that API calls share.
            api = docker.APIClient(base_url=host, timeout=None) if host else docker.from_env(timeout=None).api
            stream = api.events(since=since, filters={"container": [container_id]}, decode=True)
            return _ClosingStream(stream, api)

        watch = ContainerWatch(open_stream)
        self._watches[container_id] = watch
        watch.start()

    async def exit_report(self, model: RunningModel) -> ContainerExit | None:
        """See the sandbox port: None while the container runs, the miner's exit, or InfrastructureError."""
        client = await self._docker()
        where = f"container {model.container_id[:12]}"
        try:
            container = await self._blocking(
                client.containers.get, model.container_id, what=f"inspect {where}"
            )
        except docker.errors.NotFound as exc:
            raise InfrastructureError(f"docker: {where} was removed from outside the evaluation") from exc
        state = container.attrs.get("State", {})
        if state.get("Running"):
            return None
        watch = self._watches.get(model.container_id)
        if watch is None:
            raise InfrastructureError(f"docker: {where} stopped and its exit was not watched")
        events = await asyncio.to_thread(watch.snapshot, EVENT_GRACE_S)
        verdict = attribute_exit(events, state, await self._logs_tail(container))
        if isinstance(verdict, str):
            raise InfrastructureError(f"docker: {verdict}")
        return verdict

    async def stop(self, model: RunningModel) -> None:
        """Remove the model's container and its network. Idempotent; never raises for gone objects."""
        network_id = self._networks.get(model.container_id)
        if network_id is None:
            client = await self._docker()
            with contextlib.suppress(docker.errors.NotFound):
                container = await self._blocking(
                    client.containers.get, model.container_id, what="find the container"
                )
                network_id = container.labels.get(LABEL_NETWORK)
        await self._remove(model.container_id, network_id)

    async def cleanup(self) -> int:
        """Remove every container and network labelled with this validator's id. Returns the count.

        Build-step containers carry no labels (the legacy builder copies none to them); those a failed
        build of this process left behind are known by id and removed too. After a daemon crash mid-build
        any others are not attributable to this validator and are left to the operator.
        """
        client = await self._docker()
        filters = ownership_filter(self._config.validator_id)
        removed = await self._remove_build_containers(client, set(self._build_containers))
        containers = await self._blocking(
            client.containers.list, all=True, filters=filters, what="list containers"
        )
        for container in containers:
            removed += await self._remove(container.id, None)
        networks = await self._blocking(client.networks.list, filters=filters, what="list networks")
        for network in networks:
            removed += await self._remove(None, network.id)
        return removed

    async def prune_images(self, keep_latest: int = 0, keep: Collection[str] = ()) -> int:
        """Remove this validator's miner images that no container uses. Returns the count.

        The ``keep_latest`` most recently used (by this process, else most recently built) images stay, as
        do the ids in ``keep`` and images a ``start`` is about to run. ``start`` itself calls this with
        ``image_cache_size`` after each fresh build; the default removes every unused image.
        """
        client = await self._docker()
        # Top-level images only: the legacy builder's intermediate layers of our LABEL step carry the same
        # labels, would count against the cache size, and go with the image they belong to anyway.
        images = await self._blocking(
            client.images.list,
            filters=ownership_filter(self._config.validator_id),
            what="list images",
        )

        def recency(image: Any) -> float:
            return max(self._last_used.get(image.id, 0.0), created_epoch(image.attrs))

        protected = set(keep) | set(self._pinned)
        candidates = sorted(
            (image for image in images if image.id not in protected), key=recency, reverse=True
        )
        removed = 0
        for image in candidates[max(keep_latest, 0) :]:
            try:
                await self._blocking(client.images.remove, image.id, force=False, what="remove an image")
                self._last_used.pop(image.id, None)
                removed += 1
            except docker.errors.NotFound:
                continue
            except InfrastructureError as exc:
                if isinstance(exc.__cause__, docker.errors.APIError) and exc.__cause__.status_code == 409:
                    continue  # still used by a container: keep it
                raise
        return removed

    def for_slot(self, device_ids: Sequence[str]) -> SlotSandbox:
        """A view of this sandbox whose containers get exactly ``device_ids`` (one worker's GPU slot).

        Views share this sandbox's connection, build locks and image cache bookkeeping, so one worker's
        image pruning never removes an image another worker is about to run.
        """
        return SlotSandbox(self, tuple(device_ids))

    async def close(self) -> None:
        """Stop the build egress proxy and close the connection to the daemon (both come back if used)."""
        watches, self._watches = list(self._watches.values()), {}
        for watch in watches:
            await asyncio.to_thread(watch.close)
        await self._build_networks.close()
        async with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.to_thread(client.close), 10)


class SlotSandbox:
    """A :class:`DockerSandbox` whose containers run on one GPU slot (see ``DockerSandbox.for_slot``).

    Implements the sandbox port; ``close`` is a no-op because the shared sandbox belongs to its owner.
    """

    def __init__(self, inner: DockerSandbox, device_ids: tuple[str, ...]) -> None:
        self._inner = inner
        self.device_ids = device_ids

    async def start(self, submission: Submission, repo_dir: Path) -> RunningModel:
        """Build and run as the shared sandbox does, with this slot's GPUs."""
        return await self._inner.start(submission, repo_dir, device_ids=self.device_ids)

    async def stop(self, model: RunningModel) -> None:
        """Stop and remove the model's container and network."""
        await self._inner.stop(model)

    async def exit_report(self, model: RunningModel) -> ContainerExit | None:
        """How the model's container ended, as the shared sandbox tells."""
        return await self._inner.exit_report(model)

    async def cleanup(self) -> int:
        """Remove this validator's leftovers (shared with every slot)."""
        return await self._inner.cleanup()

    async def close(self) -> None:
        """Nothing: the shared sandbox is closed by whoever made it."""
