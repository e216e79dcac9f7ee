"""One record per check (model x mode x dtype), and the result of one ``check`` call."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from .statuses import FAILING_STATUSES

UNTESTED_MARK = "pass?"  # how an untested pass shows in tables: matched on the example only


@dataclass
class Record:
    """What happened to one (model, mode, dtype) check. Field names follow the JSON report schema."""

    nodeid: str
    model: str
    mode: str
    dtype: str
    status: str
    max_abs_diff: float | None = None
    max_rel_diff: float | None = None
    atol: float | None = None
    rtol: float | None = None
    reason: str | None = None
    latency_ms: float | None = None
    # Extensions beyond the contract's minimum.
    worst: str | None = None  # path of the worst element, e.g. "logits[1, 3]"
    frozen: bool | None = None  # torch.jit.freeze applied to the traced module
    warnings: list[str] = field(default_factory=list)  # TracerWarnings seen while tracing (deduplicated)
    notes: list[str] = field(default_factory=list)  # e.g. "model was in training mode; checked in eval mode"
    fused_ops: list[str] | None = None
    serializable: bool | None = None
    serializable_reason: str | None = None
    counterexample: str | None = None
    replay: str | None = None  # a diverges record's counterexample as Python that reproduces it
    compile_time_ms: float | None = None
    examples: int | None = None  # other inputs the trace was checked on (variations and generated)
    # What a searched mode's verdict rests on beyond the example (generalize._summary): verdict tested /
    # untested / off / not searched, tried, matched, rejected_by_eager, kinds, why_none, diverged_on.
    generalization: dict[str, Any] | None = None
    # The check's input domain (domain.Domain.to_json): which dims varied, their ranges, which eager kept fixed.
    domain: dict[str, Any] | None = None
    # The transformers attention implementation the mode ran the model with ("sdpa", "eager",
    # "flex_attention"; None: not a transformers model, or an attention mode that could not be set).
    attn_implementation: str | None = None

    @property
    def failed(self) -> bool:
        return self.status in FAILING_STATUSES

    @property
    def untested(self) -> bool:
        """A pass that rests on the example alone: the search ran, but no other valid input was tried."""
        g = self.generalization
        return self.status == "pass" and isinstance(g, dict) and g.get("verdict") == "untested"

    @property
    def untested_reason(self) -> str:
        g = self.generalization if isinstance(self.generalization, dict) else {}
        return str(g.get("why_none") or "no other valid input could be tried")

    def to_json(self) -> dict[str, Any]:
        """A dict with only JSON-safe values: NaN/inf become null, with the reason kept."""
        data = asdict(self)
        for key in ("max_abs_diff", "max_rel_diff", "atol", "rtol", "latency_ms", "compile_time_ms"):
            value = data[key]
            if isinstance(value, float) and not math.isfinite(value):
                data[key] = None
                extra = f"{key} was {value} (not representable in JSON)"
                data["reason"] = f"{data['reason']}; {extra}" if data["reason"] else extra
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Record:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    def short(self) -> str:
        """One line for a terminal or a JUnit property value."""
        parts = [f"{self.status} (untested: {self.untested_reason})" if self.untested else self.status]
        if self.max_abs_diff is not None:
            parts.append(f"max_abs={self.max_abs_diff:.3g}")
        if self.worst:
            parts.append(f"at {self.worst}")
        if self.reason:
            parts.append(f"({self.reason})")
        return " ".join(parts)


@dataclass
class CheckResult:
    """All records of one ``check(model, inputs)`` call."""

    model: str
    records: list[Record]
    reference: Any = None  # the fp32 eager output, for callers who want it

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def record(self, mode: str, dtype: str = "fp32") -> Record:
        for rec in self.records:
            if rec.mode == mode and rec.dtype == dtype:
                return rec
        have = ", ".join(f"{r.mode}/{r.dtype}" for r in self.records)
        raise KeyError(f"no record for mode {mode!r} dtype {dtype!r}; this check has {have}")

    def __getitem__(self, key: tuple[str, str] | str) -> Record:
        if isinstance(key, tuple):
            return self.record(*key)
        return self.record(key)

    def status(self, mode: str, dtype: str = "fp32") -> str:
        return self.record(mode, dtype).status

    @property
    def statuses(self) -> dict[tuple[str, str], str]:
        return {(r.mode, r.dtype): r.status for r in self.records}

    @property
    def failed(self) -> list[Record]:
        return [r for r in self.records if r.failed]

    @property
    def fallbacks(self) -> list[Record]:
        return [r for r in self.records if r.status == "fallback"]

    @property
    def untested(self) -> list[Record]:
        """Passes that rest on the example alone (see :attr:`Record.untested`)."""
        return [r for r in self.records if r.untested]

    @property
    def ok(self) -> bool:
        return not self.failed

    def table(self) -> str:
        """A readable table of this check's records, used in failure messages."""
        return format_table(self.records)


def format_table(records: list[Record]) -> str:
    header = ("mode", "dtype", "status", "max_abs", "max_rel", "atol", "rtol", "worst / reason")
    rows = [header]
    for r in records:
        untested = r.untested and f"untested: {r.untested_reason}"
        detail = "; ".join(x for x in (r.worst and f"at {r.worst}", r.reason, r.counterexample, untested) if x)
        rows.append(
            (
                r.mode,
                r.dtype,
                UNTESTED_MARK if r.untested else r.status,
                _num(r.max_abs_diff),
                _num(r.max_rel_diff),
                _num(r.atol),
                _num(r.rtol),
                detail,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = []
    for row in rows:
        cells = [row[i].ljust(widths[i]) for i in range(len(widths))]
        lines.append("  ".join(cells) + "  " + row[-1])
    attention = attention_line(records)
    if attention:
        lines.append(attention)
    return "\n".join(line.rstrip() for line in lines)


def attention_line(records: list[Record]) -> str | None:
    """Which attention implementation each mode ran, e.g. ``attention: sdpa (eager, trace-dict); eager
    (attn-eager)``; None for a model that is not a transformers model."""
    modes: dict[str, list[str]] = {}
    for r in records:
        if r.attn_implementation and r.mode not in modes.setdefault(r.attn_implementation, []):
            modes[r.attn_implementation].append(r.mode)
    return "attention: " + "; ".join(f"{a} ({', '.join(m)})" for a, m in modes.items()) if modes else None


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"
