"""compare(): nested outputs, structural differences, tolerances, non-finite values, the worst element."""

from __future__ import annotations

import json
import math

import pytest
import torch
from transformers.modeling_outputs import BaseModelOutputWithPooling, SequenceClassifierOutput

from pytest_jitcpu.compare import BF16_ATOL_SCALE, BF16_RTOL, FP32_ATOL, FP32_RTOL, Tolerance, compare, leaves
from pytest_jitcpu.record import Record

FP32 = Tolerance("fp32")
BF16 = Tolerance("bf16")


def logits(value: float = 0.0) -> torch.Tensor:
    return torch.full((2, 5), value)


def bumped(tensor: torch.Tensor, index: tuple[int, ...], by: float = 1.0) -> torch.Tensor:
    out = tensor.clone()
    out[index] += by
    return out


def test_identical_nested_outputs_pass_with_zero_diff() -> None:
    ref = {"a": [logits(1.0), (logits(2.0), None)], "b": 3, "c": "text"}
    result = compare(ref, {"a": [logits(1.0), (logits(2.0), None)], "b": 3, "c": "text"}, FP32)
    assert result.ok and result.reason is None
    assert (result.max_abs_diff, result.max_rel_diff) == (0.0, 0.0)


def test_worst_element_path_in_a_mapping() -> None:
    ref = {"logits": logits(), "hidden": torch.ones(2, 3, 4)}
    result = compare(ref, {"logits": bumped(logits(), (1, 3)), "hidden": torch.ones(2, 3, 4)}, FP32)
    assert not result.ok
    assert result.worst == "logits[1, 3]"
    assert result.max_abs_diff == pytest.approx(1.0)
    assert result.reason == f"logits: max abs diff 1 exceeds atol {FP32_ATOL:.3g} + rtol {FP32_RTOL:.3g} x |ref|"


def test_worst_is_the_element_furthest_past_its_tolerance_across_leaves() -> None:
    ref = {"small": torch.zeros(3), "big": torch.full((3,), 1000.0)}
    out = {"small": bumped(torch.zeros(3), (2,), 1e-3), "big": bumped(torch.full((3,), 1000.0), (0,), 5e-3)}
    result = compare(ref, out, FP32)
    # The big diff (5e-3) is within the scaled atol of a 1000-sized output (1e-2); the small one is not.
    assert result.worst == "small[2]"
    assert result.max_abs_diff == pytest.approx(5e-3, rel=1e-3)
    assert result.reason.startswith("small: ")


def test_paths_through_tuples_lists_and_nested_mappings() -> None:
    ref = {"a": {"b": [logits(), (logits(), logits())]}}
    out = {"a": {"b": [logits(), (logits(), bumped(logits(), (0, 4)))]}}
    assert compare(ref, out, FP32).worst == "a.b[1][1][0, 4]"
    assert compare((logits(), logits()), [logits(), bumped(logits(), (1, 2))], FP32).worst == "output[1][1, 2]"
    assert compare(logits(), bumped(logits(), (0, 1)), FP32).worst == "output[0, 1]"
    assert compare(torch.tensor(1.0), torch.tensor(2.0), FP32).worst == "output"


def test_model_output_matches_dict_and_tuple_in_field_order() -> None:
    hidden, pooled = torch.randn(2, 3, 4), torch.randn(2, 4)
    ref = BaseModelOutputWithPooling(last_hidden_state=hidden, pooler_output=pooled)
    # A traced HF model returns a dict (strict=False) or the to_tuple() order; None fields are left out.
    assert compare(ref, {"last_hidden_state": hidden, "pooler_output": pooled}, FP32).ok
    assert compare(ref, (hidden, pooled), FP32).ok
    swapped = compare(ref, (pooled, hidden), FP32)
    assert not swapped.ok
    assert swapped.reason == "structure differs: last_hidden_state: shape (2, 4) differs from reference (2, 3, 4)"
    wrong_count = compare(ref, (hidden,), FP32)
    assert wrong_count.reason == (
        "structure differs: output: expected 2 outputs (last_hidden_state, pooler_output), got 1"
    )
    bad = compare(SequenceClassifierOutput(logits=logits()), {"logits": bumped(logits(), (1, 1))}, FP32)
    assert bad.worst == "logits[1, 1]"


@pytest.mark.parametrize(
    ("ref", "out", "reason"),
    [
        ({"logits": logits()}, {"scores": logits()}, "output: missing key 'logits' (output has scores)"),
        ({"logits": logits()}, {}, "output: missing key 'logits' (output has none)"),
        ({"logits": logits()}, {"logits": logits(), "extra": logits()}, "output: unexpected key 'extra'"),
        ({"logits": logits()}, logits(), "output: expected a mapping, got Tensor"),
        ((logits(), logits()), (logits(),), "output: expected 2 items, got 1"),
        ((logits(),), logits(), "output: expected a tuple of 1, got Tensor"),
        (logits(), logits()[:1], "output: shape (1, 5) differs from reference (2, 5)"),
        (logits(), logits().double(), "output: dtype torch.float64 differs from reference torch.float32"),
        (
            logits(),
            torch.zeros(2, 5, dtype=torch.long),
            "output: dtype torch.int64 differs from reference torch.float32",
        ),
        (logits(), None, "output: expected a tensor, got NoneType"),
        ({"a": None, "b": (None, logits())}, {"b": (logits(), logits())}, "b[0]: expected None, got Tensor"),
        ("label", "other", "output: expected 'label', got 'other'"),
        (True, False, "output: expected True, got False"),
        (3, "3", "output: expected a number, got str"),
    ],
)
def test_structural_differences_have_a_clear_reason(ref: object, out: object, reason: str) -> None:
    result = compare(ref, out, FP32)
    assert not result.ok
    assert result.reason == f"structure differs: {reason}"
    assert result.max_abs_diff is None and result.worst is None


