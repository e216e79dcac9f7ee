"""A pass must say what it rests on (issue 9): the ``untested`` verdict in records, terminal, Markdown and
summary, ``--jitcpu-untested=warn|fail``, the baseline gate, and a test suite's own input factory
(``generate=``, once per module through ``pytestmark``), run as a user runs pytest."""

from __future__ import annotations

import pytest
from plugin_runs import load_json, outcomes, records_by_test, run, schema_errors

from pytest_jitcpu.record import Record
from pytest_jitcpu.reports import model, terminal

SEARCH = ("--jitcpu-examples=10", "--jitcpu-serialize=false", "-rA")  # after FAST's examples=0: these win

SUITE = """
import os

import pytest
import tiny_models as tm

pytestmark = pytest.mark.jitcpu(modes=["eager", "trace-dict"], dtypes=["fp32"])


def only_the_example(jitcpu):
    x = tm.features(batch=2)
    model = tm.OnlyTheExample(x) if os.environ.get("ONLY_EXAMPLE", "1") == "1" else tm.TinyMLP()
    return jitcpu.check(model.eval(), (x,), name="Net")


def test_untested(jitcpu):
    result = only_the_example(jitcpu)
    assert [r.mode for r in result.untested] == (["trace-dict"] if os.environ.get("ONLY_EXAMPLE", "1") == "1" else [])


def test_tested(jitcpu):
    jitcpu.check(tm.CoupledImageText().eval(), tm.coupled_batch())


@pytest.mark.jitcpu(untested="fail")
def test_untested_marker_fails(jitcpu):
    only_the_example(jitcpu)


@pytest.mark.jitcpu(untested="warn")
def test_untested_marker_warns(jitcpu):
    only_the_example(jitcpu)
"""


def test_untested_passes_are_marked_counted_and_warn(jitcpu_pytester: pytest.Pytester) -> None:
    jitcpu_pytester.makepyfile(test_suite=SUITE)
    result = run(jitcpu_pytester, *SEARCH, "--jitcpu-report=out/r.json", "--jitcpu-report=out/r.md")
    assert outcomes(result) == {
        "test_untested": "PASSED",
        "test_tested": "PASSED",
        "test_untested_marker_fails": "FAILED",
        "test_untested_marker_warns": "PASSED",
    }
    result.stdout.fnmatch_lines(["jitcpu: Net: 1 check(s) failed: trace-dict/fp32 untested pass"])
    result.stdout.fnmatch_lines(
        [
            "*JitcpuUntestedWarning: jitcpu: Net trace-dict/fp32 passed on the example only, untested on any other "
            "input (eager rejected every input tried (* variations of the example and 20 generated inputs)); "
            "hand valid inputs over with generate=",
        ]
    )
    # The terminal matrix marks them, explains the mark and counts them apart.
    result.stdout.fnmatch_lines(
        [
            "*jitcpu compatibility matrix*",
            "test_tested ?CoupledImageText?  *pass  *pass",
            "test_untested ?Net?  *pass  *pass?",
            "pass? = untested: matched on the example, but no other valid input could be tried",
            "8 pass (3 untested) (8 checks)",
        ]
    )
    data = load_json(jitcpu_pytester.path / "out" / "r.json")
    assert schema_errors(data) == []
    assert data["summary"]["pass"] == 8 and data["summary"]["untested"] == 3
    by_test = records_by_test(data)
    untested = by_test["test_untested"][1]["generalization"]
    assert untested["verdict"] == "untested" and untested["matched"] == 0 and untested["tried"] >= 20
    assert untested["why_none"].startswith("eager rejected every input tried")
    tested = by_test["test_tested"][1]["generalization"]
    assert tested["verdict"] == "tested" and tested["matched"] >= 6 and "batch-1" in tested["kinds"]
    assert by_test["test_tested"][0]["generalization"] is None  # eager is the reference, not searched
    md = (jitcpu_pytester.path / "out" / "r.md").read_text(encoding="utf-8").splitlines()
    assert (
        "**pass** 8 (3 untested) | **mismatch** 0 | **diverges** 0 | **fallback** 0 | **unavailable** 0 | **error** 0"
        in md
    )
    assert "⚠️ **no model failing**, 3 untested on other inputs, 1 passing (8 checks)" in md
    assert any("| `test_suite.py::test_untested` | Net | 1 untested | pass | **pass?** (" in line for line in md), md
    assert "### Untested passes (pass?: matched on the example only)" in md
    assert any(
        line.startswith("| `test_suite.py::test_untested` | Net | trace-dict | fp32 | eager rejected") for line in md
    )


