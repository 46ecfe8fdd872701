"""The export's progress callback type and the command line's progress bar.

An export runs for minutes on a long recording; the library reports ``(done, total)`` frames
and leaves drawing to the caller. :class:`ProgressBar` is the drawing ``orbridge recordings
export`` uses, kept out of the pipeline so the library never writes to a terminal itself.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import IO

__all__ = ["Progress", "ProgressBar"]

Progress = Callable[[int, int], None]
"""``progress(frames done, frames expected)``; the total is an estimate from the manifest."""


class ProgressBar:
    """``progress`` callback drawing on a stream: in place on a TTY, else a line every 10 %."""

    def __init__(self, stream: IO[str] | None = None, label: str = "export") -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.label = label
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._started = time.monotonic()
        self._last_draw = 0.0
        self._last_step = -1
        self._drawn = False

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        fraction = min(1.0, done / total) if total > 0 else 0.0
        rate = done / max(now - self._started, 1e-6)
        if self.tty:
            if now - self._last_draw < 0.1 and done < total:
                return
            self._last_draw = now
            filled = round(30 * fraction)
            eta = (total - done) / rate if rate > 0 and total > done else 0.0
            self.stream.write(
                f"\r{self.label} [{'#' * filled}{'.' * (30 - filled)}] {100 * fraction:3.0f}% "
                f"{done}/{total} frames {rate:5.1f} fps ETA {eta:4.0f} s "
            )
            self._drawn = True
        else:
            step = int(fraction * 10)
            if step <= self._last_step:
                return
            self._last_step = step
            self.stream.write(f"{self.label}: {10 * step}% ({done}/{total} frames, {rate:.0f}/s)\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
