"""The ``evaluate`` command's progress display: a one-line bar on a terminal, plain lines otherwise.

An :class:`~evaluation.progress.EvaluationProgress`, so the pipeline drives it the same way it drives the
daemon's progress logs. Written by hand (a dozen lines) rather than with tqdm, which is only here as a
dependency of other packages.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

from evaluation.progress import Stage
from evaluation.types import SampleResult

_STAGE_TEXT: dict[str, str] = {
    "fetch": "fetching and checking the repo",
    "start": "building the image and starting the container (the first build can take minutes)",
    "query": "sending samples",
}
_BAR_WIDTH = 30
_REDRAW_S = 0.1  # a terminal redraw at most this often
_LINE_EVERY_S = 10.0  # without a terminal: a line at most this often (and every 10 %)


def format_duration(seconds: float) -> str:
    """``95`` -> ``1m35s``; ``3725`` -> ``1h02m``."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def render_bar(done: int, total: int, failed: int, elapsed_s: float, width: int = _BAR_WIDTH) -> str:
    """``[#######.......]  37/250  15%  2.1/s  ETA 1m41s  3 failed`` (pure, for the tests)."""
    share = done / total if total else 1.0
    filled = min(width, int(share * width))
    rate = done / elapsed_s if elapsed_s > 0 else 0.0
    eta = f"ETA {format_duration((total - done) / rate)}" if rate > 0 and done < total else ""
    parts = [f"[{'#' * filled}{'.' * (width - filled)}]", f"{done}/{total}", f"{100 * share:3.0f}%"]
    parts += [f"{rate:.1f}/s"] + ([eta] if eta else []) + ([f"{failed} failed"] if failed else [])
    return "  ".join(parts)


class TerminalProgress:
    """Shows an evaluation's stages and samples on ``stream`` (stderr: stdout keeps the results).

    ``tty`` None asks the stream. On a terminal the bar is redrawn in place; otherwise a line is written
    every 10 % or every 10 s, so a log file or CI output stays short.
    """

    def __init__(
        self, stream: TextIO, *, tty: bool | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._out = stream
        self._tty = stream.isatty() if tty is None else tty
        self._clock = clock
        self._started = clock()
        self._last_draw = float("-inf")
        self._last_decile = 0
        self.done = 0
        self.failed = 0
        self.total = 0

    def stage(self, stage: Stage, total: int | None = None) -> None:
        """Announce the stage on its own line."""
        if total is not None:
            self.total = total
            self._started = self._clock()
        text = _STAGE_TEXT.get(stage, stage)
        suffix = f" ({total})" if total is not None else ""
        self._out.write(f"{text}{suffix}...\n")
        self._out.flush()

    def sample(self, result: SampleResult) -> None:
        """Count the sample and redraw (or write a line) when due."""
        self.done += 1
        self.failed += result.error is not None
        now = self._clock()
        last = self.total and self.done >= self.total
        line = render_bar(self.done, self.total, self.failed, now - self._started)
        if self._tty:
            if last or now - self._last_draw >= _REDRAW_S:
                self._last_draw = now
                self._out.write("\r" + line + ("\n" if last else ""))
                self._out.flush()
            return
        decile = 10 * self.done // self.total if self.total else 0
        if last or decile > self._last_decile or now - self._last_draw >= _LINE_EVERY_S:
            self._last_decile, self._last_draw = decile, now
            self._out.write(line + "\n")
            self._out.flush()
