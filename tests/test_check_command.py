"""``voice-validator check``: every pre-build check without Docker, one line per verdict; the validator's
own path (the pipeline, ``evaluate``) runs the same list and stops before any build or judge."""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from evaluation.fetch import LocalDirSource
from evaluation.pipeline import Pipeline, PipelineConfig
from evaluation.prebuild import PrebuildConfig, check_before_build, prebuild_verdicts
from evaluation.types import Submission
from evaluation.voicebench.dataset import Item
from tests.fakes import InProcessSandbox
from validator.cli import main
from validator.demo import default_example_dir, prepare_repo

HOTKEY = "5MinerCheck"
LOCAL_BASE = json.dumps({"BASE_IMAGE": "voice-validator/base:bookworm"})


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    yield
    logging.getLogger().handlers.clear()  # main() configures logging for the process


@pytest.fixture
def miner(tmp_path: Path) -> Path:
    return prepare_repo(default_example_dir(), tmp_path / "mine", HOTKEY, {"answer": "A"})


def check(capsys: pytest.CaptureFixture[str], repo: Path, *args: str) -> tuple[int, list[str]]:
    code = main(["check", "--repo-dir", str(repo), *args, "--log-format", "json"])
    return code, capsys.readouterr().out.splitlines()


def append(path: Path, text: str) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(text)