def test_none_fields_are_ignored_in_mappings() -> None:
    assert compare({"a": logits(), "attentions": None}, {"a": logits()}, FP32).ok


def test_python_scalars_compare_as_numbers() -> None:
    assert compare(3, 3.0, FP32).ok
    assert compare(2.5, torch.tensor(2.5), FP32).ok
    result = compare({"n": 2}, {"n": 3}, FP32)
    assert not result.ok and result.worst == "n" and result.max_abs_diff == 1.0


def test_integer_tensors_must_be_equal() -> None:
    result = compare(torch.tensor([1, 2, 3]), torch.tensor([1, 2, 4]), FP32)
    assert not result.ok and (result.atol, result.rtol) == (0.0, 0.0) and result.worst == "output[2]"


def test_bf16_output_against_fp32_reference() -> None:
    ref = torch.linspace(-3, 3, 50)
    out = ref.bfloat16()
    assert not compare(ref, out, BF16).ok, "a dtype change is structural unless allowed"
    result = compare(ref, out, BF16, allow_float_dtype_change=True)
    assert result.ok
    assert 0 < result.max_abs_diff < 0.02
    assert result.rtol == BF16_RTOL


def test_default_tolerances_scale_with_the_output() -> None:
    assert Tolerance("fp32").for_reference(torch.full((3,), 0.5)) == (FP32_ATOL, FP32_RTOL)
    assert Tolerance("fp32").for_reference(torch.full((3,), 200.0)) == (pytest.approx(FP32_ATOL * 200), FP32_RTOL)
    assert Tolerance("bf16").for_reference(torch.full((3,), 4.0)) == (pytest.approx(4 * BF16_ATOL_SCALE), BF16_RTOL)
    assert Tolerance("bf16").for_reference(torch.zeros(3))[0] > 0, "an all-zero output still gets a tolerance"
    atol = Tolerance("bf16").for_reference(torch.tensor([1.0, math.inf, -2.0]))[0]
    assert atol == pytest.approx(2 * BF16_ATOL_SCALE), "infinities do not scale the tolerance"
    assert Tolerance("bf16", atol=1e-3, rtol=0.0).for_reference(torch.full((3,), 50.0)) == (1e-3, 0.0)


def test_given_tolerances_decide_the_verdict() -> None:
    ref, out = torch.ones(4), torch.ones(4) + 1e-3
    assert not compare(ref, out, Tolerance("fp32")).ok
    assert compare(ref, out, Tolerance("fp32", atol=1e-3 + 1e-7, rtol=0.0)).ok
    assert compare(ref, out, Tolerance("fp32", atol=0.0, rtol=2e-3)).ok
    assert not compare(ref, out, Tolerance("fp32", atol=0.0, rtol=5e-4)).ok


def test_nan_in_the_same_place_is_equal() -> None:
    ref = torch.tensor([1.0, math.nan, math.inf, -math.inf])
    result = compare(ref, ref.clone(), FP32)
    assert result.ok and result.max_abs_diff == 0.0


@pytest.mark.parametrize(
    ("ref", "out", "worst"),
    [
        ([1.0, 2.0, 3.0], [1.0, math.nan, 3.0], "output[1]"),
        ([1.0, math.nan, 3.0], [1.0, 2.0, 3.0], "output[1]"),
        ([1.0, math.inf, 3.0], [1.0, 5.0, 3.0], "output[1]"),
        ([1.0, 2.0, 3.0], [1.0, 2.0, -math.inf], "output[2]"),
    ],
)
def test_nonfinite_differences_are_infinite_and_become_null_in_json(ref: list, out: list, worst: str) -> None:
    result = compare(torch.tensor(ref), torch.tensor(out), FP32)
    assert not result.ok
    assert result.max_abs_diff == math.inf
    assert result.worst == worst
    rec = Record("t.py::t", "M", "trace-dict", "fp32", "mismatch", result.max_abs_diff, result.max_rel_diff)
    rec.reason = result.reason
    data = json.loads(json.dumps(rec.to_json(), allow_nan=False))
    assert data["max_abs_diff"] is None
    assert "max_abs_diff was inf (not representable in JSON)" in data["reason"]


def test_empty_tensors_compare_equal() -> None:
    result = compare(torch.zeros(0, 3), torch.zeros(0, 3), FP32)
    assert result.ok and result.max_abs_diff == 0.0


def test_complex_tensors() -> None:
    ref = torch.tensor([1 + 1j, 2 - 1j], dtype=torch.complex64)
    assert compare(ref, ref.clone(), FP32).ok
    assert compare(ref, ref + 1j, FP32).worst == "output[0, 1]"


def test_leaves_in_walk_order() -> None:
    a, b, c = torch.zeros(1), torch.ones(1), torch.full((1,), 2.0)
    assert [float(t) for t in leaves({"x": a, "y": [b, (None, c)], "z": "s"})] == [0.0, 1.0, 2.0]
