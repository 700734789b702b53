"""Real processes for the fault-injection tests (tests/test_faults.py), each started with
``python -m tests.fault_tools <role> ...``:

- ``miner``: a miner API server on 127.0.0.1 that answers every question with one letter after a delay
  and appends the SHA-256 of each request's decoded audio to a log file, so a test can tell which items
  a miner was asked, and how often, across validator restarts.
- ``daemon``: the real ``voice-validator run`` (settings from ``VOICE_VALIDATOR_*``), with one swap: the
  sandbox hands out the ``miner`` above instead of building a container, so the process can be killed
  with SIGKILL and restarted in a second.
- ``judge``: tests/judge_fake.py's scripted OpenAI-compatible judge on a fixed port, to stop and start.
- ``proxy``: a unix-socket forwarder in front of a Docker daemon; stopping it makes that daemon
  unreachable for one client without disturbing anyone else who uses it.

The module also holds the small helpers the tests share: start/stop those processes, wait for a
condition with a deadline, read the validator's SQLite file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

from evaluation.audio import decode_npy_b64
from evaluation.sandbox.port import ContainerExit, RunningModel
from evaluation.types import Submission

REPO_ROOT = Path(__file__).resolve().parents[1]
MINER_URL_ENV = "VV_FAULT_MINER_URL"


# --- helpers for tests -------------------------------------------------------------------------


def audio_digest(audio: Any) -> str:
    """What the ``miner`` logs for a request: SHA-256 of the float32 samples the validator sent."""
    import numpy as np

    return hashlib.sha256(np.ascontiguousarray(audio, dtype=np.float32).tobytes()).hexdigest()


class ExternalSandbox:
    """A Sandbox whose "container" is a miner process already running at ``url`` (tests only)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.started: list[Submission] = []

    async def start(self, submission: Submission, repo_dir: Path) -> RunningModel:
        self.started.append(submission)
        return RunningModel(base_url=self.url, container_id=f"external-{len(self.started)}", image_id="none")

    async def stop(self, model: RunningModel) -> None:
        return None

    async def exit_report(self, model: RunningModel) -> ContainerExit | None:
        return None  # the process outlives evaluations; its test watches it itself

    async def cleanup(self) -> int:
        return 0

    async def close(self) -> None:
        return None


class Proc:
    """A child process of a test with its output in a file; stopped (and reaped) by ``stop``."""

    def __init__(self, args: Sequence[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.log_path = log_path
        full_env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})}
        with open(log_path, "ab") as log:
            # cwd: a folder without a .env, so only the settings given here apply.
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "tests.fault_tools", *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=full_env,
                cwd=log_path.parent,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill9(self) -> None:
        """SIGKILL: no handler runs, nothing is flushed or closed."""
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(timeout=10)

    def stop(self, timeout_s: float = 20.0) -> int:
        """SIGTERM, then SIGKILL after ``timeout_s``; returns the exit code."""
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                return self.popen.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()
        return self.popen.wait(timeout=10)

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


async def wait_until(
    check: Callable[[], Any | Awaitable[Any]], timeout_s: float, what: str, *, poll_s: float = 0.05
) -> Any:
    """Poll ``check`` until it returns something truthy (returned); AssertionError after the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        await asyncio.sleep(poll_s)


def query(db: Path, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Rows of one query on the validator's database, from a short-lived connection of our own."""
    if not db.exists():
        return []
    conn = sqlite3.connect(db, timeout=10)
    try:
        return conn.execute(sql, params).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such" in str(exc):  # the daemon has not created or migrated its schema yet
            return []
        raise
    finally:
        conn.close()


async def start_miner(tmp: Path, name: str, *, answer: str = "A", delay_s: float = 0.0) -> tuple[Proc, str]:
    """Start a ``miner`` process; returns it and its URL once it listens."""
    port_file = tmp / f"{name}.port"
    proc = Proc(
        [
            *("miner", "--answer", answer, "--delay", str(delay_s)),
            *("--log", str(tmp / f"{name}.requests"), "--port-file", str(port_file)),
        ],
        tmp / f"{name}.log",
    )
    await wait_until(lambda: port_file.exists() and port_file.read_text().strip(), 30, f"miner {name}")
    return proc, f"http://127.0.0.1:{port_file.read_text().strip()}"


def miner_requests(tmp: Path, name: str) -> list[str]:
    """Audio digests of every request the miner ``name`` received, in order."""
    path = tmp / f"{name}.requests"
    return path.read_text().split() if path.exists() else []


def settings_env(values: dict[str, Any]) -> dict[str, str]:
    """``VOICE_VALIDATOR_*`` variables for settings values (lists and dicts as JSON)."""
    env = {}
    for name, value in values.items():
        if value is None:
            continue
        text = json.dumps(value) if isinstance(value, list | dict) else str(value)
        env[f"VOICE_VALIDATOR_{name.upper()}"] = text
    return env


