"""Process and disk bounds of one image build, and whose fault a build that ran out of disk is.

The legacy builder's API has neither a pids nor a disk option, and ``--storage-opt size=`` needs overlay2
on XFS with project quotas (refused on this project's ext4 data root: "--storage-opt is supported only
for overlay over xfs with 'pquota' mount option"; the build API has no storage option at all). So:

* **Processes.** Before each build a cgroup of our own is made, ``/voice-validator-build/<build id>``,
  with ``pids.max`` (``pids_limit``) and a memory limit (``memory_bytes``, no swap), and its path goes
  into the build request as ``cgroupparent``: every step container the daemon starts lands beneath it,
  so the build's process count is bounded however many containers it uses. Removed after the build.
  This needs the daemon on this machine (a unix socket, its data root visible here), the ``cgroupfs``
  cgroup driver and a writable cgroup filesystem. Otherwise (systemd driver, remote daemon, read-only
  cgroupfs, not root) one warning is logged at the first build and builds go on without the bound.
* **Disk.** While the build runs, a watchdog asks the daemon (so the measure does not depend on reading
  its disk) how much the build has written: the rw layer (``SizeRw``) of each running step container,
  plus the layers this build committed so far (each new intermediate image's size minus its parent's),
  plus, on a local daemon, the anonymous volumes of its step containers (``VOLUME`` in a Dockerfile
  gives each later step one, outside the layer). Past ``disk_limit_bytes`` the step containers are
  killed and the build fails as the miner's fault. Step containers are recognised only by their
  ``HostConfig.CgroupParent`` being this build's cgroup: the build output is the miner's text (a RUN
  step can print a fake "Running in <id>" line), so nothing named there is ever acted on unchecked.
  The watchdog therefore runs exactly where the cgroup does.
* **Free space.** Before a build on a local daemon, the data root must have ``min_free_bytes`` free;
  too little is our failure (``InfrastructureError``, retried later), never the miner's.
* **Whose fault.** A build that failed reporting "no space left on device" (or the daemon's equivalents)
  while its own writes stayed under its bound is ours when the daemon's disk really ran low during the
  build (or cannot be seen from here); see :func:`classify_disk_failure`.
* **Leftovers.** A failed build's intermediate images (the legacy builder keeps them, unlabelled) are
  removed, as far as they are provably this build's.

Every call here goes through the docker SDK's low-level client handed in by the sandbox (this module
never imports the SDK itself); its errors are recognised by their HTTP status.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import structlog

from evaluation.errors import BuildFailed, InfrastructureError

CGROUP_PARENT_DIR = "voice-validator-build"
# Below this much free space (or these many free inodes) the data root counts as having run full.
LOW_WATER_BYTES = 1 << 30
LOW_WATER_INODES = 10_000
_API_TIMEOUT_S = 30.0
# A walk of an anonymous volume gives up after this long per poll (it then counts what it saw).
_VOLUME_WALK_S = 2.0
_CGROUP_REMOVE_TRIES = 20
_CGROUP_REMOVE_PAUSE_S = 0.25
# " ---> 1a2b3c4d5e6f" is how the legacy builder names the image a step committed.
_STEP_IMAGE_RE = re.compile(r"^ ---> ([0-9a-f]{12,64})\s*$", re.MULTILINE)
_MAX_LOGGED_IMAGES = 1000
_OUT_OF_SPACE_RE = re.compile(
    r"no space left on device|\bENOSPC\b|disk quota exceeded|\bEDQUOT\b|"
    r"not enough space on the disk|\[Errno 28\]",
    re.IGNORECASE,
)
_V1_CONTROLLERS = frozenset(
    (
        "blkio cpu cpuacct cpuset devices freezer hugetlb memory misc net_cls net_prio perf_event pids rdma"
    ).split()
)
_GIB = float(1 << 30)
_slog = structlog.get_logger(__name__)


# ----------------------------------------------------------------------------------------- pure rules


class DiskVerdict(enum.Enum):
    """What a failed build's disk use says about whose fault the failure is."""

    NOT_DISK = "not-disk"  # nothing to do with disk: the caller's usual handling
    MINER = "miner"  # the build wrote more than its bound
    OURS = "ours"  # the daemon ran out of space while the build stayed under its bound


