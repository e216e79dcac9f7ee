"""pytest-xdist: ``-n 2`` writes one merged report with the same content as a run without xdist."""

from __future__ import annotations

import pytest
from plugin_runs import load_json, outcomes, run, schema_errors, without_timing

pytest.importorskip("xdist")

SUITE = """
import pytest
import torch

import tiny_models as tm


def test_pass(jitcpu):
    jitcpu.check(tm.TinyText(), tm.text_batch())


def test_mismatch(jitcpu):
    jitcpu.check(tm.TracingDependent(), {"x": tm.features()})


def test_fallback(jitcpu):
    jitcpu.check(tm.PythonObjectOutput(), {"x": tm.features()})


def test_tuple_gap(jitcpu):
    jitcpu.check(tm.Gap(), {"a": tm.features(), "c": tm.features(seed=1)})


def test_error(jitcpu):
    torch.manual_seed(0)  # the reason quotes the diff between two random eager runs
    jitcpu.check(tm.RandomForward(), {"x": tm.features()})


@pytest.mark.jitcpu(dtypes=["fp32", "bf16"], modes=["trace-dict"])
def test_several(jitcpu):
    jitcpu.check(tm.TinyMLP(), {"x": tm.features()})
    jitcpu.check(tm.OrderSensitive(), {"b": tm.features(seed=1), "a": tm.features()})
    jitcpu.check(tm.TinyMLP(), {"x": tm.features(seed=2)})


@pytest.mark.jitcpu
def test_marked_without_check(jitcpu):
    pass


def test_plain():
    pass
"""

OUTCOMES = {
    "test_pass": "PASSED",
    "test_mismatch": "FAILED",
    "test_fallback": "PASSED",
    "test_tuple_gap": "PASSED",
    "test_error": "FAILED",
    "test_several": "PASSED",
    "test_marked_without_check": "PASSED",
    "test_plain": "PASSED",
}


def test_xdist_report_equals_the_serial_report(jitcpu_pytester: pytest.Pytester) -> None:
    jitcpu_pytester.makepyfile(test_suite=SUITE)
    args = ("--jitcpu-dtypes=fp32", "-rA")
    serial = run(jitcpu_pytester, *args, "--jitcpu-report=out/serial.json")
    # -q here (not a third run): the controller prints the counts line alone, once.
    parallel = run(
        jitcpu_pytester, *args, "-n", "2", "-q", "--jitcpu-report=out/parallel.json", "--jitcpu-report=out/p.md"
    )
    assert outcomes(serial) == OUTCOMES
    assert outcomes(parallel) == OUTCOMES
    parallel.stdout.fnmatch_lines(["bringing up nodes..."])

    one = load_json(jitcpu_pytester.path / "out" / "serial.json")
    two = load_json(jitcpu_pytester.path / "out" / "parallel.json")
    assert schema_errors(two) == []
    assert len(two["results"]) == 27
    serial_results, parallel_results = without_timing(one)["results"], without_timing(two)["results"]
    differ = [(a, b) for a, b in zip(serial_results, parallel_results, strict=True) if a != b]
    assert not differ, differ[0]
    assert without_timing(two) == without_timing(one)
    assert {r["model"] for r in two["results"] if r["nodeid"].endswith("test_several")} == {
        "TinyMLP",
        "TinyMLP#2",
        "OrderSensitive",
    }

    # The controller alone reports: one counts line (-q), one line per written report.
    serial.stdout.fnmatch_lines(["*= jitcpu compatibility matrix =*", "test_tuple_gap ?Gap? *pass*pass*fallback"])
    counts = "19 pass, 2 mismatch, 3 fallback, 3 error (27 checks)"
    serial.stdout.fnmatch_lines([counts])
    text = parallel.stdout.str()
    assert text.count(f"jitcpu: {counts}") == 1
    assert "jitcpu compatibility matrix" not in text
    assert text.count("generated jitcpu report: out/parallel.json") == 1
    assert text.count("generated jitcpu report: out/p.md") == 1
    parallel.stdout.fnmatch_lines(["*marked @pytest.mark.jitcpu but jitcpu.check() was never called*"])
    md = (jitcpu_pytester.path / "out" / "p.md").read_text(encoding="utf-8")
    assert sum(line.startswith("| `test_suite.py::") for line in md.splitlines()) >= 8
