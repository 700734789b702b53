"""Stand-in miner and judge HTTP servers for the harness benchmark, each in a process of its own.

    python -m benchmarks.servers miner [--latency-ms 0] [--parallel 0]
    python -m benchmarks.servers judge [--latency-ms 0] [--batch 0]

They run in their own process so that their CPU time is never counted as the validator's: the benchmark
measures the validator process alone. Each binds 127.0.0.1 on a free port, prints ``PORT <n>`` on stdout
once it listens, and exits when terminated or when its parent goes away.

miner: ``/api/v1/health`` says the model is loaded; ``/api/v1/v2t`` reads the whole request body (so the
transfer is real) and answers a constant text after ``latency-ms``. At most ``parallel`` requests are
served at once (0: no limit); the rest wait in the server, as they would in a miner's own queue.

judge: ``/v1/chat/completions`` answers ``n`` choices after ``latency-ms``, with at most ``batch``
requests in work at once (0: no limit), like a batching inference server with a batch limit. The reply
is the first of the request's guided choices, so the evaluators parse it as a valid verdict.

Both expose ``GET /stats``: requests served and the most in work at once, to check the limits held.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

MINER_ANSWER = "The answer is B."
REPO_ROOT = Path(__file__).resolve().parents[1]
# A stand-in that does not listen within this long is broken; the benchmark stops rather than hang.
START_DEADLINE_S = 30.0
STOP_DEADLINE_S = 5.0


@dataclass
class _Gate:
    """Bounded work with counters: ``limit`` 0 means unbounded."""

    limit: int
    latency_s: float
    served: int = 0
    in_work: int = 0
    max_in_work: int = 0
    _semaphore: asyncio.Semaphore | None = field(default=None, init=False)

    async def work(self) -> None:
        """Take a slot (queueing when all are busy), hold it for the latency, count it."""
        if self._semaphore is None and self.limit > 0:
            self._semaphore = asyncio.Semaphore(self.limit)
        async with self._semaphore if self._semaphore is not None else contextlib.nullcontext():
            self.in_work += 1
            self.max_in_work = max(self.max_in_work, self.in_work)
            try:
                if self.latency_s > 0:
                    await asyncio.sleep(self.latency_s)
            finally:
                self.in_work -= 1
                self.served += 1

    async def stats(self, _: web.Request) -> web.Response:
        """``GET /stats``."""
        return web.json_response({"served": self.served, "max_in_work": self.max_in_work})


def miner_app(latency_s: float, parallel: int) -> web.Application:
    """The stand-in miner: constant answer, fixed latency, at most ``parallel`` requests in work."""
    gate = _Gate(parallel, latency_s)
    answer = json.dumps({"text": MINER_ANSWER}).encode()
    health = json.dumps(
        {"status": "healthy", "initialization_status": {"model_loaded": True, "error": None}}
    ).encode()

    async def get_health(_: web.Request) -> web.Response:
        return web.Response(body=health, content_type="application/json")

    async def v2t(request: web.Request) -> web.Response:
        # Read, do not parse: decoding the audio is the miner's cost, not the harness's.
        await request.read()
        await gate.work()
        return web.Response(body=answer, content_type="application/json")

    # 30 s of 16 kHz float32 audio is 2.6 MB of base64; leave room for longer clips.
    app = web.Application(client_max_size=64 * 2**20)
    app.router.add_get("/api/v1/health", get_health)
    app.router.add_post("/api/v1/v2t", v2t)
    app.router.add_get("/stats", gate.stats)
    return app


def judge_app(latency_s: float, batch: int) -> web.Application:
    """The stand-in judge: ``n`` choices after a fixed latency, at most ``batch`` requests in work."""
    gate = _Gate(batch, latency_s)

    async def complete(request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        n = int(body.get("n", 1))
        choices = (body.get("structured_outputs") or {}).get("choice") or ["3"]
        await gate.work()
        reply = [
            {"index": i, "message": {"role": "assistant", "content": choices[0]}, "finish_reason": "stop"}
            for i in range(n)
        ]
        return web.json_response({"id": "bench", "object": "chat.completion", "choices": reply})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", complete)
    app.router.add_get("/stats", gate.stats)
    return app


async def _serve(app: web.Application) -> None:
    """Serve ``app`` on 127.0.0.1, announce the port, stop on SIGTERM/SIGINT or when orphaned."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(f"PORT {runner.addresses[0][1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    parent = os.getppid()
    try:
        # A parent killed without cleaning up must not leave a server behind: poll who our parent is.
        while not stop.is_set() and os.getppid() == parent:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
    finally:
        await runner.cleanup()


class ServerProcess:
    """One stand-in server in a child process: ``async with ServerProcess("miner", ...) as url``."""

    def __init__(self, role: str, *, latency_s: float = 0.0, limit: int = 0) -> None:
        """``limit`` is the miner's parallelism or the judge's batch limit (0: unbounded)."""
        self._args = [role, "--latency-ms", str(latency_s * 1000), "--limit", str(limit)]
        self._process: asyncio.subprocess.Process | None = None
        self.url = ""

    async def __aenter__(self) -> str:
        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "benchmarks.servers",
            *self._args,
            cwd=REPO_ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
        )
        assert self._process.stdout is not None
        try:
            line = await asyncio.wait_for(self._process.stdout.readline(), START_DEADLINE_S)
        except TimeoutError:
            await self._stop()
            role = self._args[0]
            raise RuntimeError(f"stand-in {role} did not listen within {START_DEADLINE_S:.0f}s") from None
        if not line.startswith(b"PORT "):
            await self._stop()
            raise RuntimeError(f"stand-in {self._args[0]} failed to start: {line!r}")
        self.url = f"http://127.0.0.1:{int(line.split()[1])}"
        return self.url

    async def __aexit__(self, *exc: object) -> None:
        await self._stop()

    async def _stop(self) -> None:
        process = self._process
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), STOP_DEADLINE_S)
        except TimeoutError:
            process.kill()
            await process.wait()


def main(argv: list[str] | None = None) -> None:
    """Command line: serve one stand-in until terminated."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("role", choices=["miner", "judge"])
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--limit", type=int, default=0, help="miner parallelism or judge batch (0: none)")
    args = parser.parse_args(argv)
    latency_s = args.latency_ms / 1000
    app = miner_app(latency_s, args.limit) if args.role == "miner" else judge_app(latency_s, args.limit)
    asyncio.run(_serve(app))


if __name__ == "__main__":
    main()
