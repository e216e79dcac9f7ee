"""The terminal matrix shown after a run: one line per (test, model), one cell per (mode, dtype)."""

from __future__ import annotations

from ..record import UNTESTED_MARK, Record
from ..statuses import status
from .model import columns, counts_text, models, summary


def cell(r: Record) -> str:
    """A check's cell: its status as the statuses table shows it (capitals for what must not be missed)."""
    if r.untested:
        return UNTESTED_MARK
    try:
        return status(r.status).cell
    except KeyError:
        return r.status


def terminal_matrix(records: list[Record], verbose: bool = False) -> list[str]:
    """The compact test x mode x dtype matrix shown after the run; ``verbose`` adds the reasons."""
    if not records:
        return []
    cols = columns(records)
    header = ["test", *[f"{m}/{d}" for m, d in cols]]
    rows = [header]
    for m in models(records):
        name = m.nodeid.split("::", 1)[-1] if m.nodeid else m.model
        rows.append([f"{name} [{m.model}]", *[cell(m.records[c]) if c in m.records else "" for c in cols]])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(text.ljust(widths[i]) for i, text in enumerate(row)).rstrip() for row in rows]
    counts = summary(records)
    if counts["untested"]:
        lines.append(f"{UNTESTED_MARK} = untested: matched on the example, but no other valid input could be tried")
    lines.append(", ".join(counts_text(counts)) + f" ({len(records)} checks)")
    if verbose:
        for r in records:
            if r.status != "pass":
                lines.append(f"{r.nodeid} [{r.model}] {r.mode}/{r.dtype}: {r.status}: {r.reason}")
            elif r.untested:
                lines.append(f"{r.nodeid} [{r.model}] {r.mode}/{r.dtype}: untested: {r.untested_reason}")
    return lines
