"""One row per report format, by the path's suffix: the only place that decides what ``--jitcpu-report``
and ``jitcpu check --report`` write. Adding a format is one module under ``reports/`` with a ``render``
function (records, environment, extra, comparison) -> text, and one row here.

Imports no format module until one is written (the plugin reads this table when pytest starts).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..record import Record
from ..settings import unwritable


@dataclass(frozen=True)
class Writer:
    suffix: str  # what the path ends in
    module: str  # the module under pytest_jitcpu.reports that renders it
    what: str  # for help texts
    # The session's journal (JSON lines of records, pytest_jitcpu.reports.journal) goes next to the first
    # report of a format that has this; else next to the first report.
    journal: bool = False


WRITERS: tuple[Writer, ...] = (
    Writer(".json", "json", "schema jitcpu-report/1", journal=True),
    Writer(".md", "markdown", "CI step summary"),
)
SUFFIXES: tuple[str, ...] = tuple(w.suffix for w in WRITERS)
HELP = " or ".join(f"{w.suffix} ({w.what})" for w in WRITERS)  # ".json (schema ...) or .md (CI step summary)"


def writer(path: str | Path) -> Writer | None:
    """The row for ``path``'s suffix, or None when no format has it."""
    return next((w for w in WRITERS if str(path).endswith(w.suffix)), None)


def path_problem(path: str | Path) -> str | None:
    """Why a report cannot be written at ``path`` (checked before any work, by the plugin and the CLI)."""
    if writer(path) is None:
        return f"{str(path)!r} must end in {' or '.join(SUFFIXES)}"
    problem = unwritable(str(path))
    return f"cannot write {str(path)!r}: {problem}" if problem else None


def journal_next_to(paths: list[str]) -> str | None:
    """The report the session's journal goes next to: the first of a journalled format, else the first."""
    return next((p for p in paths if (w := writer(p)) is not None and w.journal), paths[0] if paths else None)


def render(
    path: str | Path,
    records: list[Record],
    environment: dict[str, Any],
    extra: dict[str, Any] | None = None,
    comparison: str | None = None,
) -> str:
    """The text of the report at ``path``, in the format its suffix names."""
    row = writer(path)
    if row is None:
        raise ValueError(path_problem(path))
    module = importlib.import_module(f"{__package__}.{row.module}")
    return module.render(records, environment, extra, comparison)


def write(
    path: str | Path,
    records: list[Record],
    environment: dict[str, Any],
    extra: dict[str, Any] | None = None,
    comparison: str | None = None,
) -> Path:
    """Write a report; the format follows the suffix. Creates folders. Written to a temporary file and
    renamed: a reader (or a crash) never sees half a report."""
    from ..atomic import write_text

    return write_text(path, render(path, records, environment, extra, comparison))