def test_an_honest_repo_passes_every_check(miner: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, lines = check(capsys, miner, "--hotkey", HOTKEY)
    assert code == 0, lines
    assert [line.split(":")[0] for line in lines] == [
        "ok   layout",
        "ok   hotkey",
        "ok   size",
        "ok   paths",
        "ok   dockerfile",
        "ok",
    ]
    assert f"hotkey.txt names '{HOTKEY}', the submitting hotkey" in lines[1]
    assert lines[-1] == "ok: the validator would build this repo"
    # The tests' and the demo's operator build FROM the local base image: allowed, the operator chose it.
    code, lines = check(capsys, miner, "--build-args", LOCAL_BASE)
    assert code == 0, lines
    assert "(not compared: no hotkey given)" in lines[1]


def test_a_repo_inside_git_is_judged_without_its_git_folder(
    miner: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (miner / ".git").mkdir()
    os.mkfifo(miner / ".git" / "fsmonitor")  # git's own socket-like file: never uploaded, never judged
    os.symlink("/etc/passwd", miner / ".git" / "outside")
    code, lines = check(capsys, miner)
    assert code == 0, lines


def test_missing_files_skip_the_checks_that_need_them(
    miner: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (miner / "server.py").unlink()
    code, lines = check(capsys, miner)
    assert code == 1
    assert lines[0] == "FAIL layout: missing required file(s): server.py"
    assert lines[1] == "skip hotkey: not checked (layout failed)"
    assert "skip dockerfile: not checked (layout failed)" in lines
    assert lines[-1] == "refused: 1 problem; the validator would not build it"


def test_a_foreign_hotkey_fails(miner: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, lines = check(capsys, miner, "--hotkey", "5SomeoneElse")
    assert code == 1
    assert f"FAIL hotkey: hotkey.txt names '{HOTKEY}', but the submission comes from '5SomeoneElse'" in lines


def test_size_and_file_caps_come_from_the_settings(miner: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, lines = check(capsys, miner, "--max-repo-bytes", "1000")
    assert code == 1
    assert "FAIL size: repo is more than 1000 bytes (0.00 GiB)" in lines
    assert "skip paths: not checked (size failed)" in lines
    assert "skip dockerfile: not checked (size failed)" in lines
    code, lines = check(capsys, miner, "--max-repo-files", "3")
    assert code == 1 and "FAIL size: repo has more than 3 files" in lines


def test_paths_and_symlinks(miner: Path, capsys: pytest.CaptureFixture[str]) -> None:
    os.symlink("/etc/passwd", miner / "model" / "leak")
    (miner / "bad\x1b[2Jname").write_text("x", encoding="utf-8")
    code, lines = check(capsys, miner)
    assert code == 1
    (fail,) = [line for line in lines if line.startswith("FAIL")]
    # The first offending name, escaped: a file name never drives the miner's terminal.
    assert fail.startswith("FAIL paths: invalid file name in repo listing: 'bad\\x1b[2Jname'")
    (miner / "bad\x1b[2Jname").unlink()
    code, lines = check(capsys, miner)
    assert code == 1 and "FAIL paths: symlink model/leak points outside the repo" in lines


def test_each_dockerfile_violation_gets_its_line(miner: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dockerfile = miner / "Dockerfile"
    first = len(dockerfile.read_text(encoding="utf-8").splitlines()) + 1
    append(dockerfile, "ADD http://127.0.0.1:9/x /x\nCOPY --from=voice-validator/base:bookworm /etc /e\n")
    code, lines = check(capsys, miner, "--build-args", LOCAL_BASE)
    assert code == 1
    fails = [line for line in lines if line.startswith("FAIL")]
    assert fails == [
        f"FAIL dockerfile: line {first}: ADD http://127.0.0.1:9/x /x: remote sources are not allowed (the "
        "daemon fetches them on the host's network)",
        f"FAIL dockerfile: line {first + 1}: COPY --from=voice-validator/base:bookworm /etc /e: "
        "--from=voice-validator/base:bookworm: only earlier stages of this Dockerfile may be used "
        "(anything else is an image the daemon resolves)",
    ]
    assert lines[-1] == "refused: 2 problems; the validator would not build it"


def test_the_allow_list_is_the_operators_setting(miner: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, lines = check(capsys, miner, "--build-allowed-bases", '["nvidia/cuda"]')
    assert code == 1
    assert any(
        line.startswith(
            "FAIL dockerfile: line 4: FROM ${BASE_IMAGE}: base image docker.io/library/python:3.11-slim"
        )
        for line in lines
    ), lines
    assert main(["check", "--repo-dir", str(miner), "--build-allowed-bases", '["Not An Image"]']) == 2


def test_an_archive_added_by_the_miner_fails(miner: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import gzip

    (miner / "model" / "weights.bin").write_bytes(gzip.compress(b"\0" * 100_000))
    append(miner / "Dockerfile", "ADD model/*.bin /opt/\n")
    code, lines = check(capsys, miner)
    assert code == 1
    assert any("model/weights.bin is a gzip archive, which ADD would unpack" in line for line in lines)


# ------------------------------------------------------------------------------------ the validator's path


def one_item() -> dict[str, list[Item]]:
    audio = np.zeros(1600, dtype=np.float32)
    audio.flags.writeable = False
    return {"openbookqa": [Item("openbookqa", "q1", audio, 16_000, "Pick A. A. yes B. no", "A", {})]}


async def test_the_pipeline_refuses_before_the_sandbox_sees_the_repo(miner: Path, tmp_path: Path) -> None:
    sandbox = InProcessSandbox()
    pipeline = Pipeline(
        LocalDirSource(miner), sandbox, one_item(), PipelineConfig(perturb=False), tmp_path / "work"
    )
    submission = Submission(uid=3, hotkey=HOTKEY, repo_id="ns/m", revision="0" * 40)
    good = await pipeline.evaluate(submission)
    assert good.error is None and len(sandbox.started) == 1  # the control: an honest repo runs

    append(miner / "Dockerfile", "ADD https://198.51.100.7/x /x\nONBUILD RUN true\n")
    bad = await pipeline.evaluate(submission)
    assert bad.error is not None and bad.error.startswith(
        "DockerfileRefused: Dockerfile refused (2 violations)"
    )
    assert bad.score == 0.0 and len(sandbox.started) == 1  # never started


def test_the_validator_stops_at_the_first_failure_and_raises_its_kind(miner: Path) -> None:
    from evaluation.errors import DockerfileRefused, RepoInvalid

    append(miner / "Dockerfile", "ADD http://198.51.100.7/x /x\n")
    with pytest.raises(DockerfileRefused, match="remote sources"):
        check_before_build(miner, PrebuildConfig(), HOTKEY)
    with pytest.raises(RepoInvalid, match=r"hotkey\.txt names") as info:
        check_before_build(miner, PrebuildConfig(), "5Other")
    assert not isinstance(info.value, DockerfileRefused)
    verdicts = prebuild_verdicts(miner, PrebuildConfig(), "5Other", fail_fast=True)
    assert [v.check for v in verdicts] == ["layout", "hotkey"]  # cheapest first, nothing after the failure


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_evaluate_rejects_before_loading_the_judge_or_the_benchmark(
    miner: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dead = f"http://127.0.0.1:{closed_port()}"
    started = time.monotonic()
    code = main(
        [
            "evaluate",
            "--repo-dir",
            str(miner),
            "--hotkey",
            "5SomeoneElse",
            "--data-dir",
            str(tmp_path / "var"),
            # Reaching either would fail differently: the judge attaches to a closed port, the
            # benchmark downloads from one.
            "--subsets",
            '["openbookqa", "commoneval"]',
            "--judge",
            "url",
            "--judge-url",
            dead + "/v1",
            "--voicebench-source",
            "hub",
            "--hub-endpoint",
            dead,
            "--docker-host",
            f"unix://{tmp_path}/no-docker.sock",
            "--log-format",
            "json",
        ]
    )
    out = capsys.readouterr().out
    assert code == 1, out
    assert f"FAIL hotkey: hotkey.txt names '{HOTKEY}', but the submission comes from '5SomeoneElse'" in out
    assert "rejected before the build" in out
    assert "evaluating" not in out  # the pipeline was never made
    assert time.monotonic() - started < 10


def test_the_snapshot_caches_marker_does_not_count_against_the_file_cap(miner: Path) -> None:
    from evaluation.repo_cache import COMPLETE_MARKER

    files = sum(1 for path in miner.rglob("*") if not path.is_dir())
    config = PrebuildConfig(max_files=files)
    assert all(v.ok for v in prebuild_verdicts(miner, config, HOTKEY))
    (miner / COMPLETE_MARKER).touch()
    assert all(v.ok for v in prebuild_verdicts(miner, config, HOTKEY))
    (miner / "one-more").write_text("x", encoding="utf-8")
    assert not prebuild_verdicts(miner, config, HOTKEY)[2].ok
