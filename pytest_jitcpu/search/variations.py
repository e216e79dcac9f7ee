"""Inputs made from the example itself, so they keep its structure (tried before free generation).

Freely generated inputs are invalid for models whose inputs are coupled: the image tokens in
``input_ids`` must match ``pixel_values`` / ``image_grid_thw``, TAPAS' token types encode table
coordinates. Eager rejects every such input, and a search that tested nothing must not look like one
that passed. The variations here change the batch, the padding and the values without inventing
structure (one row of :data:`KINDS` per kind):

Rows are taken from every tensor whose dim 0 is the example's batch size, all indexed the same way; a
tensor whose dim 0 is a multiple ``k`` of it (``k`` patches per row, as Qwen2-VL's flattened
``pixel_values``) is indexed in groups of ``k`` (and, in case that is a coincidence, a second variation
leaves such tensors as they are). Nothing here decides validity: eager is the judge
(:func:`accepted`), and a variation it rejects is counted as rejected, never blamed on the trace.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .. import nested
from ..inputs import Inputs

# kind -> what it changes (the kinds are tried in the order :func:`variations` builds them).
KINDS: dict[str, str] = {
    "resized": "the example's shape with one dim of the input domain one larger, one smaller or twice its size "
    "(values generated)",
    "batch-1": "one row of the example (batch 1)",
    "more-rows": "more rows than the example (its rows repeated)",
    "permuted-rows": "the example's rows in another order",
    "padding": "one more padded position per row of the attention mask, or its padding removed",
    "values": "floats resampled from their mean and std, token ids shuffled within each row",
}


@dataclass(frozen=True)
class Variation:
    kind: str  # a key of KINDS
    detail: str  # which rows, which tensors: shown with a counterexample
    inputs: Inputs


Leaf = Callable[[str, torch.Tensor], torch.Tensor]


def _apply(batch: Inputs, fn: Leaf) -> Inputs:
    """``fn(name, tensor)`` on every tensor (a nested one gets its top-level input's name); other leaves
    are kept as they are."""

    def walk(name: str, value: Any) -> Any:
        return nested.map_leaves(lambda x: fn(name, x) if isinstance(x, torch.Tensor) else x, value)

    if batch.kwargs is not None:
        return Inputs(kwargs={k: walk(k, v) for k, v in batch.kwargs.items()})
    return Inputs(args=tuple(walk(f"args[{i}]", v) for i, v in enumerate(batch.args)))


def _named_tensors(batch: Inputs) -> list[tuple[str, torch.Tensor]]:
    items = batch.kwargs.items() if batch.kwargs is not None else ((f"args[{i}]", v) for i, v in enumerate(batch.args))
    return [(name, t) for name, value in items for t in nested.tensors(value)]


def batch_size(batch: Inputs) -> int | None:
    """Dim 0 of the first tensor input of 1+ dims (``input_ids`` in a Hugging Face batch), or None."""
    for _, t in _named_tensors(batch):
        if t.ndim >= 1 and t.shape[0] >= 1:
            return int(t.shape[0])
    return None


def take_rows(batch: Inputs, rows: list[int], size: int, grouped: bool = True) -> Inputs:
    """The example with these rows, from every tensor whose dim 0 is ``size`` (or, ``grouped``, a
    multiple of it: rows of ``k`` entries each); every other tensor as it was."""
    index = torch.tensor(rows, dtype=torch.long)

    def take(_: str, t: torch.Tensor) -> torch.Tensor:
        n = t.shape[0] if t.ndim else 0
        if n == 0 or n % size or (not grouped and n != size):
            return t.clone()
        group = n // size
        blocks = t.reshape(size, group, *t.shape[1:])
        return blocks.index_select(0, index).reshape(len(rows) * group, *t.shape[1:]).clone()

    return _apply(batch, take)


def _is_mask(name: str, t: torch.Tensor) -> bool:
    return (
        "mask" in name.lower()
        and t.ndim >= 2
        and t.numel() > 0
        and not t.is_floating_point()
        and bool(((t == 0) | (t == 1)).all())
    )


def _more_padding(t: torch.Tensor) -> torch.Tensor:
    """One more padded position in each row that keeps at least one 1, on the side already padded
    (the left when the row starts with 0 and ends with 1, else the right)."""
    rows = t.reshape(-1, t.shape[-1]).clone()
    for row in rows:
        kept = row.nonzero().flatten()
        if len(kept) < 2:
            continue
        left = bool(row[0] == 0 and row[-1] != 0)
        row[kept[0] if left else kept[-1]] = 0
    return rows.reshape(t.shape)


def _is_ids(name: str, t: torch.Tensor) -> bool:
    lname = name.lower()
    return (
        not t.is_floating_point()
        and t.dtype != torch.bool
        and t.ndim >= 2
        and t.shape[-1] > 1
        and lname.endswith("ids")
        and "type" not in lname
        and "position" not in lname
    )


def _shuffled(t: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The same ids in each row in another order: counts per row (image tokens, say) stay the same."""
    order = torch.randperm(t.shape[-1], generator=generator)
    if bool((order == torch.arange(t.shape[-1])).all()):
        order = order.flip(0)
    return t[..., order].clone()


def _resampled(t: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """New values with the example's mean and std (kept non-negative when the example was)."""
    f = t.float()
    std = float(f.std()) if f.numel() > 1 else 1.0
    values = torch.randn(t.shape, generator=generator) * (std or 1.0) + float(f.mean())
    if float(f.min()) >= 0:
        values = values.clamp_min(0.0)
    return values.to(t.dtype)


def variations(batch: Inputs, accepts: Callable[[Inputs], bool] | None = None) -> list[Variation]:
    """The structure-keeping variations of an example, in the order they are tried (batch 1 first: a
    baked batch size is the most common trap of coupled inputs).

    ``accepts`` (eager): when the values variation that changes every tensor at once is rejected, each
    tensor is varied alone instead, so values vary wherever eager still accepts them."""
    size = batch_size(batch)
    if size is None:
        return []
    out: list[Variation] = []
    tensors = _named_tensors(batch)
    everything = list(range(size))
    grouped = any(t.ndim and t.shape[0] != size and t.shape[0] % size == 0 for _, t in tensors)

    def rows(kind: str, picked: list[int]) -> None:
        out.append(Variation(kind, f"rows {picked} of the example", take_rows(batch, picked, size)))
        if grouped:  # the same rows, leaving the tensors of another dim 0 as they are
            detail = f"rows {picked} of the example's tensors of dim 0 = {size}"
            out.append(Variation(kind, detail, take_rows(batch, picked, size, grouped=False)))

    if size > 1:
        rows("batch-1", [0])
    rows("more-rows", [*everything, 0])
    if size > 1:
        rows("permuted-rows", everything[::-1])
    masks = [name for name, t in tensors if _is_mask(name, t)]
    if masks:
        names = ", ".join(masks)
        more = _apply(batch, lambda n, t: _more_padding(t) if n in masks else t.clone())
        out.append(Variation("padding", f"one more padded position per row of {names}", more))
        if any(bool((t == 0).any()) for n, t in tensors if n in masks):
            unpadded = _apply(batch, lambda n, t: torch.ones_like(t) if n in masks else t.clone())
            out.append(Variation("padding", f"{names} without padding", unpadded))
    out += _value_variations(batch, tensors, accepts)
    if size > 1:
        rows("more-rows", everything * 2)
    return out


def _new_values(name: str, t: torch.Tensor, generator: torch.Generator) -> torch.Tensor | None:
    """The tensor with new values, or None when its values are kept (masks, type ids, sizes...)."""
    if t.is_floating_point() and t.numel() > 1:
        return _resampled(t, generator)
    if _is_ids(name, t):
        return _shuffled(t, generator)
    return None


def _value_variations(
    batch: Inputs, tensors: list[tuple[str, torch.Tensor]], accepts: Callable[[Inputs], bool] | None
) -> list[Variation]:
    probe = torch.Generator()
    changing = list(dict.fromkeys(n for n, t in tensors if _new_values(n, t, probe) is not None))
    if not changing:
        return []

    def varied(names: list[str]) -> Variation:
        g = torch.Generator().manual_seed(0)

        def change(n: str, t: torch.Tensor) -> torch.Tensor:
            new = _new_values(n, t, g) if n in names else None
            return t.clone() if new is None else new

        return Variation("values", f"new values of {', '.join(names)}", _apply(batch, change))

    everything = varied(changing)
    if len(changing) == 1 or accepts is None or accepts(everything.inputs):
        return [everything]
    return [everything, *(varied([name]) for name in changing)]
