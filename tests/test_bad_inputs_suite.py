"""Bad inputs and odd models, as users hit them: every case gets a clear verdict and nothing is lost.

Plugin side: one inner test file with one test per case, run once in a pytester subprocess with a JSON
report; each case has its expected outcome, the message that must name what was wrong (for a usage
error) and what its records must say (for a model that is a result, not a mistake). Each inner test
also asserts that the user's objects are left as given (training flags, requires_grad, input values).
No case may end in an INTERNALERROR, a traceback from inside torch, or a lost record.

Command line side: ``jitcpu run``/``jitcpu check`` on missing, empty, malformed, binary and odd inputs,
bad flags, broken model folders and outputs that would overwrite something: exit 2 with a one-line
error before the model loads (or a proper per-row record), the input bytes unchanged, no partial file.
Most run ``main()`` in-process (a tiny model loads in a fraction of a second); the ones where the process
itself matters (a traceback, Ctrl-C, the console script) run ``jitcpu`` as a subprocess.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from inference_models import SENTENCES, encoder
from plugin_runs import load_json, outcomes, records_by_test, run, schema_errors

from pytest_jitcpu.cli import main

# --- plugin side ---------------------------------------------------------------------------------------

SUITE = '''
import sys

import pytest
import torch
from torch import nn

import tiny_models as tm


def lin():
    torch.manual_seed(0)
    return nn.Linear(4, 4)


class Returns(nn.Module):
    """forward() returns whatever ``make(self, x)`` builds."""

    def __init__(self, make):
        super().__init__()
        self.lin = lin()
        self.make = make

    def forward(self, x):
        return self.make(self, x)


class Raises(nn.Module):
    def forward(self, x):
        raise RuntimeError("boom in forward")


class Exits(nn.Module):
    def forward(self, x):
        sys.exit(3)


class NoParameters(nn.Module):
    def forward(self, x):
        return x * 2


class KwargsOnly(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = lin()

    def forward(self, **kwargs):
        return self.lin(kwargs["x"])


class VarPositional(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = lin()

    def forward(self, *args):
        return self.lin(args[0])


class InPlaceOnInput(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = lin()

    def forward(self, x):
        x.add_(1.0)
        return self.lin(x)


def x():
    return tm.features()


def check(jitcpu, model, inputs, **kw):
    return jitcpu.check(model, inputs, **kw)


# marker values: the test errors at setup, naming the value and the choices
@pytest.mark.jitcpu(modes=["bogus"])
def test_marker_unknown_mode(jitcpu):
    pass


@pytest.mark.jitcpu(mode=["eager"])
def test_marker_unknown_keyword(jitcpu):
    pass


@pytest.mark.jitcpu(dtypes=("fp64",))
def test_marker_unknown_dtype(jitcpu):
    pass


@pytest.mark.jitcpu(atol=-1)
def test_marker_negative_atol(jitcpu):
    pass


@pytest.mark.jitcpu(fallback=True)
def test_marker_fallback_bool(jitcpu):
    pass


@pytest.mark.jitcpu(examples="ten")
def test_marker_examples_word(jitcpu):
    pass


@pytest.mark.jitcpu(modes=[])
def test_marker_empty_modes():
    pass


# inputs of a type the engine does not take: one usage error, no records
def test_inputs_list(jitcpu):
    check(jitcpu, lin(), [x()])


def test_inputs_set(jitcpu):
    check(jitcpu, lin(), {1, 2})


def test_inputs_str(jitcpu):
    check(jitcpu, lin(), "x")


def test_inputs_numpy(jitcpu):
    import numpy as np

    check(jitcpu, lin(), {"input": np.ones((2, 4), dtype=np.float32)})


def test_inputs_meta_tensor(jitcpu):
    check(jitcpu, lin(), {"input": torch.empty(2, 4, device="meta")})


def test_model_class(jitcpu):
    check(jitcpu, nn.Linear, {"input": x()})


def test_model_function(jitcpu):
    check(jitcpu, torch.tanh, (x(),))


def test_model_on_meta_device(jitcpu):
    check(jitcpu, nn.Linear(4, 4, device="meta"), {"input": x()})


def test_model_buffer_on_meta_device(jitcpu):
    model = lin()
    model.register_buffer("scale", torch.empty(4, device="meta"))
    check(jitcpu, model, {"input": x()})


def test_check_unknown_override(jitcpu):
    check(jitcpu, lin(), {"input": x()}, tolerance=1)


def test_check_bad_atol_override(jitcpu):
    check(jitcpu, lin(), {"input": x()}, atol="loose")


def test_check_name_not_a_string(jitcpu):
    check(jitcpu, lin(), {"input": x()}, name=42)


# models returning odd things: eager is the reference; a trace that cannot hold it falls back, with why
def test_returns_none(jitcpu):
    check(jitcpu, Returns(lambda s, x: None), {"x": x()})


def test_returns_string(jitcpu):
    check(jitcpu, Returns(lambda s, x: "label"), {"x": x()})


def test_returns_int(jitcpu):
    check(jitcpu, Returns(lambda s, x: 3), {"x": x()})


def test_returns_dict_with_non_tensors(jitcpu):
    check(jitcpu, Returns(lambda s, x: {"a": s.lin(x), "b": "label", "c": 3}), {"x": x()})


def test_returns_nested_tuples(jitcpu):
    result = check(jitcpu, Returns(lambda s, x: (s.lin(x), (s.lin(x) * 2, [s.lin(x) + 1]))), {"x": x()})
    assert result.ok


def test_returns_nan(jitcpu):
    check(jitcpu, Returns(lambda s, x: s.lin(x) * float("nan")), {"x": x()})


def test_returns_empty_tensor(jitcpu):
    check(jitcpu, lin(), {"input": torch.empty(0, 4)})


def test_returns_python_object(jitcpu):
    check(jitcpu, tm.PythonObjectOutput(), {"x": x()})


# models that fail or behave oddly: a record, never a crash of the session
def test_raises_in_forward(jitcpu):
    check(jitcpu, Raises(), {"x": x()})


def test_sys_exit_in_forward(jitcpu):
    check(jitcpu, Exits(), {"x": x()})


def test_wrong_input_dtype(jitcpu):
    check(jitcpu, lin(), {"input": torch.ones(2, 4, dtype=torch.int64)})


def test_wrong_input_shape(jitcpu):
    check(jitcpu, lin(), {"input": torch.ones(2, 5)})


def test_nondeterministic(jitcpu):
    check(jitcpu, tm.RandomForward(), {"x": x()})


def test_no_parameters(jitcpu):
    assert check(jitcpu, NoParameters(), {"x": x()}).ok


def test_kwargs_only_forward(jitcpu):
    check(jitcpu, KwargsOnly(), {"x": x()})


def test_var_positional_forward(jitcpu):
    check(jitcpu, VarPositional(), (x(),))


def test_bf16_model_fp32_inputs(jitcpu):
    check(jitcpu, lin().to(torch.bfloat16), {"input": x()})


# the user's objects are left as given
def test_train_mode_is_restored(jitcpu):
    model = tm.WithDropout().train()
    model.lin.eval()  # a submodule the user put in eval mode on purpose stays so
    result = check(jitcpu, model, {"x": x()})
    assert model.training and model.drop.training and not model.lin.training
    assert result.ok


def test_requires_grad_inputs_are_left_alone(jitcpu):
    model = lin()
    inputs = {"input": torch.randn(2, 4, requires_grad=True)}
    before = inputs["input"].detach().clone()
    assert check(jitcpu, model, inputs).ok
    assert inputs["input"].requires_grad and inputs["input"].grad is None
    assert torch.equal(inputs["input"].detach(), before)
    assert all(p.requires_grad and p.grad is None for p in model.parameters())


def test_frozen_parameters_stay_frozen(jitcpu):
    model = lin()
    model.weight.requires_grad_(False)
    assert check(jitcpu, model, {"input": x()}).ok
    assert not model.weight.requires_grad and model.bias.requires_grad


def test_in_place_forward_does_not_change_the_inputs(jitcpu):
    inputs = {"x": x()}
    before = inputs["x"].clone()
    assert check(jitcpu, InPlaceOnInput(), inputs).ok
    assert torch.equal(inputs["x"], before)


def test_state_dict_unchanged(jitcpu):
    model, batch = tm.tiny_bert()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ids = batch["input_ids"].clone()
    assert check(jitcpu, model, batch).ok
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert torch.equal(batch["input_ids"], ids)


# tolerances and policies
def test_huge_atol_is_recorded(jitcpu):
    assert check(jitcpu, tm.TracingDependent(), {"x": x()}, atol=1e30).ok


def test_zero_tolerance(jitcpu):
    check(jitcpu, tm.TinyText(), tm.text_batch(), atol=0, rtol=0)


def test_fallback_fail_policy(jitcpu):
    check(jitcpu, Returns(lambda s, x: None), {"x": x()}, fallback="fail")


def test_fallback_expect_but_traced(jitcpu):
    check(jitcpu, lin(), {"input": x()}, fallback="expect")


@pytest.mark.filterwarnings("error")
def test_fallback_warning_under_filterwarnings_error(jitcpu):
    check(jitcpu, Returns(lambda s, x: "label"), {"x": x()})


def test_two_checks_of_one_class_keep_both_records(jitcpu):
    check(jitcpu, lin(), {"input": x()})
    check(jitcpu, lin(), {"input": x() * 2})


@pytest.fixture
def checked_in_teardown(jitcpu):
    yield
    jitcpu.check(lin(), {"input": x()})


def test_check_in_fixture_teardown(checked_in_teardown):
    pass


def test_plain_test_runs():
    pass
'''

# How each case must end. Usage errors: the test fails (or errors at setup) with a one-line message
# naming what was wrong and how to fix it, and makes no record.
SETUP_ERRORS = {
    "test_marker_unknown_mode": "unknown mode 'bogus'; choose from eager, trace-dict",
    "test_marker_unknown_keyword": "got unknown keyword 'mode'; choose from modes, dtypes",
    "test_marker_unknown_dtype": "unknown dtype 'fp64'; choose from fp32, bf16",
    "test_marker_negative_atol": "-1 must be a finite number >= 0",
    "test_marker_fallback_bool": "unknown fallback policy 'True'; choose from warn, fail, expect",
    "test_marker_examples_word": "'ten' is not an integer",
    "test_marker_empty_modes": "no mode given; choose from eager",
}
USAGE_FAILURES = {
    "test_inputs_list": "inputs: got a list; pass a dict of keyword arguments",
    "test_inputs_set": "inputs: got a set; pass a dict",
    "test_inputs_str": "inputs: got a str; pass a dict",
    "test_inputs_numpy": "convert with torch.from_numpy(array)",
    "test_inputs_meta_tensor": "inputs: input is on the meta device (no data); pass tensors on the CPU",
    "test_model_class": "model: got the class Linear, not a model; pass an instance (Linear(...))",
    "test_model_function": "model: expected a torch.nn.Module, got builtin_function_or_method; wrap a function",
    "test_model_on_meta_device": "model: parameter 'weight' is on the meta device (no data); load the weights",
    "test_model_buffer_on_meta_device": "model: buffer 'scale' is on the meta device (no data)",
    "test_check_unknown_override": "jitcpu.check: unknown setting 'tolerance'",
    "test_check_bad_atol_override": "jitcpu.check: atol: 'loose' is not a number",
    "test_check_name_not_a_string": "jitcpu.check: name: 42 is not a str; give the model's label as a string",
}
# A model that is a result: records say what happened. (outcome, {(mode, dtype): status}, reason part).
ALL = ("eager", "trace-dict", "trace-tuple")
DTYPES = ("fp32", "bf16")


def _every(status_eager: str, status_trace: str) -> dict[tuple[str, str], str]:
    return {(m, d): status_eager if m == "eager" else status_trace for m in ALL for d in DTYPES}


RESULTS: dict[str, tuple[str, dict[tuple[str, str], str], str | None]] = {
    "test_returns_none": ("PASSED", _every("pass", "fallback"), "didn't return any values"),
    "test_returns_string": ("PASSED", _every("pass", "fallback"), "Only tensors, lists, tuples of tensors"),
    "test_returns_int": ("PASSED", _every("pass", "fallback"), "Only tensors, lists, tuples of tensors"),
    "test_returns_dict_with_non_tensors": ("PASSED", _every("pass", "fallback"), "Tracer cannot infer type"),
    "test_returns_nested_tuples": ("PASSED", _every("pass", "pass"), None),
    "test_returns_nan": ("PASSED", _every("pass", "pass"), None),
    "test_returns_empty_tensor": ("PASSED", _every("pass", "pass"), None),
    "test_returns_python_object": ("PASSED", _every("pass", "fallback"), "Tracer cannot infer type"),
    "test_raises_in_forward": ("FAILED", _every("error", "error"), "eager run failed: RuntimeError: boom in forward"),
    "test_sys_exit_in_forward": ("FAILED", _every("error", "error"), "eager run failed: SystemExit: 3"),
    "test_wrong_input_dtype": ("FAILED", _every("error", "error"), "mat1 and mat2 must have the same dtype"),
    "test_wrong_input_shape": ("FAILED", _every("error", "error"), "mat1 and mat2 shapes cannot be multiplied"),
    "test_nondeterministic": ("FAILED", _every("error", "error"), "eager reference is nondeterministic"),
    "test_no_parameters": ("PASSED", _every("pass", "pass"), None),
    "test_kwargs_only_forward": ("PASSED", _every("pass", "fallback"), "'x' is not in forward() method's arguments"),
    "test_var_positional_forward": (
        "PASSED",
        {**_every("pass", "fallback"), ("trace-tuple", "fp32"): "pass", ("trace-tuple", "bf16"): "pass"},
        "1 positional inputs but forward() names only 0 positional parameters",
    ),
    "test_bf16_model_fp32_inputs": ("FAILED", _every("error", "error"), "eager run failed"),
    "test_train_mode_is_restored": ("PASSED", _every("pass", "pass"), None),
    "test_requires_grad_inputs_are_left_alone": ("PASSED", _every("pass", "pass"), None),
    "test_frozen_parameters_stay_frozen": ("PASSED", _every("pass", "pass"), None),
    "test_in_place_forward_does_not_change_the_inputs": ("PASSED", _every("pass", "pass"), None),
    "test_state_dict_unchanged": ("PASSED", _every("pass", "pass"), None),
    "test_huge_atol_is_recorded": ("PASSED", _every("pass", "pass"), None),
    # atol=rtol=0 is the user's choice: fp32 traces are bit-identical here, bf16 is not
    "test_zero_tolerance": (
        "FAILED",
        {(m, d): "pass" if d == "fp32" else "mismatch" for m in ALL for d in DTYPES},
        "exceeds atol 0 + rtol 0",
    ),
    "test_fallback_fail_policy": ("FAILED", _every("pass", "fallback"), "didn't return any values"),
    "test_fallback_expect_but_traced": ("FAILED", _every("pass", "pass"), None),
    "test_fallback_warning_under_filterwarnings_error": ("FAILED", _every("pass", "fallback"), "Only tensors"),
    "test_check_in_fixture_teardown": ("PASSED", _every("pass", "pass"), None),
}
# Printed in the failure of these tests (what the user reads).
FAILURE_TEXT = {
    "test_fallback_fail_policy": "check(s) failed: trace-dict/fp32 fallback",
    "test_fallback_expect_but_traced": "fallback expected but tracing succeeded (unexpected pass)",
    "test_fallback_warning_under_filterwarnings_error": "fell back to eager",
    "test_raises_in_forward": "eager/fp32 error",
}
NOTES = {
    "test_train_mode_is_restored": "model was in training mode; it was checked in eval mode",
    "test_returns_nan": "the eager output has non-finite values",
    "test_returns_empty_tensor": "the eager output has no elements",
    "test_returns_none": "the eager output holds no tensor",
    "test_returns_string": "the eager output holds no tensor",
    "test_returns_int": "the eager output holds no tensor",
}


def _case_problems(name: str, got: dict[str, str], records: dict[str, list[dict]], out: str) -> list[str]:
    """What is wrong with one case's verdict (empty: the case is handled)."""
    problems: list[str] = []
    if name in SETUP_ERRORS or name in USAGE_FAILURES:
        want = "ERROR" if name in SETUP_ERRORS else "FAILED"
        message = SETUP_ERRORS.get(name) or USAGE_FAILURES[name]
        if got.get(name) != want:
            problems.append(f"outcome {got.get(name)}, expected {want}")
        if message not in out:
            problems.append(f"message {message!r} not in the output")
        if name in records:
            problems.append(f"a usage error made {len(records[name])} records")
        return problems
    outcome, statuses, reason = RESULTS[name]
    if got.get(name) != outcome:
        problems.append(f"outcome {got.get(name)}, expected {outcome}")
    recs = records.get(name, [])
    seen = {(r["mode"], r["dtype"]): r["status"] for r in recs}
    if len(recs) != len(ALL) * len(DTYPES) * (2 if name == "test_two_checks_of_one_class_keep_both_records" else 1):
        problems.append(f"{len(recs)} records, expected one per mode x dtype")
    if statuses is not None and seen != statuses:
        problems.append(f"statuses {seen}, expected {statuses}")
    if reason and not any(reason in (r["reason"] or "") for r in recs):
        problems.append(f"no record's reason has {reason!r}: {[r['reason'] for r in recs]}")
    note = NOTES.get(name)
    if note and not any(note in n for r in recs for n in r["notes"]):
        problems.append(f"no record's notes have {note!r}: {[r['notes'] for r in recs][:1]}")
    if name in FAILURE_TEXT and FAILURE_TEXT[name] not in out:
        problems.append(f"{FAILURE_TEXT[name]!r} not in the output")
    return problems


