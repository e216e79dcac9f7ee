"""Reports from records: JSON (schema ``jitcpu-report/1``), Markdown (a CI step summary), terminal matrix."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any

from .record import UNTESTED_MARK, Record
from .settings import DTYPES, MODES, STATUSES, unwritable

SCHEMA = "jitcpu-report/1"
REPORT_SUFFIXES = (".json", ".md")
_ICONS = {
    "pass": "pass",
    "mismatch": "MISMATCH",
    "diverges": "DIVERGES",
    "fallback": "fallback",
    "unavailable": "n/a",
    "error": "ERROR",
}


def path_problem(path: str | Path) -> str | None:
    """Why a report cannot be written at ``path`` (checked before any work, by the plugin and the CLI)."""
    if not str(path).endswith(REPORT_SUFFIXES):
        return f"{str(path)!r} must end in .json or .md"
    problem = unwritable(str(path))
    return f"cannot write {str(path)!r}: {problem}" if problem else None


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
    found = {status: counts.get(status, 0) for status in STATUSES}
    found["untested"] = sum(r.untested for r in records)
    return found


def counts_text(counts: dict[str, int], bold: bool = False) -> list[str]:
    """``12 pass (3 untested)``, ``1 diverges``...: one part per status that occurred."""
    parts = []
    for status in STATUSES:
        n = counts.get(status, 0)
        if not n and not bold:
            continue
        text = f"**{status}** {n}" if bold else f"{n} {status}"
        if status == "pass" and counts.get("untested"):
            text += f" ({counts['untested']} untested)"
        parts.append(text)
    return parts


def to_json(records: list[Record], environment: dict[str, Any], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "schema": SCHEMA,
        "environment": environment,
        "summary": summary(records),
        "results": [r.to_json() for r in records],
    }
    if extra:
        data.update(extra)
    return data


def dumps(data: dict[str, Any]) -> str:
    """Strict JSON: a NaN or infinity anywhere is a bug, so refuse it rather than write invalid JSON."""
    return json.dumps(_finite(data), indent=2, allow_nan=False, ensure_ascii=False) + "\n"


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a JSON report, shipped in the package as ``report_schema.json``.

    Validate a report with it: ``jsonschema.validate(json.load(f), pytest_jitcpu.report.json_schema())``.
    """
    return json.loads(resources.files(__package__).joinpath("report_schema.json").read_text(encoding="utf-8"))


def load(path: str | Path) -> dict[str, Any]:
    """Read a JSON report written by this plugin (for baselines and merging)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise ValueError(f"{path}: not a jitcpu report (schema {SCHEMA!r} expected)")
    return data


def markdown(records: list[Record], environment: dict[str, Any], comparison: str | None = None) -> str:
    """A Markdown page for ``$GITHUB_STEP_SUMMARY``: see :mod:`pytest_jitcpu.markdown`."""
    from .markdown import markdown as render

    return render(records, environment, comparison)


def _columns(records: list[Record]) -> list[tuple[str, str]]:
    present = {(r.mode, r.dtype) for r in records}
    return [(m, d) for d in DTYPES for m in MODES if (m, d) in present]


def _rows(records: list[Record]) -> dict[tuple[str, str], dict[tuple[str, str], Record]]:
    rows: dict[tuple[str, str], dict[tuple[str, str], Record]] = {}
    for r in records:
        rows.setdefault((r.nodeid, r.model), {})[(r.mode, r.dtype)] = r
    return rows


def terminal_matrix(records: list[Record], verbose: bool = False) -> list[str]:
    """The compact test x mode x dtype matrix shown after the run; ``verbose`` adds the reasons."""
    if not records:
        return []
    columns = _columns(records)
    header = ["test", *[f"{m}/{d}" for m, d in columns]]
    rows = [header]
    for (nodeid, model), by_check in _rows(records).items():
        name = nodeid.split("::", 1)[-1] if nodeid else model
        label = f"{name} [{model}]"
        rows.append([label, *[_icon(by_check[c]) if c in by_check else "" for c in columns]])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]
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


def _icon(r: Record) -> str:
    return UNTESTED_MARK if r.untested else _ICONS[r.status]


def write(
    path: str | Path,
    records: list[Record],
    environment: dict[str, Any],
    extra: dict[str, Any] | None = None,
    comparison: str | None = None,
) -> Path:
    """Write a report; the format follows the suffix (``.json`` or ``.md``). Creates folders. Written to a
    temporary file and renamed: a reader (or a crash) never sees half a report."""
    from .atomic import write_text

    if Path(path).suffix == ".md":
        return write_text(path, markdown(records, environment, comparison))
    return write_text(path, dumps(to_json(records, environment, extra)))
