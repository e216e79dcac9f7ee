"""Reports from records: JSON (schema ``jitcpu-report/1``), Markdown (a CI step summary), terminal matrix."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any

from .record import Record
from .settings import DTYPES, MODES, STATUSES

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
    counts = Counter(r.status for r in records)
    return {status: counts.get(status, 0) for status in STATUSES}


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


def _cell(value: float | None) -> str:
    return "" if value is None else f"{value:.2g}"


def markdown(records: list[Record], environment: dict[str, Any], comparison: str | None = None) -> str:
    """A Markdown page for ``$GITHUB_STEP_SUMMARY``: counts, the matrix, then the details that matter."""
    counts = summary(records)
    env = environment
    lines = [
        "## pytest-jitcpu compatibility report",
        "",
        f"torch {env.get('torch')}, transformers {env.get('transformers')}, ipex {env.get('ipex') or 'none'}, "
        f"CPU {env.get('cpu')} ({env.get('isa')}), {env.get('threads')} threads",
        "",
        " | ".join(f"**{status}** {n}" for status, n in counts.items()),
        "",
    ]
    columns = _columns(records)
    lines.append("| test | model | " + " | ".join(f"{m} {d}" for m, d in columns) + " |")
    lines.append("|---|---|" + "---|" * len(columns))
    for (nodeid, model), by_check in _rows(records).items():
        cells = []
        for col in columns:
            r = by_check.get(col)
            cells.append("" if r is None else _md_status(r))
        lines.append(f"| `{nodeid}` | {model} | " + " | ".join(cells) + " |")
    details = [r for r in records if r.status != "pass"]
    if details:
        lines += [
            "",
            "### Not passing",
            "",
            "| test | model | mode | dtype | status | reason |",
            "|---|---|---|---|---|---|",
        ]
        for r in details:
            reason = (r.reason or "") + (f"; counterexample: {r.counterexample}" if r.counterexample else "")
            reason = reason.replace("|", "\\|").replace("\n", " ")
            lines.append(f"| `{r.nodeid}` | {r.model} | {r.mode} | {r.dtype} | {r.status} | {reason} |")
    unserializable = [r for r in records if r.serializable is False]
    if unserializable:
        lines += ["", "### Not serializable (torch.jit.save / load round trip)", ""]
        lines += ["| test | model | mode | dtype | reason |", "|---|---|---|---|---|"]
        for r in unserializable:
            reason = (r.serializable_reason or "").replace("|", "\\|").replace("\n", " ")
            lines.append(f"| `{r.nodeid}` | {r.model} | {r.mode} | {r.dtype} | {reason} |")
    fused = [r for r in records if r.fused_ops]
    if fused:
        lines += ["", "### Fused ops", "", "| test | model | mode | dtype | fused ops |", "|---|---|---|---|---|"]
        for r in fused:
            lines.append(f"| `{r.nodeid}` | {r.model} | {r.mode} | {r.dtype} | {', '.join(r.fused_ops or [])} |")
    if comparison:
        lines += ["", comparison]
    return "\n".join(lines) + "\n"


def _md_status(r: Record) -> str:
    text = r.status if r.status == "pass" else f"**{r.status}**"
    if r.status in ("pass", "mismatch", "diverges") and r.max_abs_diff is not None and r.mode != "eager":
        text += f" ({_cell(r.max_abs_diff)})"
    return text


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
        rows.append([label, *[_ICONS[by_check[c].status] if c in by_check else "" for c in columns]])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]
    counts = summary(records)
    lines.append(", ".join(f"{n} {status}" for status, n in counts.items() if n) + f" ({len(records)} checks)")
    if verbose:
        for r in records:
            if r.status != "pass":
                lines.append(f"{r.nodeid} [{r.model}] {r.mode}/{r.dtype}: {r.status}: {r.reason}")
    return lines


def write(
    path: str | Path,
    records: list[Record],
    environment: dict[str, Any],
    extra: dict[str, Any] | None = None,
    comparison: str | None = None,
) -> Path:
    """Write a report; the format follows the suffix (``.json`` or ``.md``). Creates folders."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.suffix == ".md":
        target.write_text(markdown(records, environment, comparison), encoding="utf-8")
    else:
        target.write_text(dumps(to_json(records, environment, extra)), encoding="utf-8")
    return target
