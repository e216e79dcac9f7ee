"""The successor modes: ``export`` (torch.export with dynamic batch/sequence) and ``compile`` (inductor).

Compiling costs seconds to tens of seconds on 2 cores, so there are few compile checks: one tiny BERT,
one tiny module with a graph break.
"""

from __future__ import annotations

import copy
import inspect
from typing import Any

import pytest
import tiny_models as tm
import torch
import torch._inductor.config as inductor_config
from plugin_runs import load_json, records_by_test, run, statuses

from pytest_jitcpu import engine
from pytest_jitcpu.backends import base, export
from pytest_jitcpu.backends import compile as compile_backend
from pytest_jitcpu.backends.base import Fallback, Unavailable
from pytest_jitcpu.inputs import normalize


class BranchOnValue(torch.nn.Module):
    """Python control flow on a tensor's value: torch.export refuses it; torch.compile breaks the graph."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.lin(x)
        if y.sum() > 0:
            return y * 2
        return y - 1


class FixedBatch(torch.nn.Module):
    """Adds a constant of batch 2: export must specialize the batch dim (and say so), not fail."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("offset", torch.arange(8.0).reshape(2, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.offset


def snapshot(model: torch.nn.Module) -> dict[str, Any]:
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "forward": type(model).forward,
        "attrs": sorted(vars(model)),
        "training": model.training,
    }


def assert_unchanged(model: torch.nn.Module, before: dict[str, Any]) -> None:
    after = snapshot(model)
    assert after["forward"] is before["forward"] and after["attrs"] == before["attrs"]
    assert after["training"] == before["training"]
    assert before["state"].keys() == after["state"].keys()
    assert all(torch.equal(before["state"][k], v) for k, v in after["state"].items())


def test_bert_passes_export_and_compile_and_is_left_as_it_was() -> None:
    model, batch = tm.tiny_bert()
    before = snapshot(model)
    freezing = inductor_config.freezing
    result = engine.check(model, batch, modes=["eager", "export", "compile"], dtypes=["fp32"])
    assert result.statuses == {("eager", "fp32"): "pass", ("export", "fp32"): "pass", ("compile", "fp32"): "pass"}
    export, compiled = result.record("export"), result.record("compile")
    # BERT's position embeddings bound the sequence: export keeps it dynamic within that range.
    assert "export: dynamic batch, seq (<= 512)" in export.notes
    assert export.max_abs_diff is not None and export.max_abs_diff <= export.atol
    assert compiled.compile_time_ms is not None and compiled.compile_time_ms > 0
    assert compiled.frozen is True and compiled.max_abs_diff is not None
    assert not [n for n in compiled.notes if "graph break" in n]
    assert inductor_config.freezing == freezing  # set only while compiled code runs
    assert_unchanged(model, before)


def test_export_of_value_dependent_control_flow_is_a_fallback_with_the_user_line() -> None:
    model = BranchOnValue()
    result = engine.check(model, (tm.features(),), modes=["eager", "export"], dtypes=["fp32", "bf16"])
    for dtype in ("fp32", "bf16"):
        rec = result.record("export", dtype)
        assert rec.status == "fallback"
        assert rec.reason.startswith("GuardOnDataDependentSymNode: Could not guard on data-dependent expression")
        where = f"(at {__file__}:{_line_of(BranchOnValue, 'if y.sum()')} in forward: if y.sum() > 0:)"
        assert rec.reason.endswith(
            where
            + "; fix: write the branch on a tensor's value as torch.cond(pred, true_fn, false_fn, (x,)), which torch.export keeps as a real branch"
        )
        assert "\n" not in rec.reason


def test_compile_runs_through_a_graph_break_and_notes_it() -> None:
    model = BranchOnValue()
    result = engine.check(model, (tm.features(),), modes=["eager", "compile"], dtypes=["fp32"])
    rec = result.record("compile")
    assert rec.status == "pass" and rec.compile_time_ms > 0
    assert "compile: graph break, those parts run eager: Data-dependent branching" in rec.notes


def test_export_specializes_a_dim_the_model_fixes_and_says_so() -> None:
    built = export.build(FixedBatch(), normalize((tm.features(),)), "fp32")
    assert built.notes == [
        "export: batch static at 2 (the export specialized it: other sizes of the domain will not run)"
    ]
    x = tm.features(seed=1)
    assert torch.equal(built.run(normalize((x,))), x + FixedBatch().offset)


class KeywordsOnly(torch.nn.Module):
    """forward(input_ids, **kwargs): torch.export refuses a dynamic_shapes dict keyed by the inputs."""

    def forward(self, input_ids: torch.Tensor, **kwargs: torch.Tensor) -> torch.Tensor:
        return input_ids.float() * kwargs["attention_mask"]


def test_export_retries_static_when_dynamic_dims_fail_and_says_why() -> None:
    batch = tm.text_batch()
    built = export.build(KeywordsOnly(), normalize(batch), "fp32")
    assert len(built.notes) == 1
    assert built.notes[0].startswith(
        "export: with dynamic batch, seq it failed, exported with static shapes: UserError:"
    )
    assert torch.equal(built.run(normalize(batch)), KeywordsOnly()(**batch))


def test_export_bf16_runs_under_autocast() -> None:
    result = engine.check(tm.TinyMLP().eval(), {"x": tm.features()}, modes=["eager", "export"], dtypes=["bf16"])
    rec = result.record("export", "bf16")
    assert rec.status == "pass" and rec.max_abs_diff > 0  # bf16 rounding shows: autocast was on
    assert rec.notes[0] == "export: dynamic batch"  # then the generalization search's note


