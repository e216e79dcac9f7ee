"""The one walker over nested values: which containers it opens, and that rebuilding keeps their types."""

from __future__ import annotations

from collections import OrderedDict, namedtuple
from collections.abc import Iterator, Mapping

import numpy as np
import torch
from transformers import BatchEncoding
from transformers.modeling_outputs import BaseModelOutputWithPast

from pytest_jitcpu import nested
from pytest_jitcpu.inference.writers import _jsonable
from pytest_jitcpu.inputs import Inputs
from pytest_jitcpu.search.strategies import digest

Pair = namedtuple("Pair", "first second")


class ReadOnly(Mapping):
    """A Mapping pytree does not know: walked as a dict."""

    def __init__(self, **items: object) -> None:
        self._items = items

    def __getitem__(self, key: str) -> object:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


def test_tensors_in_walk_order_through_every_container_kind() -> None:
    a, b, c, d, e = (torch.full((1,), float(i)) for i in range(5))
    value = {
        "out": BaseModelOutputWithPast(last_hidden_state=a, hidden_states=(b,)),
        "pair": Pair(c, "label"),
        "enc": BatchEncoding({"input_ids": d}),
        "ro": ReadOnly(x=[e, 3, None]),
    }
    assert [float(t) for t in nested.tensors(value)] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert nested.has_tensor(value) and not nested.has_tensor({"a": [1, "x", None]})


def test_map_leaves_rebuilds_known_types_and_plain_copies_of_unknown_ones() -> None:
    t = torch.ones(2)
    value = {"out": BaseModelOutputWithPast(last_hidden_state=t), "pair": Pair(t, 1), "ro": ReadOnly(x=(t,))}
    doubled = nested.map_leaves(lambda x: x * 2 if isinstance(x, torch.Tensor) else x, value)
    assert isinstance(doubled["out"], BaseModelOutputWithPast)
    assert torch.equal(doubled["out"].last_hidden_state, t * 2)
    assert isinstance(doubled["pair"], Pair) and doubled["pair"].second == 1
    assert doubled["ro"] == {"x": (doubled["ro"]["x"][0],)} and torch.equal(doubled["ro"]["x"][0], t * 2)
    assert torch.equal(t, torch.ones(2))  # the original is untouched


def test_children_names_each_level() -> None:
    assert nested.children(torch.ones(1)) is None
    assert nested.children("text") is None
    assert [k for k, _ in nested.children(OrderedDict(b=1, a=2))] == ["b", "a"]
    assert [k for k, _ in nested.children([5, 6])] == [0, 1]
    assert [k for k, _ in nested.children(Pair(1, 2))] == ["first", "second"]


def test_clone_describe_digest_and_jsonable_use_it() -> None:
    t = torch.zeros(2, 3, dtype=torch.int64)
    batch = Inputs(kwargs={"input_ids": t, "extra": Pair(torch.ones(1), 4), "enc": BatchEncoding({"m": t})})
    copy = batch.clone()
    copy.kwargs["extra"].first.add_(1)
    copy.kwargs["enc"]["m"].add_(1)
    assert float(batch.kwargs["extra"].first) == 1.0 and int(t.sum()) == 0
    assert isinstance(copy.kwargs["extra"], Pair)
    assert batch.describe() == "input_ids=int64[2, 3], extra=(float32[1], int), enc=BatchEncoding"
    same = Inputs(kwargs={"input_ids": t.clone(), "extra": Pair(torch.ones(1), 4), "enc": {"m": t.clone()}})
    assert digest(batch) == digest(same)
    other = Inputs(kwargs={"input_ids": t.clone(), "extra": Pair(torch.ones(1), 5), "enc": {"m": t.clone()}})
    assert digest(batch) != digest(other)
    renamed = Inputs(kwargs={"input_ids": t.clone(), "extra": Pair(torch.ones(1), 4), "enc": {"n": t.clone()}})
    assert digest(batch) != digest(renamed)
    assert _jsonable({"v": [np.float32(0.5), np.arange(2)]}) == {"v": [0.5, [0, 1]]}