def mentions_out_of_space(text: str) -> bool:
    """Whether ``text`` reports a full disk (ENOSPC, a quota, the daemon's wording of either)."""
    return _OUT_OF_SPACE_RE.search(text) is not None


def classify_disk_failure(
    failure_text: str, *, written_bytes: int, limit_bytes: int, disk_ran_low: bool | None
) -> DiskVerdict:
    """Whose fault a failed build is as far as disk goes.

    ``failure_text`` is the daemon's error and the end of the build log: the miner's text is in both (the
    failing command, its output), so a report of a full disk alone proves nothing. ``disk_ran_low`` is the
    evidence: whether the daemon's data root was seen (nearly) full during the build, None when its disk
    cannot be seen from here (a remote daemon; then the report is believed, so an honest miner never
    takes a zero for our disk, at the cost of a retry when a miner fakes it).
    """
    if written_bytes > limit_bytes:
        return DiskVerdict.MINER
    if not mentions_out_of_space(failure_text):
        return DiskVerdict.NOT_DISK
    if disk_ran_low is None or disk_ran_low:
        return DiskVerdict.OURS
    # The disk never ran low: the "no space" came from the build's own output (or its own tmpfs).
    return DiskVerdict.NOT_DISK


def ran_low(
    free_bytes: int,
    free_inodes: int | None,
    *,
    low_water_bytes: int = LOW_WATER_BYTES,
    low_water_inodes: int = LOW_WATER_INODES,
) -> bool:
    """Whether a free-space sample of the data root counts as a full disk (bytes or inodes)."""
    return free_bytes <= low_water_bytes or (free_inodes is not None and free_inodes <= low_water_inodes)


def cgroup_mounts(mountinfo: str) -> dict[str, str]:
    """Controller -> mount point of the cgroup hierarchies in ``/proc/self/mountinfo`` text.

    v1 hierarchies are keyed by each controller they carry (``pids``, ``memory``, ``name=systemd``), the
    v2 hierarchy by ``""``. Only mounts of a hierarchy's root count: a mount of a sub-tree (a cgroup
    namespace, a container's view) does not show the paths the daemon writes.
    """
    mounts: dict[str, str] = {}
    for line in mountinfo.splitlines():
        before, sep, after = line.partition(" - ")
        fields, tail = before.split(), after.split()
        if not sep or len(fields) < 5 or len(tail) < 3 or fields[3] != "/":
            continue
        fstype, mount_point = tail[0], fields[4].replace("\\040", " ")
        if fstype == "cgroup2":
            mounts.setdefault("", mount_point)
        elif fstype == "cgroup":
            for option in tail[2].split(","):
                if option in _V1_CONTROLLERS or option.startswith("name="):
                    mounts.setdefault(option, mount_point)
    return mounts


def size_text(value: int) -> str:
    """A byte count the way an operator reads it (GiB with two decimals)."""
    return f"{value / _GIB:.2f} GiB"


# ----------------------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class BuildLimitsConfig:
    """The bounds of one build. ``min_free_bytes`` 0 turns the free-space check off."""

    pids_limit: int = 1024
    memory_bytes: int | None = None
    disk_limit_bytes: int = 60 << 30
    min_free_bytes: int = 20 << 30
    poll_s: float = 2.0
    mountinfo: Path = Path("/proc/self/mountinfo")

    def __post_init__(self) -> None:
        if self.pids_limit <= 0 or self.disk_limit_bytes <= 0 or self.min_free_bytes < 0 or self.poll_s <= 0:
            raise ValueError("pids_limit, disk_limit_bytes and poll_s must be positive, min_free_bytes >= 0")


