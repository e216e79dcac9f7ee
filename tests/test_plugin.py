"""The plugin as a user runs it: one pytester run of a suite with many scenarios, then per-test checks.

The inner suite (``SCENARIOS``) holds one test per behaviour of issue 3; the outer test reads the
outcomes (``-rA``), the failure text and the JSON report of that single run.
"""

from __future__ import annotations

import pytest
from plugin_runs import load_json, outcomes, records_by_test, run, statuses

SCENARIOS = """
import pytest
import torch

import tiny_models as tm


@pytest.mark.jitcpu
def test_pass(jitcpu):
    result = jitcpu.check(tm.TinyText(), tm.text_batch())
    assert result.ok
    assert [(r.mode, r.dtype) for r in result] == [("eager", "fp32"), ("trace-dict", "fp32"), ("trace-tuple", "fp32")]
    assert result.status("trace-dict") == "pass"
    assert result["trace-tuple", "fp32"].frozen is True


@pytest.mark.jitcpu
def test_mismatch_is_tracing(jitcpu):
    jitcpu.check(tm.TracingDependent(), {"x": tm.features()})


@pytest.mark.jitcpu(modes=["trace-dict"])
def test_mismatch_flag_flipped(jitcpu, monkeypatch):
    # The switch flips after the eager reference, right before tracing: the trace freezes the new branch.
    real_trace = torch.jit.trace

    def trace_after_flip(*args, **kwargs):
        tm.FLAG["double"] = True
        return real_trace(*args, **kwargs)

    monkeypatch.setattr(torch.jit, "trace", trace_after_flip)
    monkeypatch.setitem(tm.FLAG, "double", False)
    jitcpu.check(tm.FlagDependent(), {"x": tm.features()})


@pytest.mark.jitcpu
def test_fallback_warns(jitcpu):
    result = jitcpu.check(tm.PythonObjectOutput(), {"x": tm.features()})
    assert result.status("trace-dict") == "fallback"
    assert result.status("eager") == "pass"


@pytest.mark.jitcpu(fallback="fail")
def test_fallback_fail(jitcpu):
    jitcpu.check(tm.PythonObjectOutput(), {"x": tm.features()})


@pytest.mark.jitcpu(fallback="expect")
def test_fallback_expected(jitcpu):
    jitcpu.check(tm.PythonObjectOutput(), {"x": tm.features()})


@pytest.mark.jitcpu(fallback="expect")
def test_fallback_expected_but_traced(jitcpu):
    jitcpu.check(tm.TinyMLP(), {"x": tm.features()})


@pytest.mark.jitcpu
def test_tuple_gap(jitcpu):
    result = jitcpu.check(tm.Gap(), {"a": tm.features(), "c": tm.features(seed=1)})
    assert result.status("trace-dict") == "pass"
    assert result.status("trace-tuple") == "fallback"


@pytest.mark.jitcpu
def test_tuple_gap_tensor_default(jitcpu):
    result = jitcpu.check(tm.GapTensorDefault(), {"a": tm.features(), "c": tm.features(seed=1)})
    assert result.status("trace-tuple") == "pass"


@pytest.mark.jitcpu
def test_tuple_inputs(jitcpu):
    result = jitcpu.check(tm.OrderSensitive(), (tm.features(), tm.features(seed=1)))
    assert result.ok and not result.fallbacks


@pytest.mark.jitcpu
def test_dict_out_of_order(jitcpu):
    # Given in reverse order: trace-tuple must follow forward()'s order (a, b), not the dict's.
    result = jitcpu.check(tm.OrderSensitive(), {"b": tm.features(seed=1), "a": tm.features()})
    assert result.status("trace-tuple") == "pass"


@pytest.mark.jitcpu
def test_keyword_only(jitcpu):
    # torch.jit.trace binds example_kwarg_inputs positionally too: keyword-only parameters fall back.
    result = jitcpu.check(tm.KeywordOnly(), {"a": tm.features(), "b": tm.features(seed=1)})
    assert result.status("trace-dict") == "fallback"
    assert result.status("trace-tuple") == "fallback"


@pytest.mark.jitcpu
def test_eager_random(jitcpu):
    jitcpu.check(tm.RandomForward(), {"x": tm.features()})


@pytest.mark.jitcpu
def test_training_mode(jitcpu):
    model = tm.WithDropout().train()
    result = jitcpu.check(model, {"x": tm.features()})
    assert model.training, "the model must be back in training mode after the check"
    assert result.ok


@pytest.mark.jitcpu(modes=["eager", "trace-dict"])
def test_several_checks(jitcpu):
    first = jitcpu.check(tm.TinyMLP(), {"x": tm.features()})
    second = jitcpu.check(tm.TinyMLP(width=6), {"x": tm.features(width=6)})
    third = jitcpu.check(tm.TinyText(), tm.text_batch(), name="classifier")
    assert (first.model, second.model, third.model) == ("TinyMLP", "TinyMLP#2", "classifier")


@pytest.mark.jitcpu
def test_marked_without_check(jitcpu):
    pass


def test_unmarked_fixture_uses_session_settings(jitcpu):
    result = jitcpu.check(tm.TinyMLP(), {"x": tm.features()})
    assert {r.dtype for r in result} == {"fp32"}


@pytest.mark.jitcpu(dtypes=["fp32"])
def test_check_overrides_marker(jitcpu):
    result = jitcpu.check(tm.TinyMLP(), {"x": tm.features()}, modes="trace-tuple", dtypes="bf16", atol=0.5)
    assert [(r.mode, r.dtype) for r in result] == [("eager", "bf16"), ("trace-tuple", "bf16")]
    assert result.status("trace-tuple", "bf16") == "pass"


@pytest.mark.jitcpu(dtypes=["bf16"])
def test_bf16_default_tolerance(jitcpu):
    result = jitcpu.check(tm.TinyText(), tm.text_batch())
    assert {r.status for r in result} == {"pass"}


@pytest.mark.jitcpu(dtypes=["bf16"], modes=["eager", "trace-dict"], atol=1e-7, rtol=1e-7)
def test_bf16_tight_tolerance(jitcpu):
    jitcpu.check(tm.TinyText(), tm.text_batch())


@pytest.mark.jitcpu
def test_bad_check_override(jitcpu):
    jitcpu.check(tm.TinyMLP(), {"x": tm.features()}, dtypes="bf8")


@pytest.mark.jitcpu
def test_not_a_module(jitcpu):
    jitcpu.check(torch.tanh, (tm.features(),))


@pytest.mark.jitcpu
def test_eager_raises(jitcpu):
    jitcpu.check(tm.FailsEager(), {"x": tm.features()})
"""

