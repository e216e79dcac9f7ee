"""What a run did: rows, skipped and truncated rows, timings, the mode used. Printed as the final line."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .progress import percentile

KEEP_LISTED = 1000  # skipped/truncated rows remembered by line number; the counts are always exact


@dataclass
class Summary:
    task: str = ""
    mode: str = ""
    dtype: str = ""
    decision: str = ""  # why this mode
    attention: str | None = None  # the transformers attention implementation the mode ran the model with
    fallback: str | None = None  # set when the mode failed during the run and eager took over
    rows: int = 0
    ok: int = 0
    skipped: int = 0
    skipped_rows: list[tuple[int, str]] = field(default_factory=list)  # (line, reason), the first KEEP_LISTED
    truncated: int = 0
    truncated_lines: list[int] = field(default_factory=list)
    max_seq_length: int = 0
    setup_s: float = 0.0  # model load + mode choice
    choice_s: float = 0.0  # what choosing the mode cost beyond the batches it ran for the output
    wall_s: float = 0.0
    batches: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    # under an accuracy budget: the chosen mode's per-row gate on held-back rows (gate.Gate.to_json), and
    # with --verify-all what checking every row found (gate.Verifier.to_json)
    gate: dict[str, Any] | None = None
    verified: dict[str, Any] | None = None

    def skip(self, line: int, reason: str) -> None:
        self.skipped += 1
        if len(self.skipped_rows) < KEEP_LISTED:
            self.skipped_rows.append((line, reason))

    def truncate(self, line: int) -> None:
        self.truncated += 1
        if len(self.truncated_lines) < KEEP_LISTED:
            self.truncated_lines.append(line)

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def inference_rows_per_s(self) -> float:
        """Throughput after setup (model load and mode choice)."""
        busy = self.wall_s - self.setup_s
        return self.rows / busy if busy > 0 else 0.0

    @property
    def p50_ms(self) -> float | None:
        return percentile(self.latencies_ms, 50)

    @property
    def p95_ms(self) -> float | None:
        return percentile(self.latencies_ms, 95)

    def line(self) -> str:
        """rows, wall time, throughput, p50/p95 batch latency, mode: the line every run ends with."""
        counts = f"{self.ok} ok"
        if self.skipped:
            counts += f", {self.skipped} skipped"
        text = f"{self.rows} rows ({counts}) in {self.wall_s:.1f} s: {self.rows_per_s:.1f} rows/s"
        text += f" ({self.inference_rows_per_s:.1f} rows/s after {self.setup_s:.1f} s setup)"
        if self.latencies_ms:
            text += f"; batch latency p50 {self.p50_ms:.1f} ms, p95 {self.p95_ms:.1f} ms ({self.batches} batches)"
        mode = f"{self.mode}/{self.dtype}" if self.mode else "none"
        text += f"; mode {mode}"
        if self.attention:
            text += f" ({self.attention} attention)"
        if self.fallback:
            text += " (fell back to eager during the run)"
        if self.gate:
            text += "; " + gate_text(self.gate)
        if self.verified:
            v = self.verified
            text += f"; --verify-all: {v['rows']} rows checked, {v['recomputed']} recomputed in fp32"
        return text

    def notes(self, limit: int = 20) -> list[str]:
        """Truncated and skipped rows, listed by line (the first ``limit`` of each)."""
        out = []
        if self.truncated:
            lines = ", ".join(str(n) for n in self.truncated_lines[:limit])
            more = f" and {self.truncated - limit} more" if self.truncated > limit else ""
            out.append(
                f"note: {self.truncated} row(s) longer than {self.max_seq_length} tokens were truncated "
                f"(line {lines}{more})"
            )
        if self.skipped:
            out.append(f"skipped {self.skipped} row(s):")
            out += [f"  line {line}: {reason}" for line, reason in self.skipped_rows[:limit]]
            if self.skipped > limit:
                out.append(f"  ... and {self.skipped - limit} more")
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "mode": self.mode,
            "dtype": self.dtype,
            "decision": self.decision,
            "attn_implementation": self.attention,
            "fallback": self.fallback,
            "rows": self.rows,
            "ok": self.ok,
            "skipped": self.skipped,
            "skipped_rows": [{"line": line, "reason": reason} for line, reason in self.skipped_rows],
            "truncated": self.truncated,
            "truncated_lines": self.truncated_lines,
            "setup_s": self.setup_s,
            "choice_s": self.choice_s,
            "wall_s": self.wall_s,
            "rows_per_s": self.rows_per_s,
            "batches": self.batches,
            "p50_ms": self.p50_ms,
            "p95_ms": self.p95_ms,
            "gate": self.gate,
            "verified": self.verified,
        }

    def __str__(self) -> str:
        return self.line()


def gate_text(gate: dict[str, Any]) -> str:
    """The gate in the summary line: metric, worst row, p1 and rows covered."""
    if gate["metric"] == "cosine":
        return (
            f"gate --min-cosine {gate['budget']:g}: worst row {gate['worst']:.4f}, p1 {gate['p1']:.4f} over "
            f"{gate['rows']} sampled rows"
        )
    return (
        f"gate --min-agreement {gate['budget']:g}: agreement {gate['agreement']:.4f} over {gate['rows']} sampled "
        f"rows, worst row {gate['worst']:.4f}"
    )
