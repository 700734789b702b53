"""The README's first command, `voice-validator demo`, on the real dockerd: it prints each miner's
outcome and the weights it set on the local chain."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evaluation.sandbox.docker_sandbox import SandboxConfig
from validator.cli import main

pytestmark = pytest.mark.docker


def test_demo_prints_scores_and_weights(
    tmp_path: Path, voicebench_dir: Path, sandbox_config: SandboxConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main([
        "demo",
        "--data-dir", str(tmp_path),
        "--voicebench-dir", str(voicebench_dir),
        "--docker-host", str(sandbox_config.docker_host),
        "--validator-id", sandbox_config.validator_id,
        "--build-args", json.dumps(sandbox_config.build_args),
        "--sandbox-cpus", "1",
        "--log-format", "json",
        "--timeout", "300",
    ])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    lines = {line.split()[0]: line for line in out.splitlines() if line[:1].isdigit()}
    assert "evaluated" in lines["1"] and "0.8000" in lines["1"]
    assert "evaluated" in lines["2"] and "0.2000" in lines["2"]
    score = {uid: float(lines[uid].split()[4]) for uid in ("1", "2")}
    assert score["1"] > score["2"] > 0  # the fixture's answer key favours the constant-A baseline
    assert "rejected" in lines["3"] and "hotkey.txt" in lines["3"]
    assert "skipped commitment of 5HGjWAeFDf" in out
    assert "weights on chain (block" in out and "uid 1: 0.8000, uid 2: 0.2000" in out
