"""The accuracy budget a user states for ``jitcpu run`` and the per-row :class:`Gate` that holds a
candidate to it, without torch: the torch-free start (:mod:`.fastpath`) gates a cached int8 program with
these too. The scores of torch outputs are computed in :mod:`.gate`; :func:`cosine_rows` scores numpy ones.

A gate measured on a sample bounds the rest of the input only statistically: with none of n sampled rows
under the budget, up to about 3/n of rows like them may still be (the "rule of three", 95% confidence,
for rows drawn like the sample).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..settings import UsageError, parse_fraction

# metric -> (flag, the tasks it measures)
METRICS: dict[str, tuple[str, tuple[str, ...]]] = {
    "cosine": ("--min-cosine", ("feature-extraction",)),
    "agreement": ("--min-agreement", ("text-classification", "token-classification", "question-answering")),
}
LOW_PERCENTILE = 1.0  # the low percentile reported next to the worst row (p1)


@dataclass(frozen=True)
class Budget:
    """The accuracy a user accepts, measured per row against eager fp32."""

    metric: str  # "cosine" or "agreement"
    threshold: float
    verify_all: bool = False

    @property
    def flag(self) -> str:
        return METRICS[self.metric][0]

    def describe(self) -> str:
        return f"{self.flag} {self.threshold:g}"


def parse_budget(min_cosine: float | str | None, min_agreement: float | str | None, verify_all: bool) -> Budget | None:
    """The run's budget from its options (UsageError naming the flag for a bad value), or None."""
    cosine = parse_fraction(min_cosine, "--min-cosine")
    agreement = parse_fraction(min_agreement, "--min-agreement")
    if cosine is not None and agreement is not None:
        raise UsageError("--min-cosine and --min-agreement: give one (cosine for embeddings, agreement for labels)")
    if cosine is not None:
        return Budget("cosine", cosine, bool(verify_all))
    if agreement is not None:
        return Budget("agreement", agreement, bool(verify_all))
    if verify_all:
        raise UsageError("--verify-all needs a budget to verify: --min-cosine X (embeddings) or --min-agreement X")
    return None


def check_task(budget: Budget | None, task: str) -> None:
    """A budget measures one kind of output: UsageError when this run's task has the other kind."""
    if budget is None:
        return
    tasks = METRICS[budget.metric][1]
    if task not in tasks:
        other = next((f for f, ts in METRICS.values() if task in ts), None)
        instead = f": use {other}" if other else ""
        raise UsageError(f"{budget.flag} measures {' and '.join(tasks)}; this run's task is {task}{instead}")


def misses(budget: Budget, scores: np.ndarray) -> np.ndarray:
    """The rows (indices) that miss the budget: cosine under it; for labels, any label that differs."""
    if budget.metric == "cosine":
        return np.flatnonzero(scores < budget.threshold)
    return np.flatnonzero(scores < 1.0)


@dataclass
class Gate:
    """A candidate's per-row scores on held-back batches, and whether they meet the budget."""

    budget: Budget
    scores: np.ndarray

    @property
    def rows(self) -> int:
        return int(self.scores.size)

    @property
    def worst(self) -> float:
        return float(self.scores.min()) if self.rows else float("nan")

    @property
    def low(self) -> float:
        return float(np.percentile(self.scores, LOW_PERCENTILE)) if self.rows else float("nan")

    @property
    def agreement(self) -> float:
        return float(self.scores.mean()) if self.rows else float("nan")

    @property
    def under(self) -> int:
        return int(misses(self.budget, self.scores).size)

    @property
    def ok(self) -> bool:
        if not self.rows:
            return False
        if self.budget.metric == "cosine":
            return self.worst >= self.budget.threshold
        return self.agreement >= self.budget.threshold

    def text(self) -> str:
        """e.g. ``worst row cosine 0.9951, p1 0.9968 over 412 rows, 0 under 0.99``."""
        if self.budget.metric == "cosine":
            return (
                f"worst row cosine {self.worst:.4f}, p1 {self.low:.4f} over {self.rows} rows, "
                f"{self.under} under {self.budget.threshold:g}"
            )
        return (
            f"label agreement {self.agreement:.4f} over {self.rows} rows ({self.under} differ), "
            f"worst row {self.worst:.4f}, p1 {self.low:.4f}"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "metric": self.budget.metric,
            "budget": self.budget.threshold,
            "rows": self.rows,
            "worst": _finite(self.worst),
            "p1": _finite(self.low),
            "agreement": _finite(self.agreement) if self.budget.metric == "agreement" else None,
            "under": self.under,
            "ok": self.ok,
        }


def _finite(x: float) -> float | None:
    return x if np.isfinite(x) else None  # strict JSON: no NaN


def statistical_note(gate: Gate) -> str:
    """What a sample says about the rest of the input, in words."""
    n = gate.rows
    share = min(1.0, 3.0 / n) if n else 1.0
    return (
        f"the gate measured {n} rows of this input: a sample bounds the rest only statistically (with none of "
        f"{n} rows under the budget, up to ~{share:.1%} of rows like them may still be, at 95% confidence); "
        "--verify-all checks every row against fp32"
    )


def cosine_rows(reference: np.ndarray, output: np.ndarray) -> np.ndarray:
    """Per row (dim 0): cosine of the row's values (flattened) to the reference's, in float64; identical
    rows score exactly 1, a row whose values are NaN at most 0 (never near the budget)."""
    ref, out = np.asarray(reference, dtype=np.float64), np.asarray(output, dtype=np.float64)
    ref = ref.reshape(len(ref), int(np.prod(ref.shape[1:])))  # explicit width: a batch of 0 rows too
    out = out.reshape(len(out), int(np.prod(out.shape[1:])))
    if ref.shape != out.shape:
        raise ValueError(f"outputs of shape {out.shape} for the reference's {ref.shape}")
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.where(norms > 0, (ref * out).sum(axis=1) / np.maximum(norms, 1e-300), 0.0)
    both_zero = (np.linalg.norm(ref, axis=1) == 0) & (np.linalg.norm(out, axis=1) == 0)
    cos = np.where(both_zero, 1.0, cos)
    cos = np.nan_to_num(cos, nan=-1.0)  # a NaN output is as far from the reference as a row can be
    # identical rows come out a rounding step under 1 (0.9999999999999998): that is 1
    cos = np.where(np.abs(1 - cos) < 1e-12, 1.0, cos)
    return np.clip(cos, -1.0, 1.0)
