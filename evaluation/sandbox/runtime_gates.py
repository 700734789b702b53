"""Refusing to run miners on a container stack with a known escape: pure checks of what the daemon says.

Each gate names the component, what was found and why it is refused. The minimum versions and the
escapes they close (also in the README's security section):

* runc >= 1.2.8 (1.3.x: >= 1.3.3): CVE-2025-31133, CVE-2025-52565 and CVE-2025-52881 (November 2025:
  masked-path and /dev/console mount races that write to the host's /proc), and the earlier
  CVE-2024-21626 ("Leaky Vessels", a working-directory file descriptor leaked into the container,
  fixed in 1.1.12). A distribution may backport fixes without the upstream number (Debian's
  ``1.1.5+ds1-1+deb12u1`` carries the 2024 fix only): the operator can vouch for such a build with
  ``sandbox-trust-runtime``, and a gVisor sandbox (``runsc``) keeps miner code off runc altogether.
* NVIDIA Container Toolkit >= 1.17.8: CVE-2025-23266 ("NVIDIAScape", its createContainer hook honoured
  an image's ``LD_PRELOAD`` and ran it as root on the host) and CVE-2025-23267.
* Docker Engine >= 20.10 (API 1.41, which the sandbox speaks).
* A daemon whose *default* runtime is ``nvidia`` is refused: every build step and container would run
  through the NVIDIA hook, not only the GPU miners that need it.
* IPv6 on the daemon's default bridge is refused: the sandbox's host guard and the build proxy's
  address checks are IPv4 rules, and an IPv6 route would bypass them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

Version = tuple[int, int, int]

RUNC_FIXED: tuple[tuple[Version, Version], ...] = (
    # (first fixed release, first release of the next minor line): a fixed release of each line.
    ((1, 2, 8), (1, 3, 0)),
    ((1, 3, 3), (1, 4, 0)),
    ((1, 4, 0), (99, 0, 0)),
)
MIN_NVIDIA_TOOLKIT: Version = (1, 17, 8)
MIN_ENGINE: Version = (20, 10, 0)

_VERSION_RE = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")


def parse_version(text: str) -> Version | None:
    """The first ``major.minor[.patch]`` in ``text`` ("v1.1.5+ds1" -> (1, 1, 5)), None when there is none."""
    match = _VERSION_RE.search(text or "")
    if match is None:
        return None
    return int(match[1]), int(match[2]), int(match[3] or 0)


def runc_is_fixed(version: Version) -> bool:
    """Whether an upstream runc release carries every escape fix listed in the module's docstring."""
    return any(low <= version < high for low, high in RUNC_FIXED)


@dataclass(frozen=True)
class Refusal:
    """One reason not to run miners on this daemon."""

    component: str
    found: str
    reason: str

    def __str__(self) -> str:
        return f"{self.component} {self.found}: {self.reason}"


def _component(version_info: Mapping[str, Any], name: str) -> str | None:
    for component in version_info.get("Components") or ():
        if str(component.get("Name", "")).lower() == name:
            return str(component.get("Version", ""))
    return None


def check_engine(
    version_info: Mapping[str, Any],
    daemon_info: Mapping[str, Any],
    *,
    uses_runc: bool,
    trust_runtime: bool,
    bridge_ipv6: bool,
) -> list[Refusal]:
    """Refusals for a daemon, from its ``/version`` and ``/info`` answers.

    ``uses_runc``: miner code (builds or runs) goes through runc on this daemon. ``trust_runtime``: the
    operator vouches for a distribution build whose number predates the fixes. ``bridge_ipv6``: the
    daemon's default bridge network has IPv6 enabled.
    """
    refusals: list[Refusal] = []
    engine = str(version_info.get("Version", ""))
    parsed = parse_version(engine)
    if parsed is None or parsed < MIN_ENGINE:
        refusals.append(Refusal("Docker Engine", engine or "unknown", "20.10 or later is needed (API 1.41)"))
    if str(daemon_info.get("DefaultRuntime", "")) == "nvidia":
        refusals.append(
            Refusal(
                "default runtime",
                "nvidia",
                "every build step and container would pass the NVIDIA hook; keep runc (or runsc) the "
                "default and let the sandbox request GPUs per container",
            )
        )
    if bridge_ipv6:
        refusals.append(
            Refusal("default bridge", "IPv6 enabled", "the host guard and the build proxy filter IPv4 only")
        )
    if uses_runc and not trust_runtime:
        runc = _component(version_info, "runc")
        runc_version = parse_version(runc or "")
        if runc_version is None or not runc_is_fixed(runc_version):
            refusals.append(
                Refusal(
                    "runc",
                    runc or "unknown",
                    "lacks the fixes of CVE-2025-31133/52565/52881 (>= 1.2.8, 1.3.3) or CVE-2024-21626; "
                    "upgrade, run miners under gVisor (sandbox-runtime runsc), or vouch for a patched "
                    "distribution build with sandbox-trust-runtime",
                )
            )
    return refusals


def check_nvidia_toolkit(version_text: str | None, *, trust_runtime: bool) -> list[Refusal]:
    """Refusals for the NVIDIA Container Toolkit (``nvidia-ctk --version`` output; None: not found)."""
    if version_text is None:
        return [Refusal("NVIDIA Container Toolkit", "not found", "GPU miners need it (nvidia-ctk)")]
    version = parse_version(version_text)
    if trust_runtime or (version is not None and version >= MIN_NVIDIA_TOOLKIT):
        return []
    found = ".".join(map(str, version)) if version else version_text.strip()[:40]
    return [
        Refusal(
            "NVIDIA Container Toolkit",
            found,
            "1.17.8 or later is needed (CVE-2025-23266: its hook ran an image's LD_PRELOAD on the host)",
        )
    ]
