"""The engine alone (no pytest wiring): records per mode and dtype for models built to show one behaviour."""

from __future__ import annotations

import json
from typing import Any

import pytest
import tiny_models as tm
import torch

from pytest_jitcpu import engine
from pytest_jitcpu.backends.base import first_line
from pytest_jitcpu.record import CheckResult
from pytest_jitcpu.settings import DEFAULT_MODES, Settings, UsageError

# Generalization and the serialization round trip (issue 4) have their own tests.
FP32 = Settings(dtypes=("fp32",), examples=0, serialize=False)


def check(model: torch.nn.Module, inputs: Any, **changes: Any) -> CheckResult:
    return engine.check(model, inputs, settings=FP32.updated(**changes), nodeid="tests/x.py::test_x")


def test_passing_model_has_one_record_per_mode_and_dtype() -> None:
    result = check(tm.TinyText(), tm.text_batch(), dtypes="fp32,bf16")
    assert [(r.mode, r.dtype) for r in result] == [(m, d) for d in ("fp32", "bf16") for m in DEFAULT_MODES]
    assert {r.status for r in result} == {"pass"}
    assert result.ok and not result.failed and not result.fallbacks
    assert {r.nodeid for r in result} == {"tests/x.py::test_x"}
    assert {r.model for r in result} == {"TinyText"}
    eager = result.record("eager")
    assert eager.max_abs_diff == 0.0 and eager.latency_ms is not None and eager.latency_ms > 0
    for mode in ("trace-dict", "trace-tuple"):
        rec = result[mode, "fp32"]
        assert rec.frozen is True, "torch.jit.freeze is applied as the Trainer did"
        assert rec.max_abs_diff is not None and rec.max_abs_diff <= rec.atol
        assert rec.worst is not None and rec.worst.split("[")[0] in ("logits", "pooled")
        assert rec.latency_ms is not None and rec.latency_ms > 0
    assert result.record("trace-dict", "bf16").rtol == pytest.approx(1.6e-2)
    assert isinstance(result.reference, dict) and set(result.reference) == {"logits", "pooled"}


def test_eager_always_runs_and_comes_first() -> None:
    result = check(tm.TinyMLP(), {"x": tm.features()}, modes="trace-tuple")
    assert [r.mode for r in result] == ["eager", "trace-tuple"]


def test_output_computed_differently_while_tracing_is_a_mismatch() -> None:
    result = check(tm.TracingDependent(), {"x": tm.features()})
    assert result.status("eager") == "pass"
    for mode in ("trace-dict", "trace-tuple"):
        rec = result.record(mode)
        assert rec.status == "mismatch"
        assert rec.max_abs_diff == pytest.approx(1.0)
        assert rec.worst is not None and rec.worst.startswith("output[")
        assert "exceeds atol" in rec.reason
    assert [r.mode for r in result.failed] == ["trace-dict", "trace-tuple"]
    assert "mismatch" in result.table() and "worst / reason" in result.table()


def test_flag_flipped_between_reference_and_trace_is_a_mismatch(monkeypatch: pytest.MonkeyPatch) -> None:
    real_trace = torch.jit.trace

    def trace_after_flip(*args: Any, **kwargs: Any) -> Any:
        tm.FLAG["double"] = True
        return real_trace(*args, **kwargs)

    monkeypatch.setattr(torch.jit, "trace", trace_after_flip)
    monkeypatch.setitem(tm.FLAG, "double", False)
    result = check(tm.FlagDependent(), {"x": tm.features()}, modes="trace-dict")
    assert result.status("trace-dict") == "mismatch"


def test_untraceable_model_falls_back_with_the_first_line_of_the_error() -> None:
    result = check(tm.PythonObjectOutput(), {"x": tm.features()})
    assert result.status("eager") == "pass"
    for mode in ("trace-dict", "trace-tuple"):
        rec = result.record(mode)
        assert rec.status == "fallback"
        assert rec.reason.startswith("RuntimeError: ")
        assert "\n" not in rec.reason and len(rec.reason) <= 400
        assert "tensor(...)" in rec.reason, "tensor reprs are collapsed"
        assert rec.max_abs_diff is None
    assert not result.failed and len(result.fallbacks) == 2