RESULTS["test_two_checks_of_one_class_keep_both_records"] = ("PASSED", None, None)
PLUGIN_CASES = [*SETUP_ERRORS, *USAGE_FAILURES, *RESULTS]


def test_plugin_side_cases_each_get_a_clear_verdict(jitcpu_pytester: pytest.Pytester) -> None:
    """One run of the inner suite; every case is checked and all problems are reported together."""
    jitcpu_pytester.makepyfile(test_odd=SUITE)
    result = run(
        jitcpu_pytester,
        "-rA",
        "--jitcpu-modes=eager,trace-dict,trace-tuple",
        "--jitcpu-dtypes=fp32,bf16",
        "--jitcpu-report=report.json",
    )
    got = outcomes(result)
    out = result.stdout.str()
    report = load_json(jitcpu_pytester.path / "report.json")
    assert schema_errors(report) == []
    records = records_by_test(report)
    problems = {name: p for name in PLUGIN_CASES if (p := _case_problems(name, got, records, out))}
    assert got.get("test_plain_test_runs") == "PASSED"
    assert len(got) == len(PLUGIN_CASES) + 1, sorted(set(got) ^ {*PLUGIN_CASES, "test_plain_test_runs"})
    assert not problems, json.dumps(problems, indent=1)
    # No failure shows a traceback from inside torch: usage errors and verdicts are one message each.
    result.stdout.no_fnmatch_line("*site-packages/torch/*")
    result.stdout.no_fnmatch_line("*During handling of the above exception*")
    assert report["summary"] == {s: sum(r["status"] == s for r in report["results"]) for s in report["summary"]}