def test_untested_fail_policy_and_filterwarnings_error(jitcpu_pytester: pytest.Pytester) -> None:
    jitcpu_pytester.makepyfile(test_suite=SUITE)
    result = run(jitcpu_pytester, *SEARCH, "--jitcpu-untested=fail", "-k", "untested")
    assert outcomes(result) == {
        "test_untested": "FAILED",
        "test_untested_marker_fails": "FAILED",
        "test_untested_marker_warns": "PASSED",
    }  # the marker wins over the flag
    result.stdout.fnmatch_lines(["*jitcpu: modes=* untested=fail"])
    # A user's filterwarnings = error turns the warning into that test's failure, nothing worse.
    jitcpu_pytester.makeini("[pytest]\nfilterwarnings = error\n")
    result = run(jitcpu_pytester, *SEARCH, "-k", "test_tested or test_untested and not marker")
    assert outcomes(result) == {"test_untested": "FAILED", "test_tested": "PASSED"}
    result.stdout.fnmatch_lines(["*JitcpuUntestedWarning: jitcpu: Net trace-dict/fp32 passed on the example only*"])


def test_baseline_gate_fails_a_pass_that_became_untested(jitcpu_pytester: pytest.Pytester, monkeypatch) -> None:
    jitcpu_pytester.makepyfile(test_suite=SUITE)
    monkeypatch.setenv("ONLY_EXAMPLE", "0")
    first = run(jitcpu_pytester, *SEARCH, "-k", "test_untested and not marker", "--jitcpu-report=base.json")
    assert first.ret == 0
    monkeypatch.setenv("ONLY_EXAMPLE", "1")
    second = run(jitcpu_pytester, *SEARCH, "-k", "test_untested and not marker", "--jitcpu-baseline=base.json")
    assert outcomes(second) == {"test_untested": "PASSED"} and second.ret == 1
    second.stdout.fnmatch_lines(
        [
            "*jitcpu baseline gate*",
            "REGRESSION: test_suite.py::test_untested [[]Net[]] trace-dict/fp32: pass -> pass (untested) (no longer "
            "tested on other inputs: eager rejected every input tried*",
        ]
    )


FACTORY_SUITE = """
import json
import os
from pathlib import Path

import pytest
import tiny_models as tm

# in a file, not a list: with isolation the factory runs in the check's forked child (one file per xdist worker)
CALLS_FILE = Path(__file__).with_name("calls-" + os.environ.get("PYTEST_XDIST_WORKER", "main") + ".jsonl")


def calls():
    lines = CALLS_FILE.read_text(encoding="utf-8").splitlines() if CALLS_FILE.exists() else []
    return [tuple(json.loads(line)) for line in lines]


class TinyTester:
    '''Like a transformers ModelTester: sizes in, a config and an inputs dict out.'''

    def __init__(self, batch_size=2, seq_length=8, patches=3):
        if seq_length < patches:
            raise ValueError("seq_length must leave room for the image tokens")
        self.batch_size, self.seq_length, self.patches = batch_size, seq_length, patches

    def prepare_config_and_inputs_for_common(self):
        with open(CALLS_FILE, "a", encoding="utf-8") as f:
            f.write(json.dumps([self.batch_size, self.seq_length]) + "\\n")
        return {"patches": self.patches}, tm.coupled_batch(self.batch_size, self.seq_length, self.patches)


def inputs(batch_size, seq_length):
    return TinyTester(batch_size=batch_size, seq_length=seq_length).prepare_config_and_inputs_for_common()[1]


pytestmark = pytest.mark.jitcpu(generate=inputs, modes=["eager", "trace-dict"], dtypes=["fp32"])


def test_factory_finds_the_baked_batch(jitcpu):
    jitcpu.check(tm.CoupledImageText(bake_batch=True).eval(), tm.coupled_batch())


@pytest.mark.jitcpu(modes=["eager", "trace-tuple"])
def test_factory_tests_a_good_model(jitcpu):
    result = jitcpu.check(tm.CoupledImageText().eval(), tm.coupled_batch())
    rec = result.record("trace-tuple")
    assert rec.generalization["kinds"] == ["generate="] and rec.generalization["matched"] >= 5
    assert {b for b, _ in calls()} >= {1, 2, 3} and min(s for _, s in calls()) >= 3
    assert [(r.mode, r.dtype) for r in result] == [("eager", "fp32"), ("trace-tuple", "fp32")]  # merged marks


@pytest.mark.jitcpu(generate=[tm.coupled_batch(batch=1), tm.coupled_batch(batch=4)])
def test_own_generate_wins(jitcpu):
    before = len(calls())
    rec = jitcpu.check(tm.CoupledImageText().eval(), tm.coupled_batch()).record("trace-dict")
    assert len(calls()) == before and rec.generalization["matched"] == 2


@pytest.mark.jitcpu(generate=lambda batch_size: 1 / 0)
def test_factory_that_builds_nothing(jitcpu):
    rec = jitcpu.check(tm.CoupledImageText().eval(), tm.coupled_batch()).record("trace-dict")
    assert rec.untested


def test_without_jitcpu():
    assert True
"""


