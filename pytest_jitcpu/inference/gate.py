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
from typing import Any

import numpy as np
import torch

from .. import nested
from ..inputs import Inputs
from .budget import METRICS, Budget, Gate, check_task, cosine_rows, misses, parse_budget, statistical_note

__all__ = [
    "METRICS",
    "Budget",
    "Gate",
    "Verifier",
    "check_task",
    "misses",
    "parse_budget",
    "per_row",
    "statistical_note",
]


def _leaves(output: Any) -> list[torch.Tensor]:
    return nested.tensors(output)


def _cosine(reference: Any, output: Any) -> np.ndarray:
    """Per row (dim 0): cosine of the row's values (every output, flattened) to eager fp32's
    (:func:`.budget.cosine_rows`, which the torch-free start scores with too)."""
    ref = torch.cat([t.detach().float().reshape(t.shape[0], -1) for t in _leaves(reference)], dim=1)
    out = torch.cat([t.detach().float().reshape(t.shape[0], -1) for t in _leaves(output)], dim=1)
    if ref.shape != out.shape:
        raise ValueError(f"outputs of shape {tuple(out.shape)} for eager's {tuple(ref.shape)}")
    return cosine_rows(ref.numpy(), out.numpy())


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