# --- command line side -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return encoder(tmp_path_factory.mktemp("bad-cli") / "st")


def _write(path: Path, data: str | bytes) -> Path:
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data, encoding="utf-8")
    return path


TEXT = "\n".join(SENTENCES[:4]) + "\n"
JSONL_BAD_LINE = '{"text": "a cat"}\n{"text": "unterminated\n{"text": "a dog", "id": 7}\n'
# (input file name, its bytes, extra flags, exit code, message in stderr, rows expected in the output or None)
CLI_CASES: dict[str, tuple[str, str | bytes, list[str], int, str, int | None]] = {
    "missing input": ("", "", ["--input", "{dir}/missing.txt"], 2, "--input: {dir}/missing.txt: no such file", None),
    "input is a folder": ("", "", ["--input", "{dir}"], 2, "is a folder, not a file", None),
    "binary input": ("in.txt", bytes(range(256)) * 8, [], 2, "looks like a binary file (a NUL byte", None),
    "json (not jsonl) input": ("in.json", '[{"text": "a"}]', [], 2, "a .json file is read whole", None),
    "empty text file": ("in.txt", "", [], 0, "has no rows; the output is empty", 0),
    "empty jsonl file": ("in.jsonl", "", [], 0, "has no rows; the output is empty", 0),
    "blank lines only, fail": ("in.txt", "\n\n", [], 1, "line 1: empty text", None),
    "blank lines only, skip": ("in.txt", "\n \n", ["--on-error", "skip"], 0, "(0 ok, 2 skipped)", 2),
    "malformed jsonl line, fail": ("in.jsonl", JSONL_BAD_LINE, [], 1, "line 2: malformed JSON", None),
    "malformed jsonl line, skip": ("in.jsonl", JSONL_BAD_LINE, ["--on-error", "skip"], 0, "(2 ok, 1 skipped)", 3),
    "jsonl line not an object": ("in.jsonl", '["a list"]\n', [], 1, "line 1: expected a JSON object, got list", None),
    "jsonl without text field": ("in.jsonl", '{"body": "x"}\n', [], 1, "line 1: no 'text' field", None),
    "jsonl text not a string": ("in.jsonl", '{"text": 42}\n', [], 1, "'text' must be a string, got int", None),
    "invalid utf-8 line, fail": ("in.txt", b"a cat\n\xff\xfe dog\n", [], 1, "line 2: not valid UTF-8 (byte 0xff", None),
    "invalid utf-8 line, skip": ("in.txt", b"a cat\n\xff dog\n", ["--on-error", "skip"], 0, "(1 ok, 1 skipped)", 2),
    "utf-8 BOM csv (Excel)": ("in.csv", "\ufefftext,id\na cat,1\na dog,2\n", [], 0, "(2 ok)", 2),
    "utf-8 BOM jsonl": ("in.jsonl", '\ufeff{"text": "a cat"}\n', [], 0, "(1 ok)", 1),
    "crlf line endings": ("in.txt", "a cat\r\na dog\r\n", [], 0, "(2 ok)", 2),
    "csv without text column": (
        "in.csv",
        "body,id\nx,1\n",
        [],
        2,
        "no 'text' column in the header (columns: body, id)",
        None,
    ),
    "empty csv": ("in.csv", "", [], 2, "no 'text' column in the header (columns: none (empty file?))", None),
    "csv short row": ("in.csv", "id,text\n1\n2,a dog\n", ["--on-error", "skip"], 0, "expected 2 fields, got 1", 2),
    "unknown input format": ("in.txt", TEXT, ["--input-format", "xml"], 2, "invalid choice: 'xml'", None),
    "unknown task": ("in.txt", TEXT, ["--task", "translation"], 2, "unknown task 'translation'", None),
    "threads 0": ("in.txt", TEXT, ["--threads", "0"], 2, "--threads: '0' must be >= 1", None),
    "threads not a number": ("in.txt", TEXT, ["--threads", "two"], 2, "--threads: 'two' is not an integer", None),
    "batch size negative": ("in.txt", TEXT, ["--batch-size", "-1"], 2, "'-1' must be >= 1", None),
    "batch size fractional": ("in.txt", TEXT, ["--batch-size", "1.5"], 2, "'1.5' is not an integer", None),
    "max seq length 0": ("in.txt", TEXT, ["--max-seq-length", "0"], 2, "'0' must be >= 1", None),
    "unknown mode": ("in.txt", TEXT, ["--mode", "fast"], 2, "invalid choice: 'fast'", None),
    "unknown dtype": ("in.txt", TEXT, ["--dtype", "fp16"], 2, "invalid choice: 'fp16'", None),
    "unknown on-error": ("in.txt", TEXT, ["--on-error", "ignore"], 2, "invalid choice: 'ignore'", None),
    "unknown candidate": (
        "in.txt",
        TEXT,
        ["--mode", "auto", "--candidates", "eager,warp"],
        2,
        "unknown mode 'warp'",
        None,
    ),
    "dtype auto without mode auto": ("in.txt", TEXT, ["--dtype", "auto"], 2, "--dtype auto needs --mode auto", None),
    "mode contradicts guide flag": ("in.txt", TEXT, ["--use_ipex"], 2, "--mode eager contradicts --use_ipex", None),
    "output is the input": ("in.txt", TEXT, ["--output", "{dir}/in.txt"], 2, "is the input file", None),
    "output is a folder": ("in.txt", TEXT, ["--output", "{dir}"], 2, "it is a directory", None),
    "output parent is a file": ("in.txt", TEXT, ["--output", "{dir}/in.txt/o.jsonl"], 2, "is not a directory", None),
    "summary is the output": ("in.txt", TEXT, ["--summary", "{dir}/o.jsonl"], 2, "is the same file as --output", None),
    "model folder missing": ("in.txt", TEXT, ["--model_name_or_path", "{dir}/nope"], 2, "is not a local folder", None),
    "model folder empty": (
        "in.txt",
        TEXT,
        ["--model_name_or_path", "{dir}/empty-model"],
        2,
        "not a model folder (no config.json)",
        None,
    ),
    "model folder corrupt config": (
        "in.txt",
        TEXT,
        ["--model_name_or_path", "{dir}/bad-config"],
        2,
        "config.json is not valid JSON",
        None,
    ),
    "model folder without weights": (
        "in.txt",
        TEXT,
        ["--model_name_or_path", "{dir}/no-weights"],
        2,
        "cannot load a feature-extraction model",
        None,
    ),
    "model folder without tokenizer": (
        "in.txt",
        TEXT,
        ["--model_name_or_path", "{dir}/no-tokenizer"],
        2,
        "save the model's tokenizer",
        None,
    ),
    "two models given": ("in.txt", TEXT, ["--model_name_or_path", "{dir}/other"], 2, "two models given", None),
}


