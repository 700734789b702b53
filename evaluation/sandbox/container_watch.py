"""Who ended a miner's container: the miner itself, or our side.

A container that dies in the middle of an evaluation fails every sample after it with a connection
error. Whether that is the miner's fault depends on what killed it, and only the daemon's event stream
tells: a process that exits or is OOM-killed by the kernel gives a ``die`` event alone, while a stop,
``docker kill`` or a daemon shutting down sends a signal through the daemon first (a ``kill`` event).
A daemon that restarts also drops every event subscriber, so a stream that ends while the container is
watched means the daemon went away. :class:`ContainerWatch` follows one container's events on a thread
of its own; :func:`attribute_exit` is the pure rule that turns what it saw into a verdict.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from evaluation.sandbox.port import ContainerExit

# How long attribution waits for the events of an exit the daemon already reports.
EVENT_GRACE_S = 2.0


class _Stream(Protocol):
    def __iter__(self) -> Iterator[dict[str, Any]]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class WatchedEvents:
    """What the event stream said about one container so far."""

    died: bool = False
    exit_code: int | None = None
    oom: bool = False
    killed_with: str | None = None  # the signal of a kill sent through the daemon before the death
    lost: str | None = None  # why the stream ended without our asking, if it did


class ContainerWatch:
    """Follows one container's events from the daemon on a daemon thread until :meth:`close`.

    ``open_stream`` opens the event stream (blocking, no read timeout: a quiet container sends nothing
    for hours). A stream that ends or fails before ``close`` is recorded as lost with its reason.
    """

    def __init__(self, open_stream: Callable[[], _Stream]) -> None:
        self._open_stream = open_stream
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._events = WatchedEvents()
        self._closing = False
        self._stream: _Stream | None = None
        self._thread = threading.Thread(target=self._follow, name="container-watch", daemon=True)

    def start(self) -> None:
        """Begin following (returns at once)."""
        self._thread.start()

    def close(self) -> None:
        """Stop following; what was seen stays readable. Never raises."""
        with self._lock:
            self._closing = True
            stream = self._stream
        if stream is not None:
            try:
                stream.close()
            except Exception:  # closing a dropped connection may fail in any way
                pass

    def snapshot(self, wait_for_exit_s: float = 0.0) -> WatchedEvents:
        """What was seen so far, waiting up to ``wait_for_exit_s`` for a death or a lost stream."""
        with self._changed:
            self._changed.wait_for(
                lambda: self._events.died or self._events.lost is not None, wait_for_exit_s
            )
            return self._events

    def _record(self, **changes: Any) -> None:
        with self._changed:
            values = {**self._events.__dict__, **changes}
            self._events = WatchedEvents(**values)
            self._changed.notify_all()

    def _follow(self) -> None:
        try:
            stream = self._open_stream()
            with self._lock:
                self._stream = stream
                closing = self._closing
            if closing:
                stream.close()
                return
            for event in stream:
                self._see(event)
            reason = "the daemon ended the event stream"
        except Exception as exc:  # any failure of the stream means the same: we lost it
            reason = f"{type(exc).__name__}: {exc}"[:300]
        with self._lock:
            closing = self._closing
        if not closing:
            self._record(lost=reason)

    def _see(self, event: dict[str, Any]) -> None:
        action = str(event.get("Action") or event.get("status") or "")
        attributes = (event.get("Actor") or {}).get("Attributes") or {}
        if action == "kill":
            self._record(killed_with=str(attributes.get("signal", "?")))
        elif action == "oom":
            self._record(oom=True)
        elif action == "die":
            code = str(attributes.get("exitCode"))
            self._record(died=True, exit_code=int(code) if code.lstrip("-").isdigit() else None)


def attribute_exit(events: WatchedEvents, state: dict[str, Any], logs_tail: str) -> ContainerExit | str:
    """The miner's exit report, or the reason (a str) why the exit is on our side.

    ``state`` is the container's inspected ``State``. The miner is at fault only when the daemon, still
    connected, saw the container die with no signal sent through it (its process exited, crashed or
    was OOM-killed by the kernel inside its own memory limit).
    """
    if events.lost is not None:
        return f"the docker daemon connection dropped while the model ran ({events.lost})"
    if not events.died:
        return "the container stopped, but the daemon reported no exit for it"
    if events.killed_with is not None:
        return f"the container was killed through the docker daemon (signal {events.killed_with})"
    code = events.exit_code if events.exit_code is not None else state.get("ExitCode")
    return ContainerExit(
        exit_code=int(code) if isinstance(code, int) else None,
        oom_killed=bool(events.oom or state.get("OOMKilled")),
        logs_tail=logs_tail,
    )
