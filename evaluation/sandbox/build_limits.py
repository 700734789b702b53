"""The bounds of one image build as a whole: processes, disk, and the free space it needs to start.

The legacy builder's API has neither a pids nor a disk option, so around each build:

* **Free space.** On a local daemon the data root must have ``min_free_bytes`` free before the build;
  too little is our failure (``InfrastructureError``, retried later), never the miner's.
* **Processes.** A cgroup of our own (``build_cgroup``) with ``pids.max`` and a memory limit, passed as
  the build's ``cgroupparent``: every step container lands beneath it.
* **Disk.** A watchdog polls a meter (``build_disk``) every ``poll_s``; past ``disk_limit_bytes`` it
  kills the build's steps and the build fails as the miner's fault ("the build wrote more than ...").
* **Whose fault.** A failed build reporting a full disk while under its bound is ours when the data root
  really ran low (or cannot be seen from here): ``build_disk.classify_disk_failure``.
* **Leftovers.** After a failed build, its step containers and intermediate images (the legacy builder
  keeps those, unlabelled) are removed as far as they are provably its own; the cgroup always goes.

The cgroup and the watchdog (which recognises steps by that cgroup) need the daemon on this machine (a
unix socket, its data root visible here), the ``cgroupfs`` cgroup driver and a writable cgroup
filesystem. Otherwise (systemd driver, remote daemon, read-only cgroupfs, not root) one warning is logged
at the first build and builds go on without either: the free-space rule and the per-step memory limit
still hold where they can.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import structlog

from evaluation.errors import BuildFailed, InfrastructureError
from evaluation.sandbox.build_cgroup import CGROUP_PARENT_DIR, BuildCgroup, cgroup_mounts
from evaluation.sandbox.build_disk import (
    BuildDiskMeter,
    DiskVerdict,
    Measure,
    classify_disk_failure,
    created_epoch,
    free_space,
    ran_low,
    size_text,
)

_API_TIMEOUT_S = 30.0
_CGROUP_REMOVE_TRIES = 20
_CGROUP_REMOVE_PAUSE_S = 0.25
_slog = structlog.get_logger(__name__)


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

    @property
    def disk_paths(self) -> list[str]:
        """The folders whose free space counts (none when the daemon's disk is not here)."""
        return [path for path in (self.data_root, self.storage_dir) if path]


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


class BuildLimits:
    """The bounds of one build, entered around it.

    ``async with host.limits(api, build_id) as limits:`` checks the data root's free space (raises
    InfrastructureError when too low), makes the build's cgroup and starts the disk watchdog. Add
    ``limits.params`` to the ``POST /build`` query, call ``limits.observe(text)`` with each piece of build
    output, stop reading the build when ``limits.exceeded`` turns true, and on a failure raise
    ``await limits.verdict(error, log)`` when it is not None. Leaving removes the cgroup (and a failed
    build's leftovers).
    """

    def __init__(self, host: BuildHost, api: Any, build_id: str) -> None:
        self._host = host
        self._api = api
        self.build_id = build_id
        self.params: dict[str, str] = {}
        self.exceeded = False
        self.reason: str | None = None
        self.written_bytes = 0  # the largest total the watchdog measured
        self.longest_poll_s = 0.0
        self.cgroup: BuildCgroup | None = None
        self.meter: BuildDiskMeter | None = None
        self._facts: DaemonFacts | None = None
        self._task: asyncio.Task[None] | None = None
        self._free_at_start: int | None = None
        self._ran_low = False
        self._fork_refusals: dict[str, int] = {}

    @property
    def fork_refusals(self) -> int:
        """Forks of this build refused at its process limit, as far as the watchdog saw them."""
        return sum(self._fork_refusals.values())

    @property
    def new_images(self) -> list[str]:
        """Ids of the intermediate images this build was seen to commit."""
        return self.meter.new_images if self.meter else []

    # ---------------------------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> BuildLimits:
        facts = self._facts = await self._host.facts(self._api)
        await self._check_free_space(facts)
        # Daemon clock: creation times of containers and images are compared with this.
        start_epoch = await self._daemon_now()
        cgroup = await self._make_cgroup(facts)
        if cgroup is not None:
            self.cgroup = cgroup
            self.params = {"cgroupparent": cgroup.relative}
            self.meter = BuildDiskMeter(
                self._api, cgroup.relative, start_epoch, facts.disk_paths, cgroup.holds, self._elsewhere
            )
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
        if failed and self.meter is not None:
            with contextlib.suppress(Exception):
                # One last look finds a step the polls missed, before the leftovers go.
                await asyncio.wait_for(asyncio.to_thread(self._poll), _API_TIMEOUT_S)
            await asyncio.to_thread(self.meter.remove_leftovers)
        await self._remove_cgroup()

    async def _daemon_now(self) -> float:
        try:
            info = await asyncio.wait_for(asyncio.to_thread(self._api.info), _API_TIMEOUT_S)
            stamp = created_epoch({"Created": info.get("SystemTime")})
        except Exception:
            stamp = 0.0
        # Slack for clock granularity: creation times in container lists are whole seconds.
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
        free_root, inodes, available = await asyncio.to_thread(free_space, facts.disk_paths)
        self._free_at_start = free_root
        self._ran_low = ran_low(free_root, inodes)
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
        except OSError:
            mountinfo = ""  # reported below: no pids hierarchy to be seen
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

    def _elsewhere(self) -> None:
        self._host.warn_once(
            "cgroup-elsewhere",
            "a build step's cgroup is not where this process sees the build cgroup: the daemon may not "
            "share this machine's cgroup tree, so the process bound may not hold",
        )

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
        """Hear a piece of build output (from the build's thread; only adds to a bounded set)."""
        if self.meter is not None:
            self.meter.observe(text)

    async def verdict(self, failure: BaseException, log: Iterable[str]) -> Exception | None:
        """The error a failed build should raise instead of the caller's usual one, or None."""
        if self.exceeded:
            return BuildFailed(self.reason or self._exceeded_reason())
        if isinstance(failure, asyncio.CancelledError):
            return None
        fault = classify_disk_failure(
            f"{failure}\n" + "\n".join(log),
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
                free_root, inodes, _ = free_space(facts.disk_paths)
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

    def _poll(self) -> Measure:
        """One measure, and the fork refusals of the steps that exist now (blocking)."""
        assert self.meter is not None and self.cgroup is not None
        measure = self.meter.measure()
        self._fork_refusals.update(self.cgroup.fork_refusals())
        self._ran_low = self._ran_low or measure.disk_ran_low
        self.written_bytes = max(self.written_bytes, measure.written_bytes)
        return measure

    async def _watch(self) -> None:
        config = self._host.config
        assert self.meter is not None
        while True:
            started = time.monotonic()
            try:
                live = (await asyncio.wait_for(asyncio.to_thread(self._poll), _API_TIMEOUT_S)).live
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # A poll that failed says nothing about the miner; the next one tries again.
                _slog.debug("build disk poll failed", error=str(exc))
                live = []
            elapsed = time.monotonic() - started
            self.longest_poll_s = max(self.longest_poll_s, elapsed)
            if self.written_bytes > config.disk_limit_bytes:
                if not self.exceeded:
                    self.exceeded = True
                    self.reason = self._exceeded_reason()
                    _slog.warning("build stopped at its disk bound", written=size_text(self.written_bytes))
                await asyncio.to_thread(self.meter.stop, live)
            # A daemon slow to size a layer of many files is not polled harder.
            await asyncio.sleep(max(config.poll_s, 2 * elapsed))