def _model_variants(model: Path, folder: Path) -> None:
    """Broken copies of the tiny model folder, for the model-folder cases."""
    import shutil

    (folder / "empty-model").mkdir()
    bad = folder / "bad-config"
    shutil.copytree(model, bad)
    (bad / "config.json").write_text("{not json", encoding="utf-8")
    no_weights = folder / "no-weights"
    shutil.copytree(model, no_weights)
    for weights in no_weights.glob("*.safetensors"):
        weights.unlink()
    no_tokenizer = folder / "no-tokenizer"
    shutil.copytree(model, no_tokenizer)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        (no_tokenizer / name).unlink(missing_ok=True)


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_cli_case(case: str, model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    name, data, extra, code, message, rows = CLI_CASES[case]
    fill = {"dir": str(tmp_path)}
    if "model folder" in case:
        _model_variants(model_dir, tmp_path)
    source = _write(tmp_path / name, data) if name else None
    before = source.read_bytes() if source else None
    out = tmp_path / "o.jsonl"
    argv = ["run"] + ([] if "--model_name_or_path" in extra and case != "two models given" else [str(model_dir)])
    if source:
        argv += ["--input", str(source)]
    argv += ["--output", str(out), "--mode", "eager", *(a.format(**fill) for a in extra)]
    if "--output" in extra:  # the case's own --output wins (argparse keeps the last)
        out = Path(extra[extra.index("--output") + 1].format(**fill))
    try:
        got = main(argv)
    except SystemExit as exc:  # argparse's usage errors
        got = exc.code
    err = capsys.readouterr().err
    assert got == code, err
    assert message.format(**fill) in err, err
    assert "Traceback" not in err
    if source:
        assert source.read_bytes() == before, "the input file changed"
    leftovers = [p.name for p in tmp_path.rglob(".*.part")]
    assert leftovers == [], leftovers
    if rows is None:
        assert not out.is_file() or out == source, "a refused or failed run left an output file"
    else:
        lines = out.read_text(encoding="utf-8").splitlines()
        assert len(lines) == rows, lines  # one object per input row, nothing lost or repeated
        assert all(json.loads(line) for line in lines) or rows == 0


def _slow_run(model_dir: Path, tmp_path: Path) -> tuple[list[str], Path, Path]:
    """A run long enough to interrupt: many rows, one row a batch."""
    source = _write(tmp_path / "in.txt", "\n".join(SENTENCES * 400) + "\n")
    out = tmp_path / "o.jsonl"
    out.write_text("previous output\n", encoding="utf-8")
    argv = [sys.executable, "-m", "pytest_jitcpu.cli", "run", str(model_dir), "--input", str(source)]
    argv += ["--output", str(out), "--mode", "eager", "--batch-size", "1"]
    return argv, source, out


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupted_run_keeps_the_previous_output_and_leaves_no_temp_file(
    sig: signal.Signals, model_dir: Path, tmp_path: Path
) -> None:
    argv, source, out = _slow_run(model_dir, tmp_path)
    before = source.read_bytes()
    # A child inherits an ignored SIGINT (xdist workers ignore it) and Python then leaves it ignored:
    # give the child the disposition of a terminal's foreground process.
    with subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint) as proc:  # noqa: PLW1509
        assert proc.stderr is not None
        for line in proc.stderr:  # interrupt once rows are being written, not during imports
            if "jitcpu: running eager/fp32" in line:
                break
        time.sleep(0.3)
        proc.send_signal(sig)
        err = proc.stderr.read()
        code = proc.wait(timeout=120)
    assert code == 130, err
    assert "jitcpu run: interrupted; no output written" in err and "Traceback" not in err
    assert out.read_text(encoding="utf-8") == "previous output\n"  # never half a new file
    assert source.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize(
    ("argv", "message", "torch_free"),
    [
        (["run", "--input", "in.txt"], "the following arguments are required: --output", True),
        (["frobnicate"], "invalid choice: 'frobnicate'", True),
        ([], "the following arguments are required: {check,run}", True),
        (["run", "--input", "a", "--output", "b", "--threads", "x"], "--threads: 'x' is not an integer", True),
        (["check", "--report", "r.txt"], "--report: 'r.txt' must end in .json or .md", True),
        (["check", "--report", "/dev/null/r.json"], "--report: cannot write '/dev/null/r.json'", True),
        (["check", "--input", "missing.txt"], "--input: missing.txt: no such file", False),
    ],
)
def test_console_script_usage_errors_are_one_line(
    argv: list[str], message: str, torch_free: bool, tmp_path: Path
) -> None:
    """``jitcpu`` as a user types it (a process running the console script's module): exit 2, one clear
    line, no traceback; a bad flag is refused before torch is even imported (a fraction of a second, not
    a model load)."""
    probe = (
        "import runpy, sys\n"
        "sys.argv = ['jitcpu', *sys.argv[1:]]\n"
        "try:\n"
        "    runpy.run_module('pytest_jitcpu.cli', run_name='__main__')\n"
        "finally:\n"
        "    print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', file=sys.stderr)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe, *argv], cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    if torch_free:
        assert proc.stderr.strip().endswith("NO-TORCH"), proc.stderr


def test_python_api_refuses_an_output_that_is_the_input(model_dir: Path, tmp_path: Path) -> None:
    """The Python API guards the input like the command line (it has no argparse in front of it)."""
    from pytest_jitcpu import inference
    from pytest_jitcpu.settings import UsageError

    source = _write(tmp_path / "in.txt", TEXT)
    before = source.read_bytes()
    link = tmp_path / "link.jsonl"
    os.symlink(source, link)
    for output in (source, link, tmp_path / "." / "in.txt"):
        with pytest.raises(UsageError, match="is the input file"):
            inference.run(str(model_dir), input=source, output=output, mode="eager", log=False)
        assert source.read_bytes() == before