@dataclass(frozen=True)
class DaemonFacts:
    """What a build's bounds depend on, read once per sandbox from the daemon's ``info``."""

    local: bool
    data_root: str | None  # a path on this machine, only for a local daemon
    storage_dir: str | None  # the storage driver's folder under the data root
    cgroup_driver: str
    cgroup_version: str


def daemon_facts(info: Mapping[str, Any], base_url: str) -> DaemonFacts:
    """The facts from the daemon's ``info`` and the SDK's base URL (blocking: looks at local folders).

    Local means a unix socket (the SDK's base URL for one) and the daemon's data root visible here; tcp,
    ssh and npipe daemons are not on this machine's disk and cgroup tree, or not provably so.
    """
    root = str(info.get("DockerRootDir") or "")
    local = base_url == "http+docker://localhost" and bool(root) and os.path.isdir(root)
    driver = str(info.get("Driver") or "")
    storage = os.path.join(root, driver) if local and driver else None
    return DaemonFacts(
        local=local,
        data_root=root if local else None,
        storage_dir=storage if storage and os.path.isdir(storage) else None,
        cgroup_driver=str(info.get("CgroupDriver") or ""),
        cgroup_version=str(info.get("CgroupVersion") or "1"),
    )


def _status(exc: BaseException) -> int | None:
    """The HTTP status of a docker SDK error (or None): how NotFound / Conflict are told apart here."""
    code = getattr(exc, "status_code", None)
    return code if isinstance(code, int) else None


def _created(attrs: Mapping[str, Any]) -> float:
    """A docker object's creation time as a Unix timestamp (inspect gives RFC 3339, lists seconds)."""
    created = attrs.get("Created")
    if isinstance(created, int | float):
        return float(created)
    try:
        return datetime.fromisoformat(str(created)).timestamp()
    except ValueError:
        return 0.0


# ----------------------------------------------------------------------------------------- cgroups


class BuildCgroup:
    """One build's cgroup under the daemon's cgroupfs hierarchies (blocking file operations)."""

    def __init__(self, relative: str, mounts: Mapping[str, str], version: str) -> None:
        self.relative = relative  # "/voice-validator-build/<build id>": the build's cgroupparent
        self._mounts = dict(mounts)
        self._v2 = version == "2"

    def _dir(self, controller: str) -> Path | None:
        mount = self._mounts.get("" if self._v2 else controller)
        return Path(mount + self.relative) if mount else None

    def create(self, pids_limit: int, memory_bytes: int | None) -> None:
        """Make the cgroup and write its limits; OSError (or KeyError) when this host does not allow it."""
        pids = self._dir("pids")
        if pids is None:
            raise OSError("no pids cgroup hierarchy is mounted at its root here")
        if self._v2:
            self._enable_v2_controllers(pids.parent)
        pids.mkdir(parents=True, exist_ok=True)
        (pids / "pids.max").write_text(str(pids_limit))
        if memory_bytes is not None:
            # The steps already have this limit each; here it also covers the build as a whole.
            with contextlib.suppress(OSError):
                self._limit_memory(memory_bytes)

    def _enable_v2_controllers(self, parent: Path) -> None:
        """cgroup v2: pids (and memory) must be delegated to the parent before its children get limits."""
        parent.mkdir(parents=True, exist_ok=True)
        root = Path(self._mounts[""])
        if "pids" not in (root / "cgroup.subtree_control").read_text().split():
            (root / "cgroup.subtree_control").write_text("+pids")
        (parent / "cgroup.subtree_control").write_text("+pids")
        with contextlib.suppress(OSError):
            (parent / "cgroup.subtree_control").write_text("+memory")

    def _limit_memory(self, memory_bytes: int) -> None:
        memory = self._dir("memory")
        if memory is None:
            return
        memory.mkdir(parents=True, exist_ok=True)
        if self._v2:
            (memory / "memory.max").write_text(str(memory_bytes))
            if (memory / "memory.swap.max").exists():
                (memory / "memory.swap.max").write_text("0")
            return
        (memory / "memory.limit_in_bytes").write_text(str(memory_bytes))
        # Absent when the kernel does not account swap; then there is no swap limit to set.
        if (memory / "memory.memsw.limit_in_bytes").exists():
            (memory / "memory.memsw.limit_in_bytes").write_text(str(memory_bytes))

    def pids_dir(self) -> Path | None:
        """The folder whose ``pids.current`` counts every process of the build."""
        return self._dir("pids")

    def holds(self, container_id: str) -> bool:
        """Whether a container's own cgroup sits in ours here (proof the daemon's cgroups are ours)."""
        pids = self._dir("pids")
        return pids is not None and (pids / container_id).is_dir()

    def fork_refusals(self) -> dict[str, int]:
        """Forks refused at ``pids.max`` so far, per cgroup (ours and each step's beneath it).

        cgroup v1 counts a refusal in the cgroup that forked, i.e. the step's, which goes with its
        container: the watchdog samples these while the steps exist.
        """
        pids = self._dir("pids")
        counts: dict[str, int] = {}
        if pids is None:
            return counts
        with contextlib.suppress(OSError):
            for folder in [pids, *(child for child in pids.iterdir() if child.is_dir())]:
                with contextlib.suppress(OSError, ValueError):
                    for line in (folder / "pids.events").read_text().splitlines():
                        key, _, value = line.partition(" ")
                        if key == "max":
                            counts[folder.name] = int(value)
        return counts

    def _every_dir(self) -> Iterator[Path]:
        # runc makes the path in every hierarchy, not only in the two we wrote limits into.
        for mount in sorted(set(self._mounts.values())):
            path = Path(mount + self.relative)
            if path.is_dir():
                yield path

    def remove(self) -> list[str]:
        """Remove the cgroup in every hierarchy; returns the folders still there (busy)."""
        left: list[str] = []
        for path in self._every_dir():
            try:
                path.rmdir()
            except FileNotFoundError:
                pass
            except OSError:
                left.append(str(path))
        return left


