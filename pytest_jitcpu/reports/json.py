"""The JSON report (schema ``jitcpu-report/1``, the contract's): environment, counts, one object a record."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..record import Record
from .model import summary

SCHEMA = "jitcpu-report/1"


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


def render(
    records: list[Record],
    environment: dict[str, Any],
    extra: dict[str, Any] | None = None,
    comparison: str | None = None,
) -> str:
    """The report's text (the baseline's ``comparison`` travels in ``extra["baseline"]`` here)."""
    return dumps(to_json(records, environment, extra))


def load(path: str | Path) -> dict[str, Any]:
    """Read a JSON report written by this plugin (for baselines and merging)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise ValueError(f"{path}: not a jitcpu report (schema {SCHEMA!r} expected)")
    return data
