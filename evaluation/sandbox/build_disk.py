"""How much one image build has written, and whose fault a build that ran out of disk is.

The legacy builder has no disk option, and ``--storage-opt size=`` needs overlay2 on XFS with project
quotas (this project's ext4 data root refuses it: "--storage-opt is supported only for overlay over xfs
with 'pquota' mount option"; the build API has no storage option at all). So a meter asks the daemon
what the build wrote: the rw layer (``SizeRw``) of each live step container, the layers it committed so
far (each new intermediate image's size minus its parent's) and, when the daemon is local, the anonymous
volumes its steps got (``VOLUME`` in a Dockerfile gives each later step one, outside the layer).

Step containers are recognised only by their ``HostConfig.CgroupParent`` being this build's cgroup: the
build output is the miner's text (a RUN step can print a fake "Running in <id>" line), so nothing named
there is acted on unchecked. Blocking docker calls throughout (callers run them in a thread), through the
SDK's low-level client handed in by the sandbox; its errors are recognised by their HTTP status.
"""

from __future__ import annotations

import contextlib
import enum
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog

# Below this much free space (or these many free inodes) the data root counts as having run full.
LOW_WATER_BYTES = 1 << 30
LOW_WATER_INODES = 10_000
# A walk of an anonymous volume gives up after this long per poll (it then counts what it saw).
_VOLUME_WALK_S = 2.0
# " ---> 1a2b3c4d5e6f" is how the legacy builder names the image a step committed.
_STEP_IMAGE_RE = re.compile(r"^ ---> ([0-9a-f]{12,64})\s*$", re.MULTILINE)
_MAX_LOGGED_IMAGES = 1000
_OUT_OF_SPACE_RE = re.compile(
    r"no space left on device|\bENOSPC\b|disk quota exceeded|\bEDQUOT\b|"
    r"not enough space on the disk|\[Errno 28\]",
    re.IGNORECASE,
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


def size_text(value: int) -> str:
    """A byte count the way an operator reads it (GiB with two decimals)."""
    return f"{value / _GIB:.2f} GiB"


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


def status_of(exc: BaseException) -> int | None:
    """The HTTP status of a docker SDK error (or None): how NotFound / Conflict are told apart here."""
    code = getattr(exc, "status_code", None)
    return code if isinstance(code, int) else None


def created_epoch(attrs: Mapping[str, Any]) -> float:
    """A docker object's creation time as a Unix timestamp (inspect gives RFC 3339, lists seconds)."""
    created = attrs.get("Created")
    if isinstance(created, int | float):
        return float(created)
    try:
        return datetime.fromisoformat(str(created)).timestamp()
    except ValueError:
        return 0.0


# ----------------------------------------------------------------------------------------- the meter


@dataclass(frozen=True)
class Measure:
    """One poll: bytes written so far, the live steps as (id, state), whether the disk ran low."""

    written_bytes: int
    live: list[tuple[str, str]]
    disk_ran_low: bool


@dataclass
class _Step:
    image: str
    volumes: list[str]


@dataclass
class _Image:
    parent: str
    new: bool  # committed by this build (else: the base or a cache hit from an earlier build)
    own_bytes: int


class BuildDiskMeter:
    """What one build has written, through the daemon's API; blocking, safe to call from two threads.

    ``cgroup_parent`` is the build's proof of ownership, ``start_epoch`` its start by the daemon's clock
    (older containers and images are not its own), ``free_paths`` the data root's folders when they are
    on this machine (also the sign that volumes can be walked here). ``holds(id)`` tells whether a step's
    cgroup is visible in ours; ``on_elsewhere`` hears when it is not.
    """

    def __init__(
        self,
        api: Any,
        cgroup_parent: str,
        start_epoch: float,
        free_paths: list[str],
        holds: Callable[[str], bool],
        on_elsewhere: Callable[[], None],
    ) -> None:
        self._api = api
        self._parent = cgroup_parent
        self._start = start_epoch
        self._free_paths = free_paths
        self._holds = holds
        self._on_elsewhere = on_elsewhere
        self._steps: dict[str, _Step] = {}
        self._not_steps: set[str] = set()
        self._images: dict[str, _Image] = {}
        self._logged_images: set[str] = set()
        # A cancelled poll's thread may still run while the next poll or the clean-up starts.
        self._lock = threading.Lock()

    @property
    def new_images(self) -> list[str]:
        """Ids of the intermediate images this build was seen to commit."""
        return [image_id for image_id, image in self._images.items() if image.new]

    def observe(self, text: str) -> None:
        """Hear a piece of build output: the image ids it names are checked before any removal."""
        if len(self._logged_images) < _MAX_LOGGED_IMAGES:
            self._logged_images.update(_STEP_IMAGE_RE.findall(text))

    def measure(self) -> Measure:
        """Poll the daemon once.

        A step's rw layer counts while it is created or running; once it exited it is either committed
        (and counts as an image as soon as the next step runs on it) or thrown away, so nothing is
        counted twice.
        """
        with self._lock:
            steps = [cid for cid in map(self._classify, self._api.containers(all=True)) if cid]
            total, live = 0, []
            for cid in steps:
                state, size = self._layer(cid)
                if state in ("created", "running"):
                    live.append((cid, state))
                    total += size
                    if self._free_paths:
                        total += sum(_walk_size(source) for source in self._steps[cid].volumes)
            for step in list(self._steps.values()):
                self._learn_image(step.image)
            total += sum(image.own_bytes for image in self._images.values() if image.new)
            low = False
            if self._free_paths:
                free_root, inodes, _ = free_space(self._free_paths)
                low = ran_low(free_root, inodes)
            return Measure(total, live, low)

    def _layer(self, cid: str) -> tuple[str, int]:
        """A step container's state and the size of its rw layer ("" when it is gone)."""
        for item in self._api.containers(all=True, size=True, filters={"id": cid}):
            if item.get("Id") == cid:
                return str(item.get("State") or ""), int(item.get("SizeRw") or 0)
        return "", 0

    def _classify(self, item: Mapping[str, Any]) -> str | None:
        """The container's id when it is one of this build's steps, else None (decided once per id)."""
        cid = str(item.get("Id") or "")
        if cid in self._steps:
            return cid
        if not cid or cid in self._not_steps or float(item.get("Created") or 0) < self._start:
            return None
        try:
            attrs = self._api.inspect_container(cid)
        except Exception as exc:
            if status_of(exc) == 404:
                return None  # gone already; if it was ours, its commit shows up in the next step
            raise
        if (attrs.get("HostConfig") or {}).get("CgroupParent") != self._parent:
            self._not_steps.add(cid)
            return None
        if (attrs.get("State") or {}).get("Running") and not self._holds(cid):
            self._on_elsewhere()
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
                if status_of(exc) == 404:
                    return
                raise
            parent = str(attrs.get("Parent") or "")
            new = created_epoch(attrs) >= self._start
            own = int(attrs.get("Size") or 0)
            if new and parent:
                try:
                    own -= int(self._api.inspect_image(parent).get("Size") or 0)
                except Exception as exc:
                    if status_of(exc) != 404:
                        raise
            # Keyed by the id a step container names (the full "sha256:" id, as inspect gives it).
            self._images[image_id] = _Image(parent, new, max(own, 0))
            if not new:
                return
            image_id = parent

    def stop(self, live: Iterable[tuple[str, str]]) -> None:
        """Kill the running steps (the RUN fails at once, even one that prints nothing) and remove
        created ones (the daemon copying an archive into one fails with it)."""
        for cid, state in live:
            with contextlib.suppress(Exception):
                if state == "running":
                    self._api.kill(cid)
                else:
                    self._api.remove_container(cid, force=True, v=True)

    def remove_leftovers(self) -> None:
        """After a failed build: its step containers that are still there, then its new images."""
        with self._lock:
            for cid in list(self._steps):
                try:
                    self._api.remove_container(cid, force=True, v=True)
                except Exception as exc:
                    if status_of(exc) not in (404, 409):  # 409: the daemon is removing it already
                        _slog.debug("removing a build step failed", error=str(exc))
            self._prove_logged_images()
            self._remove_new_images()

    def _prove_logged_images(self) -> None:
        """Adopt the image ids the build output named that are provably this build's.

        One counts when the daemon shows it untagged, created during this build and a child of an image
        this build ran on or committed (a chain of steps no poll saw grows link by link).
        """
        candidates: dict[str, str] = {}
        for image_id in list(self._logged_images):
            with contextlib.suppress(Exception):
                attrs = self._api.inspect_image(image_id)
                if not attrs.get("RepoTags") and created_epoch(attrs) >= self._start:
                    candidates[str(attrs["Id"])] = str(attrs.get("Parent") or "")
        grown = True
        while grown:
            grown = False
            for image_id, parent in candidates.items():
                if image_id not in self._images and parent in self._images:
                    self._images[image_id] = _Image(parent, True, 0)
                    grown = True

    def _remove_new_images(self) -> None:
        """Remove this build's new images, children first; never forced (one still in use stays)."""
        new = {image_id: image for image_id, image in self._images.items() if image.new}
        parents = {image.parent for image in new.values()}
        # Removing a child also takes its untagged parents with it.
        for image_id in sorted(new, key=lambda i: i in parents):
            try:
                self._api.remove_image(image_id, force=False, noprune=False)
            except Exception as exc:
                if status_of(exc) not in (404, 409):
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