class _BranchOnValue(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The same data-dependent branch twice: one TracerWarning per source line, deduplicated.
        for _ in range(2):
            if x.sum() > 0:
                x = x + 1
        return x


def test_tracer_warnings_are_recorded_once_and_not_shown() -> None:
    # The project runs with filterwarnings=error: a leaked TracerWarning would fail this test.
    result = check(_BranchOnValue(), {"x": torch.ones(2, 3)})
    rec = result.record("trace-dict")
    assert rec.status == "pass"
    assert len(rec.warnings) == 1, rec.warnings
    assert rec.warnings[0].startswith("TracerWarning: Converting a tensor to a Python boolean")
    assert rec.warnings[0].endswith(f"({__file__}:{_BranchOnValue.forward.__code__.co_firstlineno + 3})")


def test_tuple_gap_with_none_default_falls_back_naming_the_parameter() -> None:
    result = check(tm.Gap(), {"a": tm.features(), "c": tm.features(seed=1)})
    assert result.status("trace-dict") == "pass"
    rec = result.record("trace-tuple")
    assert rec.status == "fallback"
    assert "'skipped' (position 1)" in rec.reason and "default None" in rec.reason


def test_tuple_gap_with_tensor_default_is_filled() -> None:
    result = check(tm.GapTensorDefault(), {"a": tm.features(), "c": tm.features(seed=1)})
    assert result.statuses == {
        ("eager", "fp32"): "pass",
        ("trace-dict", "fp32"): "pass",
        ("trace-tuple", "fp32"): "pass",
    }


def test_tuple_inputs_are_accepted() -> None:
    result = check(tm.OrderSensitive(), (tm.features(), tm.features(seed=1)))
    assert {r.status for r in result} == {"pass"}


def test_dict_order_does_not_decide_the_positional_order() -> None:
    model = tm.OrderSensitive()
    inputs = {"b": tm.features(seed=1), "a": tm.features()}
    # The trap: a tuple in the dict's order binds b to a and computes something else.
    with torch.no_grad():
        naive = model(*inputs.values())
        assert not torch.allclose(naive, model(**inputs))
    result = check(model, inputs)
    assert result.status("trace-tuple") == "pass"
    assert result.record("trace-tuple").max_abs_diff == 0.0


def test_keyword_only_parameter_falls_back_in_trace_tuple() -> None:
    rec = check(tm.KeywordOnly(), {"a": tm.features(), "b": tm.features(seed=1)}).record("trace-tuple")
    assert rec.status == "fallback"
    assert rec.reason == "input 'b' is a keyword-only parameter, so it cannot be passed in a positional tuple"


def test_nondeterministic_eager_is_an_error_and_nothing_else_runs() -> None:
    result = check(tm.RandomForward(), {"x": tm.features()}, dtypes="fp32,bf16")
    assert {r.status for r in result} == {"error"}
    assert len(result) == 6
    eager = result.record("eager")
    assert "nondeterministic" in eager.reason and "two eager runs differ" in eager.reason
    for rec in result:
        if rec.mode != "eager":
            assert rec.reason.startswith("not run: the eager reference failed")
    assert result.reference is None


def test_eager_exception_is_an_error() -> None:
    result = check(tm.FailsEager(), {"x": tm.features()})
    assert result.record("eager").reason == "eager run failed: ValueError: this model cannot run"
    assert result.status("trace-dict") == "error"


def test_training_model_is_checked_in_eval_mode_and_restored() -> None:
    model = tm.WithDropout().train()
    result = check(model, {"x": tm.features()})
    assert model.training
    assert {r.status for r in result} == {"pass"}, "dropout is off in eval mode, so eager is deterministic"
    for rec in result:
        assert any("training mode" in note for note in rec.notes)
    eval_result = check(tm.WithDropout().eval(), {"x": tm.features()})
    assert all(not rec.notes for rec in eval_result)


def test_submodule_modes_are_noted_and_restored_one_by_one() -> None:
    left_training = tm.WithDropout().eval()
    left_training.drop.train()  # dropout on: eager would be random
    result = check(left_training, {"x": tm.features()})
    assert {r.status for r in result} == {"pass"}
    assert "submodule 'drop' of the model was in training mode" in result.record("eager").notes[0]
    assert left_training.drop.training and not left_training.training and not left_training.lin.training

    frozen_part = tm.WithDropout().train()
    frozen_part.lin.eval()  # the user's choice, kept after the check
    check(frozen_part, {"x": tm.features()})
    assert frozen_part.training and frozen_part.drop.training and not frozen_part.lin.training


def test_training_mode_restored_when_the_check_fails() -> None:
    model = tm.FailsEager().train()
    check(model, {"x": tm.features()})
    assert model.training


class _InPlace(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x.add_(1)
        return x * 2


def test_inputs_modified_in_place_do_not_leak_between_runs() -> None:
    x = tm.features()
    before = x.clone()
    result = check(_InPlace(), {"x": x})
    assert {r.status for r in result} == {"pass"}
    assert torch.equal(x, before)


def test_bf16_default_tolerance_passes_and_a_tight_one_does_not() -> None:
    loose = check(tm.TinyText(), tm.text_batch(), dtypes="bf16")
    assert {r.status for r in loose} == {"pass"}
    assert max(r.max_abs_diff for r in loose) > 0, "autocast bf16 differs from the fp32 reference"
    tight = check(tm.TinyText(), tm.text_batch(), dtypes="bf16", atol=1e-9, rtol=1e-9)
    assert tight.status("trace-dict", "bf16") == "mismatch"
    assert tight.record("trace-dict", "bf16").atol == 1e-9


def test_fp32_tolerance_override_is_used_as_given() -> None:
    rec = check(tm.TinyMLP(), {"x": tm.features()}, atol=0.25, rtol=0.125).record("trace-dict")
    assert (rec.atol, rec.rtol) == (0.25, 0.125)


def test_nonfinite_difference_is_null_in_json_with_the_reason() -> None:
    rec = check(tm.InfWhenTraced(), {"x": tm.features()}).record("trace-dict")
    assert rec.status == "mismatch"
    data = rec.to_json()
    text = json.dumps(data, allow_nan=False)
    assert json.loads(text)["max_abs_diff"] is None
    assert "not representable in JSON" in data["reason"]


def test_name_overrides_the_label() -> None:
    result = engine.check(tm.TinyMLP(), {"x": tm.features()}, settings=FP32, name="mlp")
    assert result.model == "mlp" and {r.model for r in result} == {"mlp"}


def test_result_lookup_errors_list_what_exists() -> None:
    result = check(tm.TinyMLP(), {"x": tm.features()}, modes="trace-dict")
    with pytest.raises(
        KeyError, match=r"no record for mode 'ipex' dtype 'fp32'; this check has eager/fp32, trace-dict/fp32"
    ):
        result.record("ipex")


def test_usage_errors() -> None:
    with pytest.raises(UsageError, match=r"expected a torch\.nn\.Module, got function"):
        engine.check(lambda x: x, (tm.features(),), settings=FP32)
    with pytest.raises(UsageError, match="inputs: got an int; pass a dict of keyword arguments"):
        engine.check(tm.TinyMLP(), 3, settings=FP32)
    with pytest.raises(UsageError, match="unknown dtype 'fp16'; choose from fp32, bf16"):
        engine.check(tm.TinyMLP(), (tm.features(),), dtypes="fp16")


def test_keyword_arguments_without_settings() -> None:
    # No plugin: modes/dtypes/atol as plain arguments. (Default settings run issue 4's extra checks.)
    result = engine.check(tm.TinyMLP(), (tm.features(),), modes=["eager"], dtypes=["fp32", "bf16"], atol=0.5)
    assert [(r.mode, r.dtype) for r in result] == [("eager", "fp32"), ("eager", "bf16")]
    assert result.record("eager", "bf16").atol == 0.5


def test_first_line_collapses_tensor_reprs() -> None:
    exc = RuntimeError(f"bad value {torch.arange(100)} in\nsecond line")
    assert first_line(exc) == "RuntimeError: bad value tensor(...) in second line"
    assert first_line(ValueError()) == "ValueError"
    assert first_line(TypeError(f"got {object()!r}")) == "TypeError: got <object object>", "no memory addresses"
    assert len(first_line(RuntimeError("x" * 1000))) == len("RuntimeError: ") + 400
