"""Keeps the build egress proxy running: started on demand, restarted when it dies, stopped on close.

The proxy (``evaluation.sandbox.egress_proxy``) is a child process, so a crash or a stall in it never
takes the validator's event loop with it. Its stdout is read line by line: the ``listening`` event says
it is ready, refusals and errors become log records of the validator. Its stdin is a pipe it watches, so
it also ends when the validator dies without a chance to stop it. A proxy that exits is started again
after a back-off that doubles up to ``max_backoff_s`` (reset after a run longer than ``stable_s``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from dataclasses import dataclass

import structlog

from evaluation.errors import InfrastructureError

_slog = structlog.get_logger(__name__)
_MAX_FIELD = 200


@dataclass(frozen=True)
class ProxyCommand:
    """What the proxy process is started with."""

    listen: str
    allowed_hosts: tuple[str, ...]
    allowed_peers: tuple[str, ...]

    def argv(self, python: str) -> list[str]:
        """The command line that runs the proxy with ``python``."""
        args = [python, "-m", "evaluation.sandbox.egress_proxy", "--listen", self.listen, "--exit-with-stdin"]
        for host in self.allowed_hosts:
            args += ["--allow-host", host]
        for peer in self.allowed_peers:
            args += ["--allow-peer", peer]
        return args


def _bounded(value: object) -> object:
    """A proxy event's field as it goes into our log: numbers as they are, text cut short."""
    if isinstance(value, bool | int | float) or value is None:
        return value
    return str(value)[:_MAX_FIELD]


class EgressSupervisor:
    """Runs one proxy process for as long as it is wanted (see the module docstring)."""

    def __init__(
        self,
        command: ProxyCommand,
        *,
        python: str = sys.executable,
        start_timeout_s: float = 20.0,
        stop_timeout_s: float = 5.0,
        max_backoff_s: float = 30.0,
        stable_s: float = 60.0,
    ) -> None:
        self._command = command
        self._python = python
        self._start_timeout_s = start_timeout_s
        self._stop_timeout_s = stop_timeout_s
        self._max_backoff_s = max_backoff_s
        self._stable_s = stable_s
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._last_error = "not started yet"
        self._starts = 0
        self.address: str | None = None

    @property
    def starts(self) -> int:
        """How many times a proxy process reported itself listening (1 after a clean first start)."""
        return self._starts

    @property
    def pid(self) -> int | None:
        """The process id of the proxy running now, if any."""
        process = self._process
        return process.pid if process is not None and process.returncode is None else None

    def serving_since(self, starts: int) -> bool:
        """Whether the proxy that was running at ``starts`` is still the one running, and ready."""
        return self._ready.is_set() and self._starts == starts

    async def ensure_running(self) -> None:
        """Start the proxy if needed and wait until it listens; InfrastructureError when it does not."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._supervise(), name="egress-proxy-supervisor")
        try:
            await asyncio.wait_for(self._ready.wait(), self._start_timeout_s)
        except TimeoutError:
            raise InfrastructureError(
                f"build egress proxy not listening on {self._command.listen} after "
                f"{self._start_timeout_s:.0f}s: {self._last_error}"
            ) from None

    async def close(self) -> None:
        """Stop the proxy and its supervision. The supervisor can be started again afterwards."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task  # its clean-up ends the process
        # A fresh event: the next start may run on another event loop (the old one is bound to its own).
        self._ready = asyncio.Event()

    async def _supervise(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = 0.5
        while True:
            started = loop.time()
            try:
                await self._run_once()
            except OSError as exc:
                self._last_error = f"cannot start {self._python}: {exc}"
            self._ready.clear()
            if loop.time() - started > self._stable_s:
                backoff = 0.5
            _slog.warning("build egress proxy stopped; restarting", reason=self._last_error, in_s=backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self._max_backoff_s)

    async def _run_once(self) -> None:
        """Run one proxy process until it exits; its output becomes log records."""
        process = await asyncio.create_subprocess_exec(
            *self._command.argv(self._python),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            # Its own session: a Ctrl-C meant for the validator must not kill the proxy mid-shutdown.
            start_new_session=True,
        )
        self._process = process
        try:
            assert process.stdout is not None  # stdout=PIPE
            while True:
                try:
                    line = await process.stdout.readline()
                except ValueError:  # a line longer than the reader's limit: not one of the proxy's events
                    continue
                if not line:
                    break
                self._on_line(line.decode("utf-8", "replace").strip())
            code = await process.wait()
            self._last_error = f"exited with status {code} ({self._last_error})"
        finally:
            await self._stop(process)
            self._process = None

    def _on_line(self, line: str) -> None:
        try:
            event = json.loads(line)
        except ValueError:
            event = None
        if not isinstance(event, dict):
            if line:
                _slog.warning("build egress proxy output", line=line[:_MAX_FIELD])
                self._last_error = line[:_MAX_FIELD]
            return
        kind = str(event.pop("event", ""))
        fields = {str(key)[:40]: _bounded(value) for key, value in list(event.items())[:8]}
        if kind == "listening":
            self.address = str(fields.get("address"))
            self._starts += 1
            self._last_error = "running"
            self._ready.set()
            _slog.info("build egress proxy listening", **fields)
        elif kind in ("refused", "refused-suppressed"):
            _slog.info(f"build egress proxy {kind}", **fields)
        else:
            reason = str(fields.get("reason", kind))
            self._last_error = reason
            _slog.warning("build egress proxy error", event_kind=kind[:40], **fields)

    async def _stop(self, process: asyncio.subprocess.Process) -> None:
        """End ``process``: SIGTERM, then SIGKILL after ``stop_timeout_s``."""
        if process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            await asyncio.wait_for(process.wait(), self._stop_timeout_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