@pytest.mark.parametrize(
    ("inputs", "expected"),
    [
        (tm.text_batch(), {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}}),
        ({"pixel_values": torch.zeros(2, 3, 8, 8)}, {"pixel_values": {0: "batch", 2: "height", 3: "width"}}),
        ({"input_values": torch.zeros(2, 50)}, {"input_values": {0: "batch", 1: "time"}}),  # audio
        ({"hidden": torch.zeros(2, 5, 4)}, {"hidden": {0: "batch", 1: "seq"}}),  # [batch, seq, features]
        ((torch.zeros(3, 5, dtype=torch.long), torch.zeros(3, 4)), {0: {0: "batch", 1: "seq"}, 1: {0: "batch"}}),
        ({"input_ids": torch.zeros(1, 1, dtype=torch.long)}, {}),  # sizes 0/1 are specialized by export
        ({"a": torch.zeros(2, 4), "b": torch.zeros(3, 4)}, {}),  # no shared batch size
        (
            {"a": torch.zeros(2, 6, dtype=torch.long), "b": torch.zeros(2, 7, dtype=torch.long)},
            {"a": {0: "batch", 1: "seq"}, "b": {0: "batch", 1: "seq of b"}},
        ),
        ({"x": torch.zeros(2, 4), "flag": True, "none": None}, {"x": {0: "batch"}}),
    ],
    ids=[
        "ids-mask",
        "pixels",
        "audio",
        "float-sequence",
        "tuple",
        "size-one",
        "no-shared-batch",
        "two-seq-lengths",
        "non-tensors",
    ],
)
def test_dynamic_dims(inputs: Any, expected: dict[Any, dict[int, str]]) -> None:
    assert export.dynamic_dims(normalize(inputs)) == expected


def test_reason_keeps_the_first_line_and_the_users_source_line() -> None:
    message = (
        "Dynamic control flow is not supported at the moment.\n\nHint: use torch.cond\n\n"
        "The following call raised this error:\n"
        '  File "/usr/lib/python3/site-packages/torch/nn/modules/module.py", line 1, in _call_impl\n    return f()\n'
        '  File "/home/me/model.py", line 12, in forward\n    if x.max() > 3:\n'
    )
    assert base.reason(RuntimeError(message)) == (
        "RuntimeError: Dynamic control flow is not supported at the moment. "
        "(at /home/me/model.py:12 in forward: if x.max() > 3:)"
    )
    assert base.reason(ValueError("")) == "ValueError"


def test_export_failure_is_a_fallback_not_an_exception() -> None:
    with pytest.raises(Fallback, match=r"^RuntimeError: Found <class 'object'> in output"):
        export.build(tm.PythonObjectOutput(), normalize((tm.features(),)), "fp32")


def test_export_in_the_plugin_report(jitcpu_pytester: pytest.Pytester) -> None:
    jitcpu_pytester.makepyfile(
        branch=f"import torch\n\n\n{_source(BranchOnValue)}",
        test_inner="""
        import tiny_models as tm
        from branch import BranchOnValue


        def test_text(jitcpu):
            result = jitcpu.check(tm.TinyText().eval(), tm.text_batch())
            assert result.status("export") == "pass"


        def test_branch(jitcpu):
            assert jitcpu.check(BranchOnValue(), (tm.features(),)).status("export") == "fallback"
        """,
    )
    result = run(
        jitcpu_pytester, "-rA", "--jitcpu-modes=eager,export", "--jitcpu-dtypes=fp32", "--jitcpu-report=r.json"
    )
    result.assert_outcomes(passed=2)
    found = records_by_test(load_json(jitcpu_pytester.path / "r.json"))
    assert statuses(found["test_text"]) == {
        ("TinyText", "eager", "fp32"): "pass",
        ("TinyText", "export", "fp32"): "pass",
    }
    text = next(r for r in found["test_text"] if r["mode"] == "export")
    assert text["notes"] == ["export: dynamic batch, seq"] and text["max_abs_diff"] == 0.0
    assert statuses(found["test_branch"])[("BranchOnValue", "export", "fp32")] == "fallback"
    branch = next(r for r in found["test_branch"] if r["mode"] == "export")
    assert "branch.py" in branch["reason"] and "if y.sum() > 0:" in branch["reason"]


def _source(cls: type) -> str:
    return inspect.getsource(cls)


def _line_of(cls: type, text: str) -> int:
    lines, start = inspect.getsourcelines(cls)
    return start + next(i for i, line in enumerate(lines) if text in line)


def test_compile_does_not_keep_the_models_it_checked_apart() -> None:
    """Two models of one class in one session: each compile check must run its own weights."""
    first = tm.TinyMLP()
    second = copy.deepcopy(first)
    with torch.no_grad():
        second.lin.weight.mul_(-1.0)
    for model in (first, second):
        result = engine.check(model, {"x": tm.features()}, modes=["eager", "compile"], dtypes=["fp32"])
        assert result.status("compile") == "pass"


def test_compile_without_a_cxx_compiler_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inductor_config, "force_disable_caches", True)  # a cached kernel needs no compiler
    monkeypatch.setattr(inductor_config.cpp, "cxx", ("/nonexistent/g++",))
    with pytest.raises(
        Unavailable, match=r"^torch.compile \(inductor\) needs a C\+\+ compiler here: .*InvalidCxxCompiler"
    ):
        compile_backend.build(tm.TinyMLP().eval(), normalize({"x": tm.features()}), "fp32")
