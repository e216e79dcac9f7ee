"""The baseline gate (issue 4): ``--jitcpu-baseline=PATH`` fails the session when a check got worse than
in a previous JSON report, passes on no change, and lists improvements, environment changes, new and
missing checks. Also: the same run twice gives the same statuses and counterexamples.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from plugin_runs import load_json, outcomes, run, run_inprocess, schema_errors, without_timing

from pytest_jitcpu.record import Record
from pytest_jitcpu.reports import baseline
from pytest_jitcpu.settings import UsageError


def rec(mode: str = "trace-dict", status: str = "pass", **fields: Any) -> Record:
    return Record(nodeid="tests/test_m.py::test_m", model="M", mode=mode, dtype="fp32", status=status, **fields)


def test_status_ranks() -> None:
    before = [
        rec("eager"),
        rec("trace-dict"),
        rec("trace-tuple", "fallback"),
        rec("ipex"),
        rec("export", "mismatch"),
        rec("compile", "diverges"),
    ]
    after = [
        rec("eager"),
        rec("trace-dict", "diverges", reason="differs", counterexample="x=float32[1, 1] [[0.5]]"),
        rec("trace-tuple", "pass"),
        rec("ipex", "unavailable", reason="no IPEX"),
        rec("export", "diverges"),
        rec("compile", "error"),
    ]
    outcome = baseline.compare(before, after, "base.json")
    kinds = {c.mode: c.kind for c in outcome.changes}
    assert kinds == {
        "trace-dict": "regression",
        "trace-tuple": "improvement",
        "ipex": "environment",
        "export": "changed",
        "compile": "changed",
    }
    assert outcome.failed and outcome.compared == 6
    regression = outcome.of("regression")[0]
    assert regression.line() == (
        "REGRESSION: tests/test_m.py::test_m [M] trace-dict/fp32: pass -> diverges "
        "(differs; counterexample: x=float32[1, 1] [[0.5]])"
    )
    assert outcome.lines[0].startswith("1 regression, 1 improvement, 1 environment change, 2 other changes")
    assert outcome.lines[-1] == "jitcpu baseline gate FAILED: a check got worse than in the baseline"


def test_pass_to_fallback_is_a_regression_and_unavailable_is_not() -> None:
    assert baseline.compare([rec()], [rec(status="fallback")]).failed
    assert not baseline.compare([rec()], [rec(status="unavailable")]).failed
    assert not baseline.compare([rec(status="unavailable")], [rec(status="mismatch")]).failed


def test_no_change_and_new_and_missing_checks() -> None:
    outcome = baseline.compare([rec("eager"), rec("trace-tuple")], [rec("eager"), rec("trace-dict")], "b.json")
    assert not outcome.failed
    assert [(c.kind, c.mode) for c in outcome.changes] == [("new", "trace-dict"), ("missing", "trace-tuple")]
    assert outcome.headline == "no regressions, 1 new check, 1 missing check against b.json (1 checks compared)"
    same = baseline.compare([rec("eager"), rec()], [rec("eager"), rec()], "b.json")
    assert same.lines == ["no regressions against b.json (2 checks compared)"]


def test_diff_growing_past_the_baseline_tolerance_is_a_regression() -> None:
    was = rec(max_abs_diff=1e-7, atol=1e-5)
    assert not baseline.compare([was], [rec(max_abs_diff=5e-6, atol=1e-5)]).failed  # grew, within tolerance
    looser = rec(max_abs_diff=3e-3, atol=1e-2)  # someone loosened atol to keep it passing
    outcome = baseline.compare([was], [looser])
    assert outcome.failed
    assert "max abs diff grew from 1e-07 to 0.003, past the baseline's atol 1e-05" in outcome.changes[0].detail


def test_losing_serializability_is_a_regression() -> None:
    outcome = baseline.compare([rec(serializable=True)], [rec(serializable=False, serializable_reason="no op")])
    assert outcome.failed and "no longer serializable: no op" in outcome.changes[0].detail
    assert baseline.compare([rec(serializable=False)], [rec(serializable=True)]).of("improvement")


def _searched(verdict: str) -> dict[str, Any]:
    why = "eager rejected every input tried (9 variations of the example)" if verdict == "untested" else None
    return {
        "verdict": verdict,
        "tried": 9,
        "matched": 0 if why else 9,
        "rejected_by_eager": 9 if why else 0,
        "kinds": [] if why else ["batch-1"],
        "why_none": why,
        "diverged_on": None,
    }


def test_a_pass_that_is_no_longer_tested_on_other_inputs_is_a_regression() -> None:
    tested, untested = rec(generalization=_searched("tested")), rec(generalization=_searched("untested"))
    outcome = baseline.compare([tested], [untested], "b.json")
    assert outcome.failed
    (change,) = outcome.changes
    assert change.line() == (
        "REGRESSION: tests/test_m.py::test_m [M] trace-dict/fp32: pass -> pass (untested) (no longer tested on "
        "other inputs: eager rejected every input tried (9 variations of the example))"
    )
    back = baseline.compare([untested], [tested])
    assert not back.failed and [c.kind for c in back.changes] == ["improvement"]
    # Untested both times, or the search turned off (examples=0) this time: not a regression.
    assert not baseline.compare([untested], [untested]).changes
    assert not baseline.compare([tested], [rec(generalization=_searched("off"))]).failed
    # A baseline from before the field existed: nothing to compare the verdict with.
    assert not baseline.compare([rec()], [untested]).failed


def test_markdown_and_json() -> None:
    outcome = baseline.compare([rec()], [rec(status="mismatch", reason="a | b")], "base.json")
    md = outcome.markdown
    assert md.startswith("### Against the baseline\n\n`base.json`: 1 regression.")
    assert "| **regression** | `tests/test_m.py::test_m` | M | trace-dict | fp32 | pass | mismatch | a \\| b |" in md
    data = outcome.to_json()
    assert data["failed"] is True and data["compared"] == 1
    assert data["regressions"][0]["before"] == "pass" and data["regressions"][0]["after"] == "mismatch"
    json.dumps(data, allow_nan=False)


def test_read_rejects_missing_and_foreign_files(tmp_path: Any) -> None:
    with pytest.raises(UsageError, match="no such file"):
        baseline.read(tmp_path / "nope.json")
    (tmp_path / "other.json").write_text('{"schema": "something-else"}', encoding="utf-8")
    with pytest.raises(UsageError, match="not a jitcpu JSON report"):
        baseline.read(tmp_path / "other.json")
    (tmp_path / "broken.json").write_text("{", encoding="utf-8")
    with pytest.raises(UsageError, match="not a jitcpu JSON report"):
        baseline.read(tmp_path / "broken.json")
    outcome = baseline.gate(tmp_path / "nope.json", [rec()])
    assert outcome.failed and outcome.lines[0].startswith("cannot compare with the baseline: --jitcpu-baseline:")


# --- as a user runs it in CI ------------------------------------------------------------------------------

GATED_TESTS = """
import os