# ----------------------------------------------------------------------------------------- the host


class BuildHost:
    """What every build of one sandbox shares: the daemon's facts and the warnings already given."""

    def __init__(self, config: BuildLimitsConfig) -> None:
        self.config = config
        self._facts: DaemonFacts | None = None
        self._warned: set[str] = set()

    def warn_once(self, key: str, message: str, **fields: Any) -> None:
        """Log ``message`` as a warning the first time ``key`` comes up."""
        if key not in self._warned:
            self._warned.add(key)
            _slog.warning(message, **fields)

    async def facts(self, api: Any) -> DaemonFacts:
        """The daemon's facts, read at the first build."""
        if self._facts is None:
            try:
                info = await asyncio.wait_for(asyncio.to_thread(api.info), _API_TIMEOUT_S)
            except Exception as exc:
                raise InfrastructureError(f"docker: reading the daemon's facts failed: {exc}") from exc
            self._facts = await asyncio.to_thread(daemon_facts, info, str(getattr(api, "base_url", "")))
        return self._facts

    def limits(self, api: Any, build_id: str) -> BuildLimits:
        """The bounds of one build (an async context manager; see :class:`BuildLimits`)."""
        return BuildLimits(self, api, build_id)


def free_space(paths: Iterable[str]) -> tuple[int, int | None, int]:
    """(bytes free to the daemon (root), inodes free, bytes free to others) of the fullest of ``paths``.

    The daemon writes as root, so root's reserve counts for "ran full"; the pre-build check uses what
    ``df`` shows as available, the stricter of the two.
    """
    samples = []
    for path in paths:
        stats = os.statvfs(path)
        inodes = stats.f_ffree if stats.f_files else None
        samples.append((stats.f_bfree * stats.f_frsize, inodes, stats.f_bavail * stats.f_frsize))
    return min(samples, key=lambda sample: sample[0])


@dataclass
class _Step:
    image: str
    volumes: list[str] = field(default_factory=list)


@dataclass
class _Image:
    parent: str
    new: bool  # committed by this build (else: the base or a cache hit from an earlier build)
    own_bytes: int


