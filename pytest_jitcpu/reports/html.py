"""pytest-html integration: each test's jitcpu table in its row, the matrix in the report's summary.

Registered by the plugin only when pytest-html is installed and ``--html`` is given (its hook specs
exist only then). The per-test table travels as a pytest-html ``extras.html`` on the test report, so it
reaches the controller under pytest-xdist like any other extra; the matrix is added in
``pytest_html_results_summary`` from the session's records.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable
from html import escape
from typing import Any

import pytest

from ..record import Record
from ..statuses import status
from .model import columns, models, sort_records, summary

# Inline styles: the report's own CSS does not know these classes, and a self-contained report has no
# other stylesheet to add them to (the statuses' colours come from their table).
_TABLE = 'class="jitcpu" style="border-collapse:collapse;margin:4px 0"'
_CELL = 'style="border:1px solid #ccc;padding:2px 6px;text-align:left;vertical-align:top"'


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.3g}"


def _status(name: str) -> str:
    try:
        colour = status(name).colour
    except KeyError:
        colour = "inherit"
    return f'<span class="jitcpu-{escape(name)}" style="color:{colour};font-weight:bold">{escape(name)}</span>'


def _table(header: Iterable[str], rows: Iterable[Iterable[str]]) -> str:
    """One line of HTML (pytest-html puts extras in a block where newlines would show)."""
    head = "".join(f"<th {_CELL}>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td {_CELL}>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table {_TABLE}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def check_table(records: list[Record]) -> str:
    """The records of one test: model, mode, dtype, status, diffs, tolerances, latency, reason."""
    rows = []
    for r in records:
        detail = "; ".join(x for x in (r.worst and f"at {r.worst}", r.reason, r.counterexample) if x)
        rows.append(
            [
                escape(r.model),
                escape(r.mode),
                escape(r.dtype),
                _status(r.status),
                _num(r.max_abs_diff),
                _num(r.atol),
                _num(r.rtol),
                _num(r.latency_ms),
                escape(detail),
            ]
        )
    header = ("model", "mode", "dtype", "status", "max abs diff", "atol", "rtol", "latency ms", "reason")
    replays = "".join(
        f"<details><summary>replay {escape(r.model)} {escape(r.mode)}/{escape(r.dtype)}</summary>"
        f"<pre>{escape(r.replay)}</pre></details>"
        for r in records
        if r.replay
    )
    return '<div class="jitcpu-check"><b>jitcpu</b>' + _table(header, rows) + replays + "</div>"


def matrix(records: list[Record]) -> str:
    """The session's test x (mode, dtype) matrix with the counts, for the report's summary."""
    cols = columns(records)
    rows = []
    for m in models(records):
        cells = [_status(m.records[c].status) if c in m.records else "" for c in cols]
        rows.append([escape(m.nodeid), escape(m.model), *cells])
    counts = ", ".join(f"{n} {s}" for s, n in summary(records).items() if n)
    header = ["test", "model", *(f"{m} {d}" for m, d in cols)]
    return (
        f'<div class="jitcpu-matrix"><h2>jitcpu compatibility matrix</h2><p>{escape(counts)} '
        f"({len(records)} checks)</p>" + _table(header, rows) + "</div>"
    )


class HtmlHooks:
    """pytest-html hooks; ``records`` gives the session's records (on the controller)."""

    def __init__(self, records: Callable[[], list[Record]]) -> None:
        self.records = records

    @pytest.hookimpl(wrapper=True, tryfirst=True)  # outermost: runs after the plugin put records on the report
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
        report = yield
        fresh = getattr(report, "jitcpu", None)
        if fresh:
            from pytest_html import extras

            report.extras = [
                *getattr(report, "extras", []),
                extras.html(check_table([Record.from_json(r) for r in fresh])),
            ]
        return report

    def pytest_html_results_summary(
        self, prefix: list[str], summary: list[str], postfix: list[str], session: Any
    ) -> None:
        records = sort_records(self.records())
        if records:
            postfix.append(matrix(records))
