"""The progress bar of ``jitcpu run`` (tqdm: rows, rows/s, ETA; silent off a TTY) and latency percentiles."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TextIO

import numpy
from tqdm import tqdm


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100), numpy's linear interpolation; None for no values."""
    if not values:
        return None
    return float(numpy.percentile(values, q))


# Rows are counted in fractions (a question-answering row's windows each count as part of it): show whole rows.
_WITH_TOTAL = "{n:.0f}/{total:.0f} rows {percentage:3.0f}%|{bar}| {rate_fmt} ETA {remaining}"
_WITHOUT_TOTAL = "{n:.0f} rows [{elapsed}, {rate_fmt}]"


class Progress:
    """A tqdm bar on ``stream`` (stderr); ``enabled=None`` shows it only when the stream is a terminal."""

    def __init__(
        self, total: int | None = None, stream: TextIO | None = None, enabled: bool | None = None, interval: float = 0.2
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self.enabled = enabled
        self.interval = interval
        self.rows = 0.0
        self._total = total
        self._bar: tqdm | None = None

    @property
    def total(self) -> int | None:
        return self._total

    @total.setter
    def total(self, value: int | None) -> None:  # known once the input was counted
        self._total = value
        if self._bar is not None:
            self._bar.total = value
            self._bar.bar_format = _WITH_TOTAL if value else _WITHOUT_TOTAL

    def _open(self) -> tqdm:
        if self._bar is None:
            self._bar = tqdm(
                total=self._total,
                file=self.stream,
                unit=" rows",  # rate_fmt: "12.3 rows/s"
                mininterval=self.interval,
                leave=False,  # the run's summary line replaces it
                dynamic_ncols=True,
                bar_format=_WITH_TOTAL if self._total else _WITHOUT_TOTAL,
            )
        return self._bar

    def update(self, rows: float) -> None:
        self.rows += rows
        if self.enabled:
            self._open().update(rows)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
