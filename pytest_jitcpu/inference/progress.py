"""A progress line on a terminal (rows, rows/s, ETA), quiet when stderr is not a TTY, and latency stats."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import TextIO


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) by linear interpolation; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class Progress:
    """Redraws one line on ``stream`` at most every ``interval`` seconds; does nothing when disabled."""

    def __init__(
        self, total: int | None = None, stream: TextIO | None = None, enabled: bool | None = None, interval: float = 0.2
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self.enabled = enabled
        self.total = total
        self.interval = interval
        self.rows = 0.0
        self.start = time.perf_counter()
        self._last = 0.0
        self._drawn = False

    def update(self, rows: float) -> None:
        self.rows += rows
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self._last < self.interval:
            return
        self._last = now
        self._draw(now)

    def _draw(self, now: float) -> None:
        elapsed = max(now - self.start, 1e-9)
        rate = self.rows / elapsed
        rows = round(self.rows)  # a question-answering row's windows count as fractions of it
        text = f"{rows} rows"
        if self.total:
            done = min(self.rows / self.total, 1.0)
            filled = int(done * 20)
            eta = max(self.total - self.rows, 0) / rate if rate > 0 else 0
            text = f"[{'#' * filled}{'.' * (20 - filled)}] {rows}/{self.total} rows {done:4.0%}"
            text += f"  {rate:.1f} rows/s  ETA {duration(eta)}"
        else:
            text += f"  {rate:.1f} rows/s"
        self.stream.write("\r" + text + "\033[K")
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self.enabled and self._drawn:
            self.stream.write("\r\033[K")
            self.stream.flush()
