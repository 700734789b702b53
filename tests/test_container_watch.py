"""The rule that tells a miner's own crash from our side losing its container, on scripted event streams."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from evaluation.sandbox.container_watch import ContainerWatch, WatchedEvents, attribute_exit
from evaluation.sandbox.port import ContainerExit


def _event(action: str, **attributes: str) -> dict[str, Any]:
    return {"Type": "container", "Action": action, "Actor": {"ID": "c1", "Attributes": attributes}}


class _Scripted:
    """An event stream that yields its events, then blocks until closed (``hold``) or ends."""

    def __init__(self, events: list[dict[str, Any]], *, hold: bool = True, fail: Exception | None = None):
        self._events = events
        self._hold = hold
        self._fail = fail
        self._closed = threading.Event()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        yield from self._events
        if self._fail is not None:
            raise self._fail
        if self._hold:
            self._closed.wait(10)
            if self._closed.is_set():
                raise OSError("stream closed")  # what a socket shut down under a reader raises

    def close(self) -> None:
        self._closed.set()


def _watched(stream: _Scripted, wait_s: float = 2.0) -> tuple[ContainerWatch, WatchedEvents]:
    watch = ContainerWatch(lambda: stream)
    watch.start()
    return watch, watch.snapshot(wait_s)


def test_a_death_without_a_signal_through_the_daemon_is_the_miners() -> None:
    watch, seen = _watched(_Scripted([_event("start"), _event("die", exitCode="3")]))
    watch.close()
    verdict = attribute_exit(seen, {"ExitCode": 3, "OOMKilled": False}, "Traceback: boom")
    assert verdict == ContainerExit(exit_code=3, oom_killed=False, logs_tail="Traceback: boom")
    assert "exited with code 3" in verdict.describe() and "boom" in verdict.describe()


def test_an_out_of_memory_kill_by_the_kernel_is_the_miners() -> None:
    watch, seen = _watched(_Scripted([_event("oom"), _event("die", exitCode="137")]))
    watch.close()
    verdict = attribute_exit(seen, {"ExitCode": 137}, "")
    assert isinstance(verdict, ContainerExit) and verdict.oom_killed and verdict.exit_code == 137
    assert "out of memory" in verdict.describe()


def test_a_kill_sent_through_the_daemon_is_ours() -> None:
    watch, seen = _watched(_Scripted([_event("kill", signal="15"), _event("die", exitCode="143")]))
    watch.close()
    verdict = attribute_exit(seen, {"ExitCode": 143}, "")
    assert isinstance(verdict, str) and "signal 15" in verdict


def test_a_stream_the_daemon_ends_is_a_lost_daemon_even_after_a_death() -> None:
    # A daemon shutting down kills the container, then drops its subscribers.
    watch, seen = _watched(_Scripted([_event("die", exitCode="0")], hold=False))
    watch.close()
    assert seen.died
    assert attribute_exit(seen, {}, "") == (
        "the docker daemon connection dropped while the model ran (the daemon ended the event stream)"
    )


def test_a_stream_that_fails_is_lost_with_its_reason() -> None:
    watch, seen = _watched(_Scripted([], fail=ConnectionResetError("reset by peer")))
    watch.close()
    assert seen.lost == "ConnectionResetError: reset by peer"


def test_closing_the_watch_is_not_a_loss_and_an_unseen_exit_is_ours() -> None:
    stream = _Scripted([_event("start")])
    watch, seen = _watched(stream, wait_s=0.2)
    watch.close()
    assert watch.snapshot().lost is None  # our own close ends the stream: nothing lost
    verdict = attribute_exit(seen, {"ExitCode": 0}, "")
    assert isinstance(verdict, str) and "no exit" in verdict


def test_a_stream_that_cannot_open_is_lost() -> None:
    def refuse() -> _Scripted:
        raise ConnectionRefusedError("daemon down")

    watch = ContainerWatch(refuse)
    watch.start()
    assert watch.snapshot(2.0).lost == "ConnectionRefusedError: daemon down"