# --- the processes -------------------------------------------------------------------------------


async def serve_miner(answer: str, delay_s: float, log_path: Path, port_file: Path) -> None:
    """The ``miner`` role: runs until killed."""
    # Opened before the server starts, for the process's lifetime: nothing else runs on this loop yet.
    log = open(log_path, "a", encoding="utf-8")  # noqa: ASYNC230

    async def health(_: web.Request) -> web.Response:
        return web.json_response(
            {"status": "healthy", "initialization_status": {"model_loaded": True, "error": None}}
        )

    async def v2t(request: web.Request) -> web.Response:
        payload = await request.json()
        audio = decode_npy_b64(payload["audio_data"], max_bytes=64 * 2**20, max_samples=16_000 * 600)
        # Logged on arrival: a request the validator sent counts even if it is killed before the answer.
        log.write(audio_digest(audio) + "\n")
        log.flush()
        await asyncio.sleep(delay_s)
        return web.json_response({"text": f"The answer is {answer}."})

    app = web.Application(client_max_size=64 * 2**20)
    app.router.add_get("/api/v1/health", health)
    app.router.add_post("/api/v1/v2t", v2t)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    tmp = port_file.with_suffix(".tmp")
    tmp.write_text(str(runner.addresses[0][1]))
    tmp.replace(port_file)  # atomic: the test never reads half a port number
    await asyncio.Event().wait()


async def serve_judge(port: int, score: str) -> None:
    """The ``judge`` role: the scripted fake judge answering ``score`` on 127.0.0.1:``port``."""
    from tests.judge_fake import FakeJudge, reply

    async with FakeJudge(default=reply(score), port=port):
        print(f"judge listening on {port}", flush=True)
        await asyncio.Event().wait()


async def serve_proxy(listen: Path, target: Path) -> None:
    """The ``proxy`` role: forward every connection on unix socket ``listen`` to ``target``."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            upstream_r, upstream_w = await asyncio.open_unix_connection(str(target))
        except OSError:
            client_w.close()
            return
        await asyncio.gather(pipe(client_r, upstream_w), pipe(upstream_r, client_w))

    with contextlib.suppress(FileNotFoundError):
        listen.unlink()  # noqa: ASYNC240 - before serving; nothing else runs on this loop yet
    server = await asyncio.start_unix_server(handle, path=str(listen))
    async with server:
        print(f"proxy listening on {listen}", flush=True)
        await server.serve_forever()


def run_daemon() -> int:
    """The ``daemon`` role: ``voice-validator run`` with the sandbox swapped for the external miner."""
    import functools

    import validator.cli
    from validator.app import open_app

    url = os.environ[MINER_URL_ENV]
    # The daemon opens its app through the name validator.cli imported; hand it the external miner.
    validator.cli.open_app = functools.partial(open_app, sandbox=ExternalSandbox(url))  # type: ignore[assignment]
    return validator.cli.main(["run", "--chain", "local"])


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: ``python -m tests.fault_tools ROLE ...``."""
    parser = argparse.ArgumentParser(prog="tests.fault_tools")
    roles = parser.add_subparsers(dest="role", required=True)
    miner = roles.add_parser("miner")
    miner.add_argument("--answer", default="A")
    miner.add_argument("--delay", type=float, default=0.0)
    miner.add_argument("--log", type=Path, required=True)
    miner.add_argument("--port-file", type=Path, required=True)
    judge = roles.add_parser("judge")
    judge.add_argument("--port", type=int, required=True)
    judge.add_argument("--score", default="4")
    proxy = roles.add_parser("proxy")
    proxy.add_argument("--listen", type=Path, required=True)
    proxy.add_argument("--target", type=Path, required=True)
    roles.add_parser("daemon")
    args = parser.parse_args(argv)
    if args.role == "daemon":
        return run_daemon()
    with contextlib.suppress(KeyboardInterrupt):
        if args.role == "miner":
            asyncio.run(serve_miner(args.answer, args.delay, args.log, args.port_file))
        elif args.role == "judge":
            asyncio.run(serve_judge(args.port, args.score))
        else:
            asyncio.run(serve_proxy(args.listen, args.target))
    return 0


@contextlib.contextmanager
def processes() -> Iterator[list[Proc]]:
    """Collects the processes a test starts and stops every one still alive at the end."""
    started: list[Proc] = []
    try:
        yield started
    finally:
        for proc in started:
            with contextlib.suppress(Exception):
                proc.stop(timeout_s=10)


if __name__ == "__main__":
    sys.exit(main())
