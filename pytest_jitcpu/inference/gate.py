"""The accuracy budget a user states for ``jitcpu run`` and the per-row gate that holds candidates to it.

``--min-cosine X`` (embeddings): every row's cosine to eager fp32 must be at least X. ``--min-agreement X``
(classification, token classification, question answering): the share of rows whose predicted labels (the
argmax of every output over its last dim: the class, each token's label, the answer's start and end) equal
eager fp32's must be at least X. Under a budget ``auto`` also tries the int8 modes, and every candidate is
measured row by row on held-back batches of the input (never the rows an int8 build calibrated on).

A gate measured on a sample bounds the rest of the input only statistically: with none of n sampled rows
under the budget, up to about 3/n of rows like them may still be (the "rule of three", 95% confidence,
for rows drawn like the sample). ``--verify-all`` checks every row against eager fp32 and recomputes in
fp32 the rows that miss the budget, so every output row meets it, at the cost of an fp32 run as well.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .. import nested
from ..inputs import Inputs
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


def _leaves(output: Any) -> list[torch.Tensor]:
    return nested.tensors(output)


def _cosine(reference: Any, output: Any) -> np.ndarray:
    """Per row (dim 0): cosine of the row's values (every output, flattened) to eager fp32's."""
    ref = torch.cat([t.detach().float().reshape(t.shape[0], -1) for t in _leaves(reference)], dim=1).double()
    out = torch.cat([t.detach().float().reshape(t.shape[0], -1) for t in _leaves(output)], dim=1).double()
    if ref.shape != out.shape:
        raise ValueError(f"outputs of shape {tuple(out.shape)} for eager's {tuple(ref.shape)}")
    dot = (ref * out).sum(dim=1)
    norms = ref.norm(dim=1) * out.norm(dim=1)
    both_zero = (ref.norm(dim=1) == 0) & (out.norm(dim=1) == 0)
    cos = torch.where(norms > 0, dot / norms.clamp(min=1e-300), torch.zeros_like(dot))
    cos = torch.where(both_zero, torch.ones_like(cos), cos)
    cos = torch.nan_to_num(cos, nan=-1.0)  # a NaN output is as far from eager as a row can be
    # identical rows come out a rounding step under 1 (0.9999999999999998): that is 1
    cos = torch.where((1 - cos).abs() < 1e-12, torch.ones_like(cos), cos)
    return cos.clamp(-1.0, 1.0).numpy()


def _agreement(reference: Any, output: Any, batch: Inputs) -> np.ndarray:
    """Per row: the share of its predicted labels (argmax over each output's last dim, at real tokens) that
    equal eager fp32's."""
    mask = batch.kwargs.get("attention_mask") if batch.kwargs is not None else None
    same = None
    total = None
    for ref, out in zip(_leaves(reference), _leaves(output), strict=True):
        if ref.shape != out.shape:
            raise ValueError(f"outputs of shape {tuple(out.shape)} for eager's {tuple(ref.shape)}")
        equal = (ref.argmax(dim=-1) == out.argmax(dim=-1)).reshape(ref.shape[0], -1).double()
        weight = torch.ones_like(equal)
        if mask is not None and equal.shape == mask.shape:  # per-token labels: padding does not count
            weight = mask.double()
        same = (equal * weight).sum(dim=1) if same is None else same + (equal * weight).sum(dim=1)
        total = weight.sum(dim=1) if total is None else total + weight.sum(dim=1)
    if same is None or total is None:
        raise ValueError("no tensor output to take labels from")
    return (same / total.clamp(min=1)).numpy()


def per_row(budget: Budget, reference: Any, output: Any, batch: Inputs) -> np.ndarray:
    """One score per row of ``batch``: cosine, or label agreement, to eager fp32's output."""
    if budget.metric == "cosine":
        return _cosine(reference, output)
    return _agreement(reference, output, batch)


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


def replace_rows(output: Any, reference: Any, rows: np.ndarray) -> Any:
    """``output`` with the given rows (dim 0 of every tensor) taken from ``reference``."""
    if rows.size == 0:
        return output
    out_leaves, spec = nested.flatten(output)
    ref_leaves, _ = nested.flatten(reference)
    index = torch.as_tensor(rows, dtype=torch.long)
    fixed = []
    for leaf, ref in zip(out_leaves, ref_leaves, strict=True):
        if isinstance(leaf, torch.Tensor) and isinstance(ref, torch.Tensor) and leaf.shape == ref.shape:
            leaf = leaf.clone()  # noqa: PLW2901 - the copy replaces the leaf, the output stays as it was
            leaf[index] = ref[index].to(leaf.dtype)
        fixed.append(leaf)
    return nested.unflatten(fixed, spec)


class Verifier:
    """``--verify-all``: every batch the chosen mode runs is run in eager fp32 too and scored row by row;
    the rows that miss the budget are replaced by their fp32 outputs, so every output row meets it."""

    def __init__(self, budget: Budget, reference: Callable[[Inputs], Any]) -> None:
        self.budget = budget
        self.reference = reference  # eager fp32's run
        self.rows = 0  # rows checked against fp32 (the ones selection ran in fp32 included)
        self.recomputed = 0  # rows whose fp32 output replaced the chosen mode's
        self.worst = 1.0  # the worst score the chosen mode had on a row, before any replacement

    def __call__(self, batch: Inputs, output: Any) -> Any:
        reference = self.reference(batch)
        scores = per_row(self.budget, reference, output, batch)
        bad = misses(self.budget, scores)
        self.rows += int(scores.size)
        self.recomputed += int(bad.size)
        if scores.size:
            self.worst = min(self.worst, float(scores.min()))
        return replace_rows(output, reference, bad)

    def fp32_rows(self, count: int) -> None:
        """Rows that ran in eager fp32 already (selection's kept batches): checked by construction."""
        self.rows += count

    def to_json(self) -> dict[str, Any]:
        return {
            "metric": self.budget.metric,
            "budget": self.budget.threshold,
            "rows": self.rows,
            "recomputed": self.recomputed,
            "worst_before": self.worst,
        }

    def text(self) -> str:
        what = "cosine" if self.budget.metric == "cosine" else "label agreement"
        return (
            f"--verify-all: {self.rows} rows checked against eager fp32, {self.recomputed} recomputed in fp32 "
            f"(worst row {what} before that {self.worst:.4f}); every output row meets {self.budget.describe()}"
        )
