"""One image build's cgroup: the process (and memory) bound of all its step containers together.

The legacy builder's API has no pids option, but it takes ``cgroupparent``: the daemon starts every
step container of the build beneath that cgroup. Made here under the daemon's cgroupfs hierarchies as
``/voice-validator-build/<build id>`` with ``pids.max`` and a memory limit, and removed after the build.
Blocking file operations throughout; callers run them in a thread.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path

CGROUP_PARENT_DIR = "voice-validator-build"
_V1_CONTROLLERS = frozenset({
    "blkio", "cpu", "cpuacct", "cpuset", "devices", "freezer", "hugetlb", "memory", "misc", "net_cls",
    "net_prio", "perf_event", "pids", "rdma",
})  # fmt: skip


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


class BuildCgroup:
    """One build's cgroup under the daemon's cgroupfs hierarchies (v1, or v2 untried on a real host)."""

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
