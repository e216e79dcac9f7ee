"""Length-bucketed batching: read rows in windows, sort a window's features by length, pad each batch only
to its own longest sequence, and let the caller put results back in input order.

Memory depends on the window size, never on the input size.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:  # torch only where tensors are made: the torch-free start batches with this module too
    import torch

    from ..inputs import Inputs
    from .tasks import Feature

T = TypeVar("T")

WINDOW_ROWS = 2048


def windows(items: Iterable[T], size: int = WINDOW_ROWS) -> Iterator[list[T]]:
    """Consecutive lists of at most ``size`` items, read lazily."""
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def length_batches(features: Sequence[Feature], batch_size: int) -> list[list[int]]:
    """Indices of ``features`` grouped into batches of similar length, longest first (the largest
    allocation happens once, early)."""
    order = sorted(range(len(features)), key=lambda i: -len(features[i]))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


TIMING_BATCHES = 3


def verification_batches(count: int) -> list[int]:
    """The batches (of a window's ``count`` length-sorted ones) a candidate is verified on: the longest,
    the shortest and one in the middle."""
    return list(dict.fromkeys([0, count - 1, count // 2]))


def timing_batches(count: int, verify: list[int]) -> list[int]:
    """Up to TIMING_BATCHES batches around the middle that verification did not run (the run's typical
    shapes, none seen yet by any candidate); on a small input the verification batches again."""
    middle = count // 2
    fresh = sorted((j for j in range(count) if j not in verify), key=lambda j: (abs(j - middle), j))
    return fresh[:TIMING_BATCHES] or verify[:TIMING_BATCHES]


def gated_batches(count: int) -> list[int]:
    """The batches an accuracy gate scores row by row: the verification and the timing batches (the
    torch path's selection and the torch-free start measure the same ones)."""
    verify = verification_batches(count)
    return list(dict.fromkeys([*verify, *timing_batches(count, verify)]))


def pad(
    features: Sequence[Feature], pad_id: int, input_names: Sequence[str], left: bool = False
) -> dict[str, torch.Tensor]:
    """The batch tensors, padded to the batch's longest feature (right padding unless ``left``)."""
    import torch

    n, width = len(features), max(len(f) for f in features)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    types = torch.zeros((n, width), dtype=torch.long) if "token_type_ids" in input_names else None
    for i, feature in enumerate(features):
        length = len(feature)
        cols = slice(width - length, width) if left else slice(0, length)
        ids[i, cols] = torch.tensor(feature.input_ids, dtype=torch.long)
        mask[i, cols] = 1
        if types is not None and feature.token_type_ids is not None:
            types[i, cols] = torch.tensor(feature.token_type_ids, dtype=torch.long)
    batch: dict[str, Any] = {"input_ids": ids, "attention_mask": mask}
    if types is not None:
        batch["token_type_ids"] = types
    return batch


def as_inputs(batch: dict[str, torch.Tensor]) -> Inputs:
    from ..inputs import Inputs

    return Inputs(kwargs=dict(batch))
