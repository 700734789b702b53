"""The ``chain`` CLI subcommands, through a parser built the way the main CLI builds it."""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from validator.chain.cli import CHAIN_FILE_ENV, add_chain_commands
from validator.chain.local import LocalChain
from validator.commitments import subnet_hash
from validator.table import render_table

REPO_ROOT = Path(__file__).resolve().parents[1]
SHA = "0123456789abcdef0123456789abcdef01234567"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="voice-validator")
    add_chain_commands(parser.add_subparsers(dest="command", required=True))
    return parser


class Cli:
    """Runs ``chain ...`` against one chain file and captures what it prints."""

    def __init__(self, chain_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.chain_file = chain_file
        self.capsys = capsys

    def __call__(self, *argv: str) -> tuple[int, str, str]:
        args = build_parser().parse_args(["chain", argv[0], "--chain-file", str(self.chain_file), *argv[1:]])
        code = args.func(args)
        out, err = self.capsys.readouterr()
        return code, out, err


@pytest.fixture
def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Cli:
    chain_file = tmp_path / "chain.json"
    LocalChain(chain_file, "").ensure_file()  # an empty chain, as `chain init` would leave it
    return Cli(chain_file, capsys)


def test_a_missing_chain_file_is_refused_until_init(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cli = Cli(tmp_path / "typo.json", capsys)
    for argv in (("register", "--hotkey", "m"), ("show",), ("advance",), ("weights",)):
        code, out, err = cli(*argv)
        assert (code, out) == (2, ""), argv
        assert "typo.json does not exist" in err and "chain init" in err and err.count("\n") == 1
    assert not cli.chain_file.exists(), "a refused command created the chain file"
    code, out, _ = cli("init")
    assert code == 0 and cli.chain_file.exists()
    assert cli("register", "--hotkey", "m")[0] == 0


def test_miner_session(cli: Cli) -> None:
    assert cli("register", "--hotkey", "validator")[0] == 0
    code, out, err = cli("register", "--hotkey", "miner-a")
    assert (code, err) == (0, "")
    assert "registered miner-a as uid 1" in out and "block 2" in out

    code, out, _ = cli("commit", "--hotkey", "miner-a", "--repo", "alice/voice", "--revision", SHA)
    assert code == 0
    assert f"alice:voice:0:{SHA}:{subnet_hash('alice/voice', 0, 'v4')}:v4" in out and "block 3" in out

    code, out, _ = cli("advance", "--blocks", "4")
    assert (code, out.strip()) == (0, "block 7")

    code, out, _ = cli("show")
    assert code == 0
    assert "block 7, subnet 1" in out
    assert "ok: alice/voice@0123456789ab (v4)" in out


def test_commit_with_options(cli: Cli) -> None:
    cli("register", "--hotkey", "m")
    code, out, _ = cli(
        "commit", "--hotkey", "m", "--repo", "a/b", "--revision", SHA, "--competition", "v4", "--epoch", "3",
        "--hash", "cafe",
    )  # fmt: skip
    assert code == 0 and f"a:b:3:{SHA}:cafe:v4" in out


def test_commit_refuses_a_branch_name(cli: Cli) -> None:
    cli("register", "--hotkey", "m")
    code, out, err = cli("commit", "--hotkey", "m", "--repo", "alice/voice", "--revision", "main")
    assert code == 2 and out == ""
    assert err.startswith("error: bad_revision:") and err.count("\n") == 1
    assert asyncio.run(LocalChain(cli.chain_file, "").commitments(1)) == []


def test_commit_raw_and_show_parse_status(cli: Cli) -> None:
    for hotkey in ("good", "bad", "ctrl", "stale", "gone"):
        cli("register", "--hotkey", hotkey)
    cli("commit", "--hotkey", "good", "--repo", "alice/voice", "--revision", SHA)
    code, out, _ = cli("commit-raw", "--hotkey", "bad", "--value", "alice/voice@main")
    assert code == 0 and "alice/voice@main" in out
    code, out, _ = cli("commit-raw", "--hotkey", "ctrl", "--value", "x\x1b[2Jy")
    assert code == 0 and "\x1b" not in out and "x\\x1b[2Jy" in out
    cli("commit", "--hotkey", "stale", "--repo", "s/t", "--revision", SHA)
    cli("deregister", "--hotkey", "stale")
    cli("register", "--hotkey", "stale")
    cli("commit", "--hotkey", "gone", "--repo", "g/h", "--revision", SHA)
    code, out, _ = cli("deregister", "--hotkey", "gone")
    assert code == 0 and "deregistered gone" in out

    code, out, _ = cli("show")
    assert code == 0
    assert "\x1b" not in out
    lines = {line.split()[0]: line for line in out.splitlines() if line.split()}
    assert "ok: alice/voice@" in lines["good"]
    assert "rejected: field_count" in lines["bad"]
    assert "rejected: control_character" in lines["ctrl"]
    assert "rejected: stale" in lines["stale"]
    assert "rejected: not_registered" in lines["gone"]


def test_commit_raw_refuses_over_128_bytes(cli: Cli) -> None:
    cli("register", "--hotkey", "m")
    code, out, err = cli("commit-raw", "--hotkey", "m", "--value", "x" * 129)
    assert (code, out) == (2, "")
    assert "at most 128" in err and err.count("\n") == 1


def test_errors_are_one_line_and_exit_2(cli: Cli) -> None:
    code, _, err = cli("commit-raw", "--hotkey", "nobody", "--value", "x")
    assert code == 2 and err.startswith("error: ") and "not registered" in err and err.count("\n") == 1
    cli("register", "--hotkey", "m")
    code, _, err = cli("register", "--hotkey", "m")
    assert code == 2 and "already registered" in err
    code, _, err = cli("deregister", "--hotkey", "zzz")
    assert code == 2 and "not registered" in err


def test_corrupt_chain_file(cli: Cli) -> None:
    cli.chain_file.write_text("{oops")
    for argv in (("show",), ("register", "--hotkey", "m"), ("weights",), ("advance",)):
        code, out, err = cli(*argv)
        assert code == 2 and out == ""
        assert "is not valid JSON" in err and err.count("\n") == 1


def test_weights_table(cli: Cli) -> None:
    code, out, _ = cli("weights")
    assert code == 0 and "no weights set by any validator" in out
    for hotkey in ("val", "m1", "m2"):
        cli("register", "--hotkey", hotkey)
    chain = LocalChain(cli.chain_file, "val")
    assert asyncio.run(chain.set_weights(1, {1: 3.0, 2: 1.0}, version_key=9)).success

    code, out, _ = cli("weights")
    assert code == 0
    assert "weights set by val at block 4 (version_key 9)" in out
    rows = [line.split() for line in out.splitlines()[3:]]
    assert rows == [["1", "m1", "0.750000", "65535"], ["2", "m2", "0.250000", "21845"]]

    code, out, _ = cli("weights", "--validator", "val")
    assert code == 0 and "block 4" in out
    code, out, _ = cli("weights", "--validator", "other")
    assert code == 0 and "no weights set by validator other" in out


def test_init_sets_the_rate_limit(cli: Cli) -> None:
    code, out, _ = cli("init", "--weights-rate-limit", "5", "--max-uids", "8")
    assert code == 0 and "weights_rate_limit 5, max_uids 8" in out
    code, out, _ = cli("show")
    assert "weights_rate_limit 5, max_uids 8" in out


def test_netuid_option(cli: Cli) -> None:
    cli("register", "--hotkey", "m", "--netuid", "7")
    _, out, _ = cli("show", "--netuid", "7")
    assert "subnet 7: 1 neurons" in out
    _, out, _ = cli("show")
    assert "subnet 1 (subnet not created yet): 0 neurons" in out


def test_bad_arguments_exit_2_through_argparse(cli: Cli) -> None:
    with pytest.raises(SystemExit) as caught:
        cli("advance", "--blocks", "-3")
    assert caught.value.code == 2
    with pytest.raises(SystemExit):
        cli("register")  # --hotkey is required
    with pytest.raises(SystemExit):
        build_parser().parse_args(["chain"])


def test_chain_file_from_env_then_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env_file = tmp_path / "from-env.json"
    monkeypatch.setenv(CHAIN_FILE_ENV, str(env_file))
    for argv in (["chain", "init"], ["chain", "advance"]):
        args = build_parser().parse_args(argv)
        assert args.func(args) == 0
    assert env_file.exists()

    monkeypatch.delenv(CHAIN_FILE_ENV)
    monkeypatch.chdir(tmp_path)
    for argv in (["chain", "init"], ["chain", "advance", "--blocks", "2"]):
        args = build_parser().parse_args(argv)
        assert args.func(args) == 0
    assert (tmp_path / "var" / "local-chain.json").exists()
    assert [line for line in capsys.readouterr().out.splitlines() if line.startswith("block")] == [
        "block 1",
        "block 2",
    ]


def test_runs_as_a_separate_process(tmp_path: Path) -> None:
    script = (
        "import argparse, sys\n"
        "from validator.chain.cli import add_chain_commands\n"
        "p = argparse.ArgumentParser()\n"
        "add_chain_commands(p.add_subparsers(dest='command', required=True))\n"
        "a = p.parse_args(sys.argv[1:])\n"
        "sys.exit(a.func(a))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), CHAIN_FILE_ENV: str(tmp_path / "c.json")}

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", script, "chain", *argv],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    assert run("init").returncode == 0
    assert run("register", "--hotkey", "m").returncode == 0
    done = run("commit-raw", "--hotkey", "m", "--value", "y" * 200)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and done.stderr.startswith("error: ")


def test_render_table_aligns_columns() -> None:
    text = render_table(("a", "long header"), [(1, "x"), ("wide cell", "")])
    assert text.splitlines() == [
        "a          long header",
        "---------  -----------",
        "1          x",
        "wide cell",
    ]
