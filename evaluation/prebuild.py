"""Every check a repo passes before anything is built, in one ordered list, cheapest first.

The validator runs it on each fetched repo before the sandbox sees it, ``voice-validator evaluate`` runs
it before the judge and the benchmark are loaded, and miners run it alone with ``voice-validator check``
(no Docker needed). One list, so the three can never disagree. Blocking: run it in a thread.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from evaluation.errors import RepoInvalid, SubmissionRejected
from evaluation.fetch import (
    DEFAULT_MAX_FILES,
    DEFAULT_MAX_REPO_BYTES,
    HOTKEY_FILE,
    REQUIRED_FILES,
    check_entries,
    check_hotkey,
    check_layout,
    scan_local,
)
from evaluation.repo_cache import COMPLETE_MARKER
from evaluation.sandbox.dockerfile_policy import BuildPolicy, refusal, repo_violations, shown

Status = Literal["ok", "FAIL", "skip"]
_DETAIL_CHARS = 600


@dataclass(frozen=True)
class PrebuildConfig:
    """The limits and the build policy the checks apply (the validator's settings)."""

    max_repo_bytes: int = DEFAULT_MAX_REPO_BYTES
    max_files: int = DEFAULT_MAX_FILES
    policy: BuildPolicy = field(default_factory=BuildPolicy)


@dataclass(frozen=True)
class Verdict:
    """One check's outcome; ``error`` is what the validator raises when it failed."""

    check: str
    status: Status
    detail: str
    error: SubmissionRejected | None = None

    @property
    def ok(self) -> bool:
        """Whether the check passed."""
        return self.status == "ok"

    def line(self) -> str:
        """``ok   layout: ...`` / ``FAIL dockerfile: line 4: ...`` / ``skip paths: ...``; miner text in
        the detail is escaped (the line goes to a terminal or a log)."""
        return f"{self.status:<4} {self.check}: {shown(self.detail, _DETAIL_CHARS)}"


def prebuild_verdicts(
    repo_dir: Path, config: PrebuildConfig, expected_hotkey: str | None, *, fail_fast: bool = False
) -> list[Verdict]:
    """The verdicts of every pre-build check on ``repo_dir``, cheapest first.

    A check whose input an earlier failure made meaningless is skipped (no Dockerfile policy without a
    Dockerfile, no tree walk past the file cap). ``fail_fast`` stops at the first failure: what the
    validator does, while a miner wants every reason at once. The Dockerfile check gives one verdict per
    violation.
    """
    repo_dir = Path(repo_dir)
    verdicts: list[Verdict] = []
    failed: set[str] = set()
    entries: list[tuple[str, str]] = []

    def layout() -> str:
        check_layout(repo_dir)
        return ", ".join(REQUIRED_FILES) + " present"

    def hotkey() -> str:
        found = check_hotkey(repo_dir, expected_hotkey)
        if expected_hotkey is None:
            return f"{HOTKEY_FILE} names {found[:64]!r} (not compared: no hotkey given)"
        return f"{HOTKEY_FILE} names {found[:64]!r}, the submitting hotkey"

    def size() -> str:
        # The snapshot cache marks a complete copy with an empty file of its own: not the miner's.
        slack = 1 if (repo_dir / COMPLETE_MARKER).is_file() else 0
        entries.extend(scan_local(repo_dir, config.max_repo_bytes, config.max_files + slack))
        files = sum(1 for _, kind in entries if kind != "dir")
        total = sum((repo_dir / rel).lstat().st_size for rel, kind in entries if kind == "file")
        return (
            f"{files} files, {total} bytes (limits: {config.max_files} files, {config.max_repo_bytes} bytes)"
        )

    def paths() -> str:
        check_entries(repo_dir, entries)
        return "every name acceptable, no symlink leads outside the repo, no special file"

    checks: list[tuple[str, tuple[str, ...], Callable[[], str]]] = [
        ("layout", (), layout),
        ("hotkey", ("layout",), hotkey),
        ("size", (), size),
        ("paths", ("size",), paths),
    ]
    for name, needs, run in checks:
        blocked = [need for need in needs if need in failed]
        if blocked:
            failed.add(name)
            verdicts.append(Verdict(name, "skip", f"not checked ({', '.join(blocked)} failed)"))
            continue
        try:
            verdicts.append(Verdict(name, "ok", run()))
        except RepoInvalid as exc:
            failed.add(name)
            verdicts.append(Verdict(name, "FAIL", str(exc), exc))
            if fail_fast:
                return verdicts
    verdicts += _dockerfile_verdicts(repo_dir, config.policy, failed)
    return verdicts


def _dockerfile_verdicts(repo_dir: Path, policy: BuildPolicy, failed: set[str]) -> list[Verdict]:
    blocked = [need for need in ("layout", "size") if need in failed]
    if blocked:
        return [Verdict("dockerfile", "skip", f"not checked ({', '.join(blocked)} failed)")]
    violations = repo_violations(repo_dir, policy)
    if not violations:
        return [Verdict("dockerfile", "ok", "within the build policy")]
    error = refusal(violations)
    return [Verdict("dockerfile", "FAIL", v.short(), error) for v in violations]


def first_failure(verdicts: list[Verdict]) -> SubmissionRejected | None:
    """The error of the first failed verdict, or None when the repo would be built."""
    return next((v.error for v in verdicts if v.error is not None), None)


def check_before_build(repo_dir: Path, config: PrebuildConfig, expected_hotkey: str | None) -> None:
    """The validator's form: raise the first failure (RepoInvalid, or DockerfileRefused listing every
    Dockerfile violation). Blocking: run it in a thread."""
    error = first_failure(prebuild_verdicts(repo_dir, config, expected_hotkey, fail_fast=True))
    if error is not None:
        raise error