class BuildLimits:
    """The bounds of one build, entered around it.

    ``async with host.limits(api, build_id) as limits:`` checks the data root's free space (raises
    InfrastructureError when too low), makes the build's cgroup and starts the disk watchdog. Add
    ``limits.params`` to the ``POST /build`` query, call ``limits.observe(text)`` with each piece of build
    output, stop the build when ``limits.exceeded`` turns true, and on a failure raise
    ``limits.verdict(error, log)`` when it is not None. Leaving removes the cgroup (and a failed build's
    intermediate images).
    """

    def __init__(self, host: BuildHost, api: Any, build_id: str) -> None:
        self._host = host
        self._api = api
        self.build_id = build_id
        self.params: dict[str, str] = {}
        self.exceeded = False
        self.reason: str | None = None
        self.written_bytes = 0  # the largest total the watchdog measured
        self._fork_refusals: dict[str, int] = {}
        self.longest_poll_s = 0.0
        self.cgroup: BuildCgroup | None = None
        self._facts: DaemonFacts | None = None
        self._task: asyncio.Task[None] | None = None
        self._start_epoch = 0.0
        self._free_at_start: int | None = None
        self._ran_low = False
        self._steps: dict[str, _Step] = {}
        self._not_steps: set[str] = set()
        self._images: dict[str, _Image] = {}
        self._logged_images: set[str] = set()

    @property
    def fork_refusals(self) -> int:
        """Forks of this build refused at its process limit, as far as the watchdog saw them."""
        return sum(self._fork_refusals.values())

    @property
    def new_images(self) -> list[str]:
        """Ids of the intermediate images this build was seen to commit."""
        return [image_id for image_id, image in self._images.items() if image.new]

    # ---------------------------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> BuildLimits:
        facts = self._facts = await self._host.facts(self._api)
        await self._check_free_space(facts)
        # Daemon clock: creation times of containers and images are compared with this.
        self._start_epoch = await self._daemon_now()
        cgroup = await self._make_cgroup(facts)
        if cgroup is not None:
            self.cgroup = cgroup
            self.params = {"cgroupparent": cgroup.relative}
            self._task = asyncio.create_task(self._watch(), name=f"build-disk-watch-{self.build_id}")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self.cgroup is None:
            return
        failed = exc_type is not None or self.exceeded
        # Shielded and bounded: a cancelled evaluation must still take its cgroup and leftovers away.
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.shield(asyncio.wait_for(self._tidy(failed), 60))

    async def _tidy(self, failed: bool) -> None:
        if failed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.to_thread(self._measure), _API_TIMEOUT_S)
            await asyncio.to_thread(self._remove_steps)
            await asyncio.to_thread(self._remove_new_images)
        await self._remove_cgroup()

    async def _daemon_now(self) -> float:
        try:
            info = await asyncio.wait_for(asyncio.to_thread(self._api.info), _API_TIMEOUT_S)
            stamp = _created({"Created": info.get("SystemTime")})
        except Exception:
            stamp = 0.0
        # A second's slack for clock granularity; creation times in lists are whole seconds.
        return (stamp or time.time()) - 2.0

    async def _check_free_space(self, facts: DaemonFacts) -> None:
        config = self._host.config
        if not facts.data_root:
            if config.min_free_bytes:
                self._host.warn_once(
                    "remote-disk",
                    "the docker daemon's data root is not on this machine: no free-space check before "
                    "builds, and a build that reports a full disk is believed (counted as ours)",
                )
            return
        paths = [p for p in (facts.data_root, facts.storage_dir) if p]
        free_root, inodes, available = await asyncio.to_thread(free_space, paths)
        self._free_at_start = free_root
        if ran_low(free_root, inodes):
            self._ran_low = True
        if available < config.min_free_bytes:
            _slog.error(
                "build refused: too little free space on the docker data root",
                data_root=facts.data_root,
                free=size_text(available),
                required=size_text(config.min_free_bytes),
            )
            raise InfrastructureError(
                f"docker: the daemon's data root {facts.data_root} has {size_text(available)} free, less "
                f"than build-min-free-disk ({size_text(config.min_free_bytes)}); not building until "
                "there is room"
            )

    async def _make_cgroup(self, facts: DaemonFacts) -> BuildCgroup | None:
        config = self._host.config
        if not facts.local or facts.cgroup_driver != "cgroupfs":
            self._host.warn_once(
                "no-cgroup",
                "image builds run without a process bound or a disk watchdog: those need a docker daemon "
                "on this machine with the cgroupfs cgroup driver",
                local=facts.local,
                cgroup_driver=facts.cgroup_driver,
            )
            return None
        try:
            mountinfo = await asyncio.to_thread(config.mountinfo.read_text)
        except OSError as exc:
            mountinfo = ""
            _slog.debug("mountinfo unreadable", error=str(exc))
        cgroup = BuildCgroup(
            f"/{CGROUP_PARENT_DIR}/{self.build_id}", cgroup_mounts(mountinfo), facts.cgroup_version
        )
        try:
            await asyncio.to_thread(cgroup.create, config.pids_limit, config.memory_bytes)
        except (OSError, KeyError) as exc:
            self._host.warn_once(
                "cgroup-failed",
                "image builds run without a process bound or a disk watchdog: the build cgroup could "
                "not be made (read-only cgroupfs or not root?)",
                error=str(exc),
            )
            with contextlib.suppress(Exception):
                await asyncio.to_thread(cgroup.remove)
            return None
        return cgroup

    async def _remove_cgroup(self) -> None:
        cgroup = self.cgroup
        assert cgroup is not None
        self._fork_refusals.update(await asyncio.to_thread(cgroup.fork_refusals))
        if self.fork_refusals:
            _slog.info("build hit its process limit", forks_refused=self.fork_refusals)
        left: list[str] = []
        # The last step container's cgroup can stay busy for a moment after the build's end.
        for _ in range(_CGROUP_REMOVE_TRIES):
            left = await asyncio.to_thread(cgroup.remove)
            if not left:
                return
            await asyncio.sleep(_CGROUP_REMOVE_PAUSE_S)
        _slog.warning("build cgroup still busy; left in place", paths=left)

    # ---------------------------------------------------------------------------------- the build's hooks

    def observe(self, text: str) -> None:
        """Hear a piece of build output (thread-safe enough: only adds to a bounded set).

        The image ids the builder names here are candidates for removal after a failure, and each one is
        checked against the daemon first (see ``_remove_new_images``).
        """
        if len(self._logged_images) < _MAX_LOGGED_IMAGES:
            self._logged_images.update(_STEP_IMAGE_RE.findall(text))

    async def verdict(self, failure: BaseException, log: Iterable[str]) -> Exception | None:
        """The error a failed build should raise instead of the caller's usual one, or None."""
        if self.exceeded:
            return BuildFailed(self.reason or "the build wrote more than its disk bound")
        if isinstance(failure, asyncio.CancelledError):
            return None
        text = f"{failure}\n" + "\n".join(log)
        fault = classify_disk_failure(
            text,
            written_bytes=self.written_bytes,
            limit_bytes=self._host.config.disk_limit_bytes,
            disk_ran_low=await asyncio.to_thread(self._disk_ran_low),
        )
        if fault is DiskVerdict.MINER:
            return BuildFailed(self._exceeded_reason())
        if fault is DiskVerdict.OURS:
            _slog.error(
                "build failed for lack of disk on our side",
                written=size_text(self.written_bytes),
                data_root=self._facts.data_root if self._facts else None,
            )
            return InfrastructureError(
                "docker: the build ran out of disk space on the daemon while it had written only "
                f"{size_text(self.written_bytes)} (its bound is "
                f"{size_text(self._host.config.disk_limit_bytes)}): our disk, retried later"
            )
        return None

    def _disk_ran_low(self) -> bool | None:
        """Whether the data root was seen (nearly) full during the build; None when it cannot be seen."""
        facts = self._facts
        if facts is None or not facts.data_root:
            return None
        if not self._ran_low:
            with contextlib.suppress(OSError):
                free_root, inodes, _ = free_space([p for p in (facts.data_root, facts.storage_dir) if p])
                self._ran_low = ran_low(free_root, inodes)
        # What the build itself wrote came out of the free space it started with.
        if self._free_at_start is not None and ran_low(self._free_at_start - self.written_bytes, None):
            self._ran_low = True
        return self._ran_low

    def _exceeded_reason(self) -> str:
        return (
            f"the build wrote more than {size_text(self._host.config.disk_limit_bytes)} "
            f"(build-disk-limit; measured {size_text(self.written_bytes)})"
        )

    # ---------------------------------------------------------------------------------- the watchdog

    async def _watch(self) -> None:
        config = self._host.config
        while True:
            started = time.monotonic()
            try:
                total, live = await asyncio.wait_for(asyncio.to_thread(self._measure), _API_TIMEOUT_S)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # A poll that failed says nothing about the miner; the next one tries again.
                _slog.debug("build disk poll failed", error=str(exc))
                total, live = self.written_bytes, []
            elapsed = time.monotonic() - started
            self.longest_poll_s = max(self.longest_poll_s, elapsed)
            self.written_bytes = max(self.written_bytes, total)
            if self.written_bytes > config.disk_limit_bytes:
                if not self.exceeded:
                    self.exceeded = True
                    self.reason = self._exceeded_reason()
                    _slog.warning("build stopped at its disk bound", written=size_text(self.written_bytes))
                await asyncio.to_thread(self._stop_steps, live)
            # A daemon slow to size a layer of many files is not polled harder.
            await asyncio.sleep(max(config.poll_s, 2 * elapsed))

    def _measure(self) -> tuple[int, list[tuple[str, str]]]:
        """(bytes this build has written, (id, state) of its live step containers); blocking.

        A step's rw layer counts while it is created or running; once it exited it is either committed
        (and counts as an image as soon as the next step runs on it) or thrown away, so nothing is
        counted twice.
        """
        facts = self._facts
        steps = [cid for cid in map(self._classify, self._api.containers(all=True)) if cid is not None]
        total, live = 0, []
        for cid in steps:
            sized = [
                item
                for item in self._api.containers(all=True, size=True, filters={"id": cid})
                if item.get("Id") == cid
            ]
            state = str(sized[0].get("State") or "") if sized else ""
            if state not in ("created", "running"):
                continue
            live.append((cid, state))
            total += int(sized[0].get("SizeRw") or 0)
            if facts is not None and facts.local:
                total += sum(_walk_size(source) for source in self._steps[cid].volumes)
        for step in list(self._steps.values()):
            self._learn_image(step.image)
        total += sum(image.own_bytes for image in self._images.values() if image.new)
        if self.cgroup is not None:
            self._fork_refusals.update(self.cgroup.fork_refusals())
        if facts is not None and facts.data_root:
            free_root, inodes, _ = free_space([p for p in (facts.data_root, facts.storage_dir) if p])
            self._ran_low = self._ran_low or ran_low(free_root, inodes)
        return total, live

    def _classify(self, item: Mapping[str, Any]) -> str | None:
        """The container's id when it is one of this build's steps, else None (decided once per id)."""
        cid = str(item.get("Id") or "")
        if cid in self._steps:
            return cid
        if not cid or cid in self._not_steps or float(item.get("Created") or 0) < self._start_epoch:
            return None
        try:
            attrs = self._api.inspect_container(cid)
        except Exception as exc:
            if _status(exc) == 404:
                return None  # gone already; if it was ours, its commit shows up in the next step
            raise
        if (attrs.get("HostConfig") or {}).get("CgroupParent") != self.params.get("cgroupparent"):
            self._not_steps.add(cid)
            return None
        if self.cgroup is not None and (attrs.get("State") or {}).get("Running"):
            if not self.cgroup.holds(cid):
                self._host.warn_once(
                    "cgroup-elsewhere",
                    "a build step's cgroup is not where this process sees the build cgroup: the daemon "
                    "may not share this machine's cgroup tree, so the process bound may not hold",
                    cgroup=self.cgroup.relative,
                )
        volumes = [
            str(mount["Source"])
            for mount in attrs.get("Mounts") or []
            if mount.get("Type") == "volume" and mount.get("Source")
        ]
        self._steps[cid] = _Step(str(attrs.get("Image") or ""), volumes)
        return cid

    def _learn_image(self, image_id: str) -> None:
        """Record ``image_id`` and its ancestors back to the first one older than this build."""
        while image_id and image_id not in self._images:
            try:
                attrs = self._api.inspect_image(image_id)
            except Exception as exc:
                if _status(exc) == 404:
                    return
                raise
            parent = str(attrs.get("Parent") or "")
            new = _created(attrs) >= self._start_epoch
            own = int(attrs.get("Size") or 0)
            if new and parent:
                try:
                    own -= int(self._api.inspect_image(parent).get("Size") or 0)
                except Exception as exc:
                    if _status(exc) != 404:
                        raise
            # Keyed by the id a step container names (the full "sha256:" id, as inspect gives it).
            self._images[image_id] = _Image(parent, new, max(own, 0))
            if not new:
                return
            image_id = parent

    def _stop_steps(self, live: Iterable[tuple[str, str]]) -> None:
        """Kill the running steps (the RUN fails at once, even one that prints nothing), and remove
        created ones (the daemon copying an archive into one fails with it)."""
        for cid, state in live:
            with contextlib.suppress(Exception):
                if state == "running":
                    self._api.kill(cid)
                else:
                    self._api.remove_container(cid, force=True, v=True)

    # ---------------------------------------------------------------------------------- leftovers

    def _remove_steps(self) -> None:
        """Force-remove this build's step containers that are still there (provably ours)."""
        for cid in list(self._steps):
            try:
                self._api.remove_container(cid, force=True, v=True)
            except Exception as exc:
                if _status(exc) not in (404, 409):  # 409: the daemon is removing it already
                    _slog.debug("removing a build step failed", error=str(exc))

    def _remove_new_images(self) -> None:
        """Remove the intermediate images a failed build committed, newest first.

        Ours for certain: images in the chain of a step container of this build, created during it. An id
        named in the build output counts only when the daemon shows it untagged, created during this build
        and a child of an image this build ran on, and a removal is never forced (an image a container or
        a child still uses stays).
        """
        for image_id in list(self._logged_images):
            if image_id in self._images:
                continue
            try:
                attrs = self._api.inspect_image(image_id)
            except Exception:
                continue
            if (
                not attrs.get("RepoTags")
                and _created(attrs) >= self._start_epoch
                and str(attrs.get("Parent") or "") in self._images
            ):
                self._images[str(attrs["Id"])] = _Image(str(attrs.get("Parent") or ""), True, 0)
        new = {image_id: image for image_id, image in self._images.items() if image.new}
        parents = {image.parent for image in new.values()}
        # Children first: removing a child also takes its untagged parents with it.
        for image_id in sorted(new, key=lambda i: i in parents):
            try:
                self._api.remove_image(image_id, force=False, noprune=False)
            except Exception as exc:
                if _status(exc) not in (404, 409):
                    _slog.debug("removing an intermediate image failed", error=str(exc))


def _walk_size(root: str) -> int:
    """Bytes on disk under ``root`` (a step container's anonymous volume), within a time budget."""
    total = 0
    deadline = time.monotonic() + _VOLUME_WALK_S
    seen: set[tuple[int, int]] = set()
    for current, _dirs, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):
                info = os.lstat(os.path.join(current, name))
                if (info.st_dev, info.st_ino) not in seen:
                    seen.add((info.st_dev, info.st_ino))
                    total += info.st_blocks * 512
        if time.monotonic() > deadline:
            break
    return total
