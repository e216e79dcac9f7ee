"""Inputs: dict <-> positional tuple in forward()'s parameter order, gaps, keyword-only parameters."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
from torch import nn

from pytest_jitcpu.inputs import (
    Inputs,
    NotTraceable,
    as_keywords,
    as_positional,
    normalize,
    positional_order,
)
from pytest_jitcpu.settings import UsageError

A, B, C = torch.zeros(2), torch.ones(2), torch.full((2,), 2.0)
DEFAULT = torch.full((2,), 7.0)


class Model(nn.Module):
    def forward(self, input_ids, attention_mask=None, token_type_ids=None, *, labels=None, **extra):
        return input_ids


class TensorDefault(nn.Module):
    def forward(self, a, b=DEFAULT, c=None):
        return a


class NoDefault(nn.Module):
    def forward(self, a, b, c=None):
        return a


class PositionalOnly(nn.Module):
    def forward(self, a, b, /):
        return a


class VarArgs(nn.Module):
    def forward(self, *tensors):
        return tensors[0]


def test_normalize_accepts_dict_tuple_and_tensor() -> None:
    assert normalize({"a": A}).kwargs == {"a": A}
    assert normalize((A, B)).args == (A, B)
    assert normalize(A).args == (A,)
    assert normalize({"a": A, "flag": True}).kwargs == {"a": A, "flag": True}  # non-tensor extras are the model's
    assert normalize(({"ids": A},)).args == ({"ids": A},)  # a nested tensor counts
    batch = Inputs(kwargs={"a": A})
    assert normalize(batch) is batch


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (
            [A, B],
            "inputs: got a list; pass a dict of keyword arguments ({'input_ids': ids, ...}) or a tuple of "
            "positional ones ((x,)) (tuple(inputs) if they are forward()'s positional arguments)",
        ),
        ({A.shape}, "inputs: got a set; pass a dict"),
        ("hello", "inputs: got a str; pass a dict"),
        (b"ids", "inputs: got a bytes; pass a dict"),
        (3, "inputs: got an int; pass a dict"),
        (None, "inputs: got None; pass a dict"),
        ((x for x in [A]), "inputs: got a generator; pass a dict"),
        ({0: A}, "inputs: dict keys must be forward()'s parameter names (str), got 0"),
        ({}, "inputs: the dict is empty"),
        ((), "inputs: the tuple is empty"),
        ({"x": [[1.0, 2.0]]}, r"inputs: no tensor in the inputs (x=list); convert with torch.tensor(values)"),
        ((3, 4.5), "inputs: no tensor in the inputs (int, float); convert with torch.tensor(values)"),
        ({"x": np.ones(3)}, "inputs: no tensor in the inputs (x=ndarray); convert with torch.from_numpy(array)"),
        ({"x": None}, "inputs: no tensor in the inputs (x=None); a model is checked on tensors"),
    ],
    ids=lambda v: type(v).__name__ if not isinstance(v, str) or len(v) < 12 else None,
)
def test_normalize_refuses_what_the_engine_does_not_take(inputs, message) -> None:
    with pytest.raises(UsageError) as exc:
        normalize(inputs)
    assert str(exc.value).startswith(message), str(exc.value)
    assert "\n" not in str(exc.value)


def test_positional_order_follows_forward_not_the_dict() -> None:
    order = positional_order(Model(), ["attention_mask", "input_ids"])
    assert order == [("input_ids", None), ("attention_mask", None)]
    batch = Inputs(kwargs={"attention_mask": B, "input_ids": A})
    assert as_positional(Model(), batch) == (A, B)


def test_trailing_parameters_are_left_out() -> None:
    assert positional_order(Model(), ["input_ids"]) == [("input_ids", None)]
    assert positional_order(Model(), []) == []


def test_gap_with_tensor_default_is_filled_with_that_default() -> None:
    batch = Inputs(kwargs={"a": A, "c": C})
    args = as_positional(TensorDefault(), batch)
    assert len(args) == 3
    assert args[0] is A and args[1] is DEFAULT and args[2] is C


def test_gap_with_none_default_is_not_traceable_and_names_the_parameter() -> None:
    with pytest.raises(NotTraceable) as info:
        positional_order(Model(), ["input_ids", "token_type_ids"])
    assert str(info.value) == (
        "parameter 'attention_mask' (position 1) sits between given inputs and its default None cannot be "
        "passed to torch.jit.trace; add it to the inputs or use trace-dict"
    )


def test_gap_without_default_is_not_traceable() -> None:
    with pytest.raises(
        NotTraceable, match=r"parameter 'b' \(position 1\) sits between given inputs and its no default"
    ):
        positional_order(NoDefault(), ["a", "c"])


def test_keyword_only_and_unknown_inputs_are_not_traceable() -> None:
    with pytest.raises(NotTraceable, match="input 'labels' is a keyword-only parameter"):
        positional_order(Model(), ["input_ids", "labels"])
    with pytest.raises(NotTraceable, match="input 'pixel_values' is not a positional parameter of forward"):
        positional_order(Model(), ["input_ids", "pixel_values"])


def test_tuple_inputs_are_passed_through() -> None:
    batch = Inputs(args=(A, B))
    assert as_positional(Model(), batch) is batch.args


def test_as_keywords_binds_positional_inputs_to_parameter_names() -> None:
    assert as_keywords(Model(), Inputs(args=(A, B))) == {"input_ids": A, "attention_mask": B}
    kwargs = {"attention_mask": B, "input_ids": A}
    assert as_keywords(Model(), Inputs(kwargs=kwargs)) is kwargs


def test_as_keywords_refuses_what_cannot_be_named() -> None:
    with pytest.raises(NotTraceable, match="3 positional inputs but forward\\(\\) names only 2"):
        as_keywords(PositionalOnly(), Inputs(args=(A, B, C)))
    with pytest.raises(NotTraceable, match="parameter 'a' is positional-only"):
        as_keywords(PositionalOnly(), Inputs(args=(A, B)))
    with pytest.raises(NotTraceable, match="0 positional parameters"):
        as_keywords(VarArgs(), Inputs(args=(A,)))


def test_unreadable_signature_is_not_traceable(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_signature(obj: object) -> inspect.Signature:
        raise ValueError("no signature found")

    monkeypatch.setattr(inspect, "signature", no_signature)
    with pytest.raises(NotTraceable, match="cannot read forward\\(\\)'s signature: no signature found"):
        positional_order(Model(), ["input_ids"])


def test_clone_copies_tensors_in_nested_inputs() -> None:
    batch = Inputs(kwargs={"a": A, "nested": {"b": [B, (C, 3)]}})
    copy = batch.clone()
    assert copy.kwargs["a"] is not A and torch.equal(copy.kwargs["a"], A)
    assert copy.kwargs["nested"]["b"][1][0] is not C and copy.kwargs["nested"]["b"][1][1] == 3
    assert isinstance(copy.kwargs["nested"]["b"][1], tuple)
    positional = Inputs(args=(A,)).clone()
    assert positional.args[0] is not A


def test_describe_and_call() -> None:
    batch = Inputs(kwargs={"input_ids": torch.zeros(2, 7, dtype=torch.long), "flag": True})
    assert batch.describe() == "input_ids=int64[2, 7], flag=bool"
    assert Inputs(args=(torch.zeros(3), (A, B))).describe() == "float32[3], (float32[2], float32[2])"
    assert batch.is_dict and not Inputs(args=(A,)).is_dict
    assert Inputs(args=(A, B)).values() == [A, B]
    assert torch.equal(Inputs(kwargs={"input_ids": A}).call(Model()), A)
    assert torch.equal(Inputs(args=(B,)).call(Model()), B)