import pytest
import torch
from torch import nn

import tiny_models as tm


class Untraceable(nn.Module):
    def forward(self, x):
        return x.tolist()  # a Python list of floats: torch.jit.trace cannot return it


class ShapeToInt(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(20, 4)

    def forward(self, input_ids):
        return self.embed(input_ids).sum(dim=1) / int(input_ids.shape[1])


@pytest.mark.jitcpu(modes=["trace-dict"], dtypes=["fp32"])
def test_mlp(jitcpu):
    model = Untraceable() if os.environ.get("GATE_BREAK_MODEL") else tm.TinyMLP()
    jitcpu.check(model.eval(), (tm.features(),), name="TinyMLP")


@pytest.mark.xfail(reason="a known trace bug, kept in the report", strict=True)
@pytest.mark.jitcpu(modes=["trace-dict"], dtypes=["fp32"])
def test_known_divergence(jitcpu):
    ids = torch.randint(1, 20, (2, 6), generator=torch.Generator().manual_seed(0))
    jitcpu.check(ShapeToInt().eval(), {"input_ids": ids})
"""

GATE_OPTIONS = ("-rA", "--jitcpu-serialize=false")


def test_gate_passes_on_no_change_and_fails_on_a_regression(
    jitcpu_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester = jitcpu_pytester
    pytester.makepyfile(test_gated=GATED_TESTS)
    first = run(pytester, *GATE_OPTIONS, "--jitcpu-report=baseline/jitcpu.json", fast=False)
    assert first.ret == 0, first.stdout.str()
    assert outcomes(first) == {"test_mlp": "PASSED", "test_known_divergence": "XFAIL"}

    gated = (*GATE_OPTIONS, "--jitcpu-baseline=baseline/jitcpu.json")
    same = run(pytester, *gated, "--jitcpu-report=now.json", "--jitcpu-report=now.md", fast=False)
    assert same.ret == 0, same.stdout.str()
    same.stdout.fnmatch_lines(
        ["*jitcpu baseline gate*", "no regressions against baseline/jitcpu.json (4 checks compared)"]
    )
    base, now = load_json(pytester.path / "baseline/jitcpu.json"), load_json(pytester.path / "now.json")
    # Reproducible: the same statuses, counterexamples and reasons as the first run.
    assert without_timing(now) == without_timing(base)
    diverging = [r for r in now["results"] if r["status"] == "diverges"]
    assert len(diverging) == 1 and diverging[0]["counterexample"].startswith("input_ids=int64[1, ")
    assert now["baseline"]["failed"] is False and now["baseline"]["compared"] == 4
    assert schema_errors(now) == []
    md = (pytester.path / "now.md").read_text(encoding="utf-8")
    assert "### Against the baseline" in md and "; counterexample: input_ids=int64[1, " in md

    monkeypatch.setenv("GATE_BREAK_MODEL", "1")
    worse = run(pytester, *gated, "--jitcpu-report=worse.json", fast=False)
    assert worse.ret == 1
    assert outcomes(worse) == {"test_mlp": "PASSED", "test_known_divergence": "XFAIL"}  # only the gate fails
    worse.stdout.fnmatch_lines(
        [
            "*jitcpu baseline gate*",
            "1 regression against baseline/jitcpu.json (4 checks compared)",
            "REGRESSION: test_gated.py::test_mlp ?TinyMLP? trace-dict/fp32: pass -> fallback (*",
            "jitcpu baseline gate FAILED: a check got worse than in the baseline",
        ]
    )
    gate = load_json(pytester.path / "worse.json")["baseline"]
    assert gate["failed"] is True and gate["regressions"][0]["nodeid"] == "test_gated.py::test_mlp"


def test_missing_or_foreign_baseline_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_nothing():\n    pass\n")
    missing = run_inprocess(pytester, "--jitcpu-baseline=absent.json")
    assert missing.ret == pytest.ExitCode.USAGE_ERROR
    missing.stderr.fnmatch_lines(["*--jitcpu-baseline: absent.json: no such file*"])
    pytester.path.joinpath("foreign.json").write_text('{"tests": []}', encoding="utf-8")
    foreign = run_inprocess(pytester, "--jitcpu-baseline=foreign.json")
    assert foreign.ret == pytest.ExitCode.USAGE_ERROR
    foreign.stderr.fnmatch_lines(["*--jitcpu-baseline: foreign.json: not a jitcpu JSON report*"])