def test_a_module_names_its_input_factory_once(jitcpu_pytester: pytest.Pytester) -> None:
    jitcpu_pytester.makepyfile(test_factory=FACTORY_SUITE)
    result = run(jitcpu_pytester, *SEARCH, "--jitcpu-report=out/r.json")
    assert outcomes(result) == {
        "test_factory_finds_the_baked_batch": "FAILED",
        "test_factory_tests_a_good_model": "PASSED",
        "test_own_generate_wins": "PASSED",
        "test_factory_that_builds_nothing": "PASSED",
        "test_without_jitcpu": "PASSED",
    }
    result.stdout.no_fnmatch_line("*never called*")  # the module's mark is no promise that every test checks
    result.stdout.fnmatch_lines(
        [
            "*JitcpuUntestedWarning: jitcpu: CoupledImageText trace-dict/fp32 passed on the example only, untested "
            "on any other input (generate= could build no input: generate(batch_size=*) raised ZeroDivisionError*"
        ]
    )
    by_test = records_by_test(load_json(jitcpu_pytester.path / "out" / "r.json"))
    baked = {(r["mode"], r["dtype"]): r for r in by_test["test_factory_finds_the_baked_batch"]}
    assert set(baked) == {("eager", "fp32"), ("trace-dict", "fp32")}
    rec = baked[("trace-dict", "fp32")]
    assert rec["status"] == "diverges", rec
    assert rec["generalization"]["diverged_on"] == "generate=" and "generated input" in rec["reason"]
    assert not rec["counterexample"].startswith("input_ids=int64[2,"), rec["counterexample"]  # not batch 2


def _untested(mode: str = "trace-dict") -> Record:
    return Record(
        nodeid="t.py::t",
        model="M",
        mode=mode,
        dtype="fp32",
        status="pass",
        max_abs_diff=0.0,
        generalization={
            "verdict": "untested",
            "tried": 4,
            "matched": 0,
            "rejected_by_eager": 4,
            "kinds": [],
            "why_none": "eager rejected every input tried (4 variations of the example)",
            "diverged_on": None,
        },
    )


def test_untested_in_the_short_line_and_the_verbose_matrix() -> None:
    rec = _untested()
    assert rec.untested and rec.short() == (
        "pass (untested: eager rejected every input tried (4 variations of the example)) max_abs=0"
    )
    lines = terminal.terminal_matrix([rec], verbose=True)
    assert (
        lines[-1]
        == "t.py::t [M] trace-dict/fp32: untested: eager rejected every input tried (4 variations of the example)"
    )
    # Only a pass can be untested: a failing status says what it is.
    failed = Record(**{**rec.__dict__, "status": "mismatch", "reason": "differs"})
    assert not failed.untested and model.summary([failed])["untested"] == 0
