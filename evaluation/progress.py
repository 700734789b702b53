"""Hooks through which callers watch long evaluation work, without the library knowing who listens.

The evaluation library never imports the daemon (``validator``): the daemon's metrics and progress logs,
and the ``evaluate`` command's progress bar, are passed in as the small protocol and callable below.
Every hook is optional and must be cheap and non-blocking: it is called on the event loop (or, for
``Observe`` in the sandbox, from the build's thread) in the middle of an evaluation.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal, Protocol

import structlog

from evaluation.types import SampleResult

# What an evaluation is doing: downloading and checking the repo, building and starting the container,
# sending the benchmark's samples.
Stage = Literal["fetch", "start", "query"]

# ``observe(seconds, outcome)``: one timed operation finished with a short, fixed outcome word such as
# "ok", "timeout", "built", "failed". Outcomes are chosen by the library, never taken from a miner.
Observe = Callable[[float, str], None]


class EvaluationProgress(Protocol):
    """Receives an evaluation's stages and each sample as it is scored."""

    def stage(self, stage: Stage, total: int | None = None) -> None:
        """The evaluation entered ``stage``; ``total`` is the sample count when the stage is "query"."""
        ...

    def sample(self, result: SampleResult) -> None:
        """One more sample was scored (a failed request counts: it is done, with score 0)."""
        ...


class Throttle:
    """Says when a periodic report is due: every ``every_n`` events or ``every_s`` seconds, whichever first.

    Keeps progress lines in a daemon's log few enough to read (a 450-sample evaluation logs a handful
    of lines, not 450) while a slow miner still shows signs of life.
    """

    def __init__(self, every_n: int, every_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        if every_n < 1 or every_s <= 0:
            raise ValueError("every_n must be >= 1 and every_s > 0")
        self._every_n = every_n
        self._every_s = every_s
        self._clock = clock
        self._count = 0
        self._last = clock()

    def due(self) -> bool:
        """Count one event; True when a report is due (and restart both counters)."""
        self._count += 1
        now = self._clock()
        if self._count >= self._every_n or now - self._last >= self._every_s:
            self._count, self._last = 0, now
            return True
        return False


class LoggedProgress:
    """An :class:`EvaluationProgress` that writes structlog lines: each stage, and the samples done every
    ``every_n`` samples or ``every_s`` seconds. Bind the miner (uid, hotkey...) with structlog's
    contextvars around the evaluation and every line carries it."""

    def __init__(
        self,
        every_n: int = 25,
        every_s: float = 15.0,
        logger: structlog.typing.FilteringBoundLogger | None = None,
    ) -> None:
        self._log = logger or structlog.get_logger(__name__)
        self._throttle = Throttle(every_n, every_s)
        self._every_n = every_n
        self._stage_started = time.monotonic()
        self._stage: Stage | None = None
        self.done = 0
        self.failed = 0
        self.total: int | None = None

    def stage(self, stage: Stage, total: int | None = None) -> None:
        """Log the stage change with how long the previous stage took."""
        now = time.monotonic()
        previous = None if self._stage is None else round(now - self._stage_started, 1)
        self._stage, self._stage_started = stage, now
        if total is not None:
            self.total = total
        self._log.info("evaluation stage", stage=stage, previous_stage_s=previous, samples=total)

    def sample(self, result: SampleResult) -> None:
        """Count the sample; log progress when due, and always at the last one."""
        self.done += 1
        self.failed += result.error is not None
        last = self.total is not None and self.done >= self.total
        if self._throttle.due() or last:
            elapsed = time.monotonic() - self._stage_started
            self._log.info(
                "evaluation progress",
                done=self.done,
                total=self.total,
                failed=self.failed,
                samples_per_s=round(self.done / elapsed, 2) if elapsed > 0 else None,
            )
