"""The matrix every report format reads: records in a stable order, grouped into one :class:`Model` per
(test, model) with its checks in (dtype, mode) column order, and the counts per status.

The formats (:mod:`.json`, :mod:`.markdown`, :mod:`.terminal`, :mod:`.html`) import this and nothing of
each other; what a status means and how it shows comes from :mod:`pytest_jitcpu.statuses`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from ..record import Record
from ..settings import DTYPES, MODES
from ..statuses import FAIL, FAILING_STATUSES, OK, STATUSES, WARN, status

Column = tuple[str, str]  # (mode, dtype)


def sort_records(records: Iterable[Record]) -> list[Record]:
    """A stable order that does not depend on which xdist worker ran what: by test id, then the order
    of checks within the test, then canonical mode and dtype order."""
    indexed = list(records)
    first_seen: dict[tuple[str, str], int] = {}
    for i, r in enumerate(indexed):
        first_seen.setdefault((r.nodeid, r.model), i)

    def key(r: Record) -> tuple[Any, ...]:
        mode = MODES.index(r.mode) if r.mode in MODES else len(MODES)
        dtype = DTYPES.index(r.dtype) if r.dtype in DTYPES else len(DTYPES)
        return (r.nodeid, first_seen[(r.nodeid, r.model)], dtype, mode)

    return sorted(indexed, key=key)


def summary(records: Iterable[Record]) -> dict[str, int]:
    """Records per status (the contract's six keys), and ``untested``: the passes among them that rest on
    the example alone (counted in ``pass`` too, so the six statuses still add up to the records)."""
    records = list(records)
    counts = Counter(r.status for r in records)
    found = {name: counts.get(name, 0) for name in STATUSES}
    found["untested"] = sum(r.untested for r in records)
    return found


def counts_text(counts: dict[str, int], bold: bool = False) -> list[str]:
    """``12 pass (3 untested)``, ``1 diverges``...: one part per status that occurred (every one if bold)."""
    parts = []
    for name in STATUSES:
        n = counts.get(name, 0)
        if not n and not bold:
            continue
        text = f"**{name}** {n}" if bold else f"{n} {name}"
        if name == "pass" and counts.get("untested"):
            text += f" ({counts['untested']} untested)"
        parts.append(text)
    return parts


def column_order(keys: Iterable[Column]) -> list[Column]:
    """(mode, dtype) columns by dtype, then mode, in the tables' order (unknown ones last)."""

    def key(k: Column) -> tuple[int, int]:
        mode, dtype = k
        return (
            DTYPES.index(dtype) if dtype in DTYPES else len(DTYPES),
            MODES.index(mode) if mode in MODES else len(MODES),
        )

    return sorted(keys, key=key)


def columns(records: Iterable[Record]) -> list[Column]:
    """The (mode, dtype) columns these records fill."""
    return column_order({(r.mode, r.dtype) for r in records})


def _severity(name: str) -> int:
    try:
        return status(name).severity
    except KeyError:
        return 0


class Model:
    """The records of one (test, model) check: one row of the matrix."""

    def __init__(self, nodeid: str, model: str) -> None:
        self.nodeid = nodeid
        self.model = model
        self.records: dict[Column, Record] = {}

    @property
    def counts(self) -> Counter[str]:
        return Counter(r.status for r in self.records.values())

    @property
    def sign(self) -> str:
        """The worst sign of its checks (an untested pass warns)."""
        counts = self.counts
        if any(counts[s] for s in FAILING_STATUSES):
            return FAIL
        warned = any(status(s).sign == WARN for s in counts if s in STATUSES)
        return WARN if warned or self.untested else OK

    @property
    def untested(self) -> int:
        """Passes that rest on the example alone (no other valid input could be tried)."""
        return sum(r.untested for r in self.records.values())

    @property
    def rank(self) -> tuple[int, int, int]:
        """Sort key: worst status first, then more non-passing checks first."""
        counts = self.counts
        worst = max((_severity(s) for s in counts), default=0)
        failing = sum(n for s, n in counts.items() if s in FAILING_STATUSES)
        other = sum(n for s, n in counts.items() if s != "pass")
        return (-worst, -failing, -other)

    @property
    def label(self) -> str:
        """The model's name, and the attention implementation it runs as given (its eager record's)."""
        eager = next((r for (mode, _), r in self.records.items() if mode == "eager"), None)
        attention = eager.attn_implementation if eager is not None else None
        return f"{self.model} ({attention} attention)" if attention else self.model

    def verdict(self) -> str:
        counts = self.counts
        parts = [f"{counts[s]} {s}" for s in sorted(counts, key=lambda s: -_severity(s)) if s != "pass"]
        if self.untested:
            parts.append(f"{self.untested} untested")
        return ", ".join(parts) if parts else f"{counts['pass']} pass"

    def speedups(self) -> list[tuple[str, float]]:
        """(mode dtype, eager fp32 latency / latency) for every passing record with a latency."""
        eager = self.records.get(("eager", "fp32"))
        if eager is None or not eager.latency_ms:
            return []
        out = []
        for (mode, dtype), r in self.records.items():
            if r.latency_ms and r.status == "pass":  # the speed of a wrong answer is no offer
                out.append((f"{mode} {dtype}", eager.latency_ms / r.latency_ms))
        return out


def models(records: Iterable[Record]) -> list[Model]:
    """One Model per (test, model), in report order, each with its records in column order."""
    found: dict[tuple[str, str], Model] = {}
    for r in records:
        found.setdefault((r.nodeid, r.model), Model(r.nodeid, r.model)).records[(r.mode, r.dtype)] = r
    for m in found.values():
        m.records = {key: m.records[key] for key in column_order(m.records)}
    return list(found.values())


def worst_first(found: list[Model]) -> list[Model]:
    return sorted(found, key=lambda m: m.rank)  # stable: ties keep the report's order
