"""One row per status a check can end in: the only list of statuses. Everything that names them reads it.

Settings (``STATUSES``, ``FAILING_STATUSES``), a record's ``failed``, the report summary's keys and their
order, the terminal matrix's cells, the Markdown report's signs and worst-first order, the HTML colours,
the baseline gate's ranking and the JSON schema's enum all derive from :data:`TABLE`. Imports nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

FAIL, WARN, OK = "❌", "⚠️", "✅"  # the Markdown report's signs, worst first


@dataclass(frozen=True)
class Status:
    """What one status means and how each report shows it."""

    name: str  # in records, the JSON report and the summary
    meaning: str  # one line, for the docs' statuses table
    fails: bool  # fails the test whatever the fallback policy says
    severity: int  # worst first in the Markdown report: silently wrong numbers beat a reference that did not run
    # The baseline gate's rank, higher is worse (pass -> fallback is a regression, mismatch -> fallback an
    # improvement); None: an environment change (no IPEX, no BF16 on this runner), never a regression.
    rank: int | None
    cell: str  # the terminal matrix's cell (capitals: it must not be missed)
    colour: str  # the HTML report's colour
    sign: str  # the Markdown sign of a model with this status (the worst sign of its checks wins)
    explained: bool = True  # a record with it says why (``reason``; the schema requires it)


TABLE: tuple[Status, ...] = (
    Status("pass", "matches eager within the tolerance", False, 0, 0, "pass", "#2e7d32", OK, explained=False),
    Status("mismatch", "differs from eager on the example inputs", True, 5, 2, "MISMATCH", "#c62828", FAIL),
    Status(
        "diverges",
        "matches on the example inputs; on another input of the domain that eager accepts it differs, raises, "
        "or crashes the process (the record carries that input)",
        True,
        4,
        2,
        "DIVERGES",
        "#c62828",
        FAIL,
    ),
    Status(
        "fallback", "the build failed; eager would be used, with the reason", False, 2, 1, "fallback", "#ef6c00", WARN
    ),
    Status(
        "unavailable",
        "this machine cannot run the mode (a package or CPU feature is missing), with the reason",
        False,
        1,
        None,
        "n/a",
        "#757575",
        OK,
    ),
    Status("error", "the eager reference itself failed, or the check crashed", True, 3, 2, "ERROR", "#c62828", FAIL),
)

_BY_NAME = {s.name: s for s in TABLE}


def status(name: str) -> Status:
    """The row of ``name`` (KeyError for an unknown one)."""
    return _BY_NAME[name]


STATUSES: tuple[str, ...] = tuple(s.name for s in TABLE)
# Statuses that fail a test whatever the fallback policy says.
FAILING_STATUSES: frozenset[str] = frozenset(s.name for s in TABLE if s.fails)
EXPLAINED_STATUSES: tuple[str, ...] = tuple(s.name for s in TABLE if s.explained)
WORST_RANK = max(s.rank for s in TABLE if s.rank is not None)  # an unknown status counts as the worst
