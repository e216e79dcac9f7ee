"""Real Hugging Face architectures, built tiny from their configs, through every default mode and dtype.

The expected verdicts are what a careful user gets by hand: these models trace correctly (fp32 equal or
within float rounding, bf16 autocast within the bf16 tolerance), GPT-2 with its default cache returns a
DynamicCache that torch.jit.trace cannot hold (``fallback``), and GPT-2's ``forward()`` has a parameter
between ``input_ids`` and ``attention_mask``, so no faithful positional tuple exists for trace-tuple.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytest
import tiny_models as tm
import torch

from pytest_jitcpu import engine
from pytest_jitcpu.settings import Settings

SETTINGS = Settings(dtypes=("fp32", "bf16"), examples=0, serialize=False)
ALL_PASS = {(m, d): "pass" for d in ("fp32", "bf16") for m in ("eager", "trace-dict", "trace-tuple")}


def gpt2_with_mask() -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    model, _ = tm.tiny_gpt2(use_cache=False)
    return model, tm.text_batch()


ARCHITECTURES: list[Any] = [
    pytest.param(tm.tiny_bert, id="bert"),
    pytest.param(tm.tiny_roberta, id="roberta"),
    pytest.param(tm.tiny_distilbert, id="distilbert"),
    pytest.param(lambda: tm.tiny_gpt2(use_cache=False), id="gpt2-no-cache"),
    pytest.param(tm.tiny_t5, id="t5"),
    pytest.param(tm.tiny_vit, id="vit"),
    pytest.param(tm.tiny_wav2vec2, id="wav2vec2"),
]


@pytest.mark.parametrize("factory", ARCHITECTURES)
def test_architecture_traces_correctly(factory: Callable[[], tuple[torch.nn.Module, dict[str, Any]]]) -> None:
    model, inputs = factory()
    result = engine.check(model, inputs, settings=SETTINGS)
    assert result.statuses == ALL_PASS, result.table()
    for rec in result:
        if rec.dtype == "fp32":
            assert rec.max_abs_diff is not None and rec.max_abs_diff <= 1e-4, result.table()
        if rec.mode != "eager":
            assert rec.frozen is True
    bf16 = result.record("trace-dict", "bf16")
    assert 0 < bf16.max_abs_diff, "autocast bf16 must differ from the fp32 reference (else it did not run in bf16)"


def test_gpt2_with_cache_falls_back_with_the_dynamic_cache_reason() -> None:
    model, inputs = tm.tiny_gpt2(use_cache=True)
    result = engine.check(model, inputs, settings=SETTINGS)
    for dtype in ("fp32", "bf16"):
        assert result.status("eager", dtype) == "pass"
        for mode in ("trace-dict", "trace-tuple"):
            rec = result.record(mode, dtype)
            assert rec.status == "fallback", result.table()
            assert "DynamicCache" in rec.reason


def test_gpt2_mask_after_a_gap_falls_back_in_trace_tuple_only() -> None:
    model, inputs = gpt2_with_mask()
    result = engine.check(model, inputs, settings=SETTINGS)
    params = list(inspect.signature(model.forward).parameters)
    gap = params[params.index("input_ids") + 1]  # "cache" in transformers 5, "past_key_values" before
    assert gap != "attention_mask"
    for dtype in ("fp32", "bf16"):
        assert result.status("trace-dict", dtype) == "pass", result.table()
        rec = result.record("trace-tuple", dtype)
        assert rec.status == "fallback"
        assert f"parameter {gap!r} (position 1)" in rec.reason


def test_bert_bf16_needs_the_bf16_tolerance() -> None:
    # The default bf16 tolerance passes BERT (above); an fp32-sized explicit one cannot hold bf16 rounding.
    model, inputs = tm.tiny_bert()
    result = engine.check(model, inputs, settings=SETTINGS.updated(modes="trace-dict", atol=1e-7, rtol=1e-7))
    assert result.statuses == {
        ("eager", "fp32"): "pass",
        ("trace-dict", "fp32"): "pass",
        ("eager", "bf16"): "mismatch",
        ("trace-dict", "bf16"): "mismatch",
    }, result.table()
    rec = result.record("trace-dict", "bf16")
    assert (rec.atol, rec.rtol) == (1e-7, 1e-7)
    assert rec.max_abs_diff > 1e-4 and "exceeds atol 1e-07" in rec.reason