EXPECTED = {
    "test_pass": "PASSED",
    "test_mismatch_is_tracing": "FAILED",
    "test_mismatch_flag_flipped": "FAILED",
    "test_fallback_warns": "PASSED",
    "test_fallback_fail": "FAILED",
    "test_fallback_expected": "PASSED",
    "test_fallback_expected_but_traced": "FAILED",
    "test_tuple_gap": "PASSED",
    "test_tuple_gap_tensor_default": "PASSED",
    "test_tuple_inputs": "PASSED",
    "test_dict_out_of_order": "PASSED",
    "test_keyword_only": "PASSED",
    "test_eager_random": "FAILED",
    "test_training_mode": "PASSED",
    "test_several_checks": "PASSED",
    "test_marked_without_check": "PASSED",
    "test_unmarked_fixture_uses_session_settings": "PASSED",
    "test_check_overrides_marker": "PASSED",
    "test_bf16_default_tolerance": "PASSED",
    "test_bf16_tight_tolerance": "FAILED",
    "test_bad_check_override": "FAILED",
    "test_not_a_module": "FAILED",
    "test_eager_raises": "FAILED",
}


def test_scenarios(jitcpu_pytester: pytest.Pytester) -> None:
    jitcpu_pytester.makepyfile(test_scenarios=SCENARIOS)
    result = run(jitcpu_pytester, "--jitcpu-dtypes=fp32", "--jitcpu-report=out/report.json", "-rA")
    got = outcomes(result)
    assert got == EXPECTED, {k: (got.get(k), v) for k, v in EXPECTED.items() if got.get(k) != v}
    result.assert_outcomes(passed=14, failed=9)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    records = records_by_test(load_json(jitcpu_pytester.path / "out" / "report.json"))
    out = result.stdout.str()

    # Passing model: one record per (mode, dtype), eager included.
    assert statuses(records["test_pass"]) == {
        ("TinyText", "eager", "fp32"): "pass",
        ("TinyText", "trace-dict", "fp32"): "pass",
        ("TinyText", "trace-tuple", "fp32"): "pass",
    }

    # Mismatches fail the test with a readable table naming mode, dtype, diff and the worst element.
    result.stdout.fnmatch_lines(
        [
            "*jitcpu: TracingDependent: 2 check(s) failed: trace-dict/fp32 mismatch, trace-tuple/fp32 mismatch",
            "mode*dtype*status*max_abs*max_rel*atol*rtol*worst / reason",
            "eager*fp32*pass*",
            "trace-dict*fp32*mismatch*1*at output[[]*]; output: max abs diff 1 exceeds atol*",
            "trace-tuple*fp32*mismatch*",
        ]
    )
    flag = records["test_mismatch_flag_flipped"]
    assert statuses(flag) == {
        ("FlagDependent", "eager", "fp32"): "pass",
        ("FlagDependent", "trace-dict", "fp32"): "mismatch",
    }
    assert flag[1]["max_abs_diff"] > 0.01 and flag[1]["worst"].startswith("output[")

    # Untraceable model: fallback with the tracer's reason; warns by default, fails with fallback="fail".
    fallback = {r["mode"]: r for r in records["test_fallback_warns"]}
    assert fallback["trace-dict"]["status"] == "fallback"
    assert fallback["trace-dict"]["reason"].startswith("RuntimeError: ")
    assert "object" in fallback["trace-dict"]["reason"]
    assert "\n" not in fallback["trace-dict"]["reason"]
    result.stdout.fnmatch_lines(
        ["*JitcpuFallbackWarning: jitcpu: PythonObjectOutput trace-dict/fp32 fell back to eager*"]
    )
    result.stdout.fnmatch_lines(
        ["*PythonObjectOutput: 2 check(s) failed: trace-dict/fp32 fallback, trace-tuple/fp32 fallback"]
    )
    assert {r["status"] for r in records["test_fallback_expected"] if r["mode"] != "eager"} == {"fallback"}
    result.stdout.fnmatch_lines(
        ["*TinyMLP: fallback expected but tracing succeeded (unexpected pass): trace-dict/fp32, trace-tuple/fp32"]
    )

    # Tuple-order gap: trace-tuple falls back naming the skipped parameter; never binds to the wrong one.
    gap = {r["mode"]: r for r in records["test_tuple_gap"]}
    assert "'skipped'" in gap["trace-tuple"]["reason"]
    assert "use trace-dict" in gap["trace-tuple"]["reason"]
    assert {r["status"] for r in records["test_tuple_gap_tensor_default"]} == {"pass"}
    assert {r["status"] for r in records["test_tuple_inputs"]} == {"pass"}
    assert {r["status"] for r in records["test_dict_out_of_order"]} == {"pass"}
    kw_only = {r["mode"]: r for r in records["test_keyword_only"]}
    assert "keyword-only" in kw_only["trace-tuple"]["reason"]

    # Eager nondeterminism: eager is an error, the other modes were not run.
    random = {r["mode"]: r for r in records["test_eager_random"]}
    assert {r["status"] for r in random.values()} == {"error"}
    assert "nondeterministic" in random["eager"]["reason"]
    assert random["trace-dict"]["reason"].startswith("not run")
    raising = {r["mode"]: r for r in records["test_eager_raises"]}
    assert raising["eager"]["status"] == "error"
    assert "ValueError: this model cannot run" in raising["eager"]["reason"]

    # Training mode: checked in eval (dropout off), said so in every record, training restored (in-test).
    assert all("training mode" in " ".join(r["notes"]) for r in records["test_training_mode"])

    # Several checks in one test keep distinct model labels.
    assert [r["model"] for r in records["test_several_checks"]] == ["TinyMLP"] * 2 + ["TinyMLP#2"] * 2 + [
        "classifier"
    ] * 2

    # A marked test that never calls check gets a warning (and no records).
    assert "test_marked_without_check" not in records
    assert "marked @pytest.mark.jitcpu but jitcpu.check() was never called" in out

    # bf16: the default tolerance passes; a too-small explicit one makes it a mismatch (tiny BERT: test_compat).
    bf16 = records["test_bf16_default_tolerance"]
    assert {r["dtype"] for r in bf16} == {"bf16"}
    assert all(r["max_abs_diff"] > 0 for r in bf16), "bf16 autocast should differ from the fp32 reference"
    tight = {r["mode"]: r for r in records["test_bf16_tight_tolerance"]}
    assert tight["trace-dict"]["status"] == "mismatch"
    assert tight["trace-dict"]["atol"] == 1e-7 and tight["trace-dict"]["rtol"] == 1e-7
    assert tight["trace-dict"]["max_abs_diff"] == pytest.approx(bf16[1]["max_abs_diff"])

    # Overrides given to check() win over the marker; usage mistakes fail the test with a clear message.
    assert records["test_check_overrides_marker"][1]["atol"] == 0.5
    result.stdout.fnmatch_lines(["*jitcpu.check: dtypes: unknown dtype 'bf8'; choose from fp32, bf16*"])
    result.stdout.fnmatch_lines(["*model: expected a torch.nn.Module, got builtin_function_or_method*"])
    result.stdout.no_fnmatch_line("*During handling of the above exception*")
