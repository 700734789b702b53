"""scripts/auto_update.sh, the real script with real git, against a local bare remote; only pm2 is a fake
that records its arguments."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "auto_update.sh"

# Not a test of this project: the quick suite of the throw-away repo auto_update.sh updates. The script
# must restart on this one and roll back on its failing twin (``assert False``) below.
UPSTREAM_PASSING_TEST = "def test_ok():\n    assert True\n"
ECOSYSTEM = 'module.exports = {\n  apps: [\n    {\n      name: "vv-under-test",\n    },\n  ],\n};\n'

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def git(cwd: Path, *args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout.strip()


@dataclass
class Setup:
    remote: Path
    upstream: Path  # a developer's clone that pushes new commits
    validator: Path  # the operator's clone the script updates
    pm2_log: Path
    setup_log: Path
    env: dict[str, str]

    def push(self, files: dict[str, str], message: str) -> str:
        for name, text in files.items():
            path = self.upstream / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        git(self.upstream, "add", "-A", env=self.env)
        git(self.upstream, "commit", "-qm", message, env=self.env)
        git(self.upstream, "push", "-q", "origin", "main", env=self.env)
        return git(self.upstream, "rev-parse", "HEAD", env=self.env)

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "scripts/auto_update.sh", *args],
            cwd=self.validator,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    @property
    def head(self) -> str:
        return git(self.validator, "rev-parse", "HEAD", env=self.env)

    def pm2_calls(self) -> list[str]:
        return self.pm2_log.read_text().splitlines() if self.pm2_log.exists() else []


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    identity = {
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.invalid",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.invalid",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    remote = tmp_path / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(remote)], check=True, timeout=60)
    upstream = tmp_path / "upstream"
    env = {**os.environ, **identity}
    subprocess.run(["git", "clone", "-q", str(remote), str(upstream)], check=True, env=env, timeout=60)
    git(upstream, "checkout", "-q", "-b", "main", env=env)
    # A miniature project: the real script, a stand-in install step, importable packages, one test.
    (upstream / "scripts").mkdir()
    shutil.copy2(SCRIPT, upstream / "scripts" / "auto_update.sh")
    setup_log = tmp_path / "setup.log"
    (upstream / "scripts" / "setup.sh").write_text(
        f'#!/usr/bin/env bash\necho "$(git rev-parse HEAD)" >> "{setup_log}"\n', encoding="utf-8"
    )
    for package in ("validator", "evaluation"):
        (upstream / package).mkdir()
        (upstream / package / "__init__.py").write_text("", encoding="utf-8")
    (upstream / "validator" / "cli.py").write_text("VERSION = 1\n", encoding="utf-8")
    (upstream / "validator" / "app.py").write_text("", encoding="utf-8")
    (upstream / "evaluation" / "pipeline.py").write_text("", encoding="utf-8")
    (upstream / "tests").mkdir()
    (upstream / "tests" / "test_quick.py").write_text(UPSTREAM_PASSING_TEST, encoding="utf-8")
    (upstream / "ecosystem.config.js").write_text(ECOSYSTEM, encoding="utf-8")
    (upstream / ".gitignore").write_text("__pycache__/\n", encoding="utf-8")
    subprocess.run(["git", "add", "-A"], cwd=upstream, check=True, env=env, timeout=60)
    subprocess.run(["git", "commit", "-qm", "v1"], cwd=upstream, check=True, env=env, timeout=60)
    subprocess.run(["git", "push", "-q", "origin", "main"], cwd=upstream, check=True, env=env, timeout=60)
    validator = tmp_path / "validator"
    subprocess.run(["git", "clone", "-q", str(remote), str(validator)], check=True, env=env, timeout=60)

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    pm2_log = tmp_path / "pm2.log"
    fake_pm2 = bin_dir / "pm2"
    fake_pm2.write_text(f'#!/usr/bin/env bash\necho "$*" >> "{pm2_log}"\n', encoding="utf-8")
    fake_pm2.chmod(0o755)
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{env['PATH']}",
        VV_PYTHON=sys.executable,
        VV_UPDATE_TESTS="tests",
        PYTHONDONTWRITEBYTECODE="1",
    )
    env.pop("VV_PM2_APP", None)
    return Setup(remote, upstream, validator, pm2_log, setup_log, env)


def test_nothing_new_changes_nothing(setup: Setup) -> None:
    before = setup.head
    done = setup.run()
    assert done.returncode == 0, done.stderr
    assert "up to date" in done.stderr
    assert setup.head == before and setup.pm2_calls() == [] and not setup.setup_log.exists()


def test_a_good_update_is_installed_checked_and_restarted(setup: Setup) -> None:
    new = setup.push({"validator/cli.py": "VERSION = 2\n"}, "v2")
    done = setup.run()
    assert done.returncode == 0, done.stderr
    assert setup.head == new
    assert setup.setup_log.read_text().split() == [new]  # reinstalled at the new commit
    assert setup.pm2_calls() == ["restart vv-under-test --update-env"]  # name from ecosystem.config.js
    assert "1 passed" in done.stderr  # the new version's tests ran


@pytest.mark.parametrize(
    ("files", "why"),
    [
        ({"validator/cli.py": "VERSION = (\n"}, "the new version does not import"),
        ({"tests/test_quick.py": "def test_ok():\n    assert False\n"}, "its quick unit tests failed"),
        ({"scripts/setup.sh": "#!/usr/bin/env bash\nexit 3\n"}, "the install (setup) failed"),
    ],
)
def test_a_bad_update_is_rolled_back_and_not_retried(setup: Setup, files: dict[str, str], why: str) -> None:
    old = setup.head
    bad = setup.push(files, "broken")
    done = setup.run()
    assert done.returncode == 1
    assert setup.head == old and git(setup.validator, "status", "--porcelain", env=setup.env) == ""
    assert f"{bad[:12]} rejected: {why}; rolling back to {old[:12]}" in done.stderr
    assert setup.pm2_calls() == []  # the running validator is left alone
    # The old version was reinstalled after the rollback.
    assert setup.setup_log.read_text().split()[-1] == old
    again = setup.run()
    assert again.returncode == 0 and "failed its checks before" in again.stderr and setup.head == old
    # A fix upstream is taken.
    fixed = setup.push({"validator/cli.py": "VERSION = 3\n", **_restore(files)}, "fixed")
    assert setup.run().returncode == 0 and setup.head == fixed
    assert setup.pm2_calls() == ["restart vv-under-test --update-env"]


def _restore(files: dict[str, str]) -> dict[str, str]:
    restored = {"tests/test_quick.py": UPSTREAM_PASSING_TEST}
    if "scripts/setup.sh" in files:
        restored["scripts/setup.sh"] = "#!/usr/bin/env bash\ntrue\n"
    return restored


def test_a_rewritten_branch_is_not_followed(setup: Setup) -> None:
    old = setup.head
    git(setup.upstream, "commit", "-q", "--amend", "-m", "rewritten", env=setup.env)
    git(setup.upstream, "push", "-q", "--force", "origin", "main", env=setup.env)
    done = setup.run()
    assert done.returncode == 1 and "not a fast-forward" in done.stderr
    assert setup.head == old and setup.pm2_calls() == []


def test_local_changes_block_the_update(setup: Setup) -> None:
    setup.push({"validator/cli.py": "VERSION = 2\n"}, "v2")
    (setup.validator / "validator" / "cli.py").write_text("VERSION = 'local'\n", encoding="utf-8")
    done = setup.run()
    assert done.returncode == 1 and "local changes" in done.stderr
    assert (setup.validator / "validator" / "cli.py").read_text() == "VERSION = 'local'\n"
