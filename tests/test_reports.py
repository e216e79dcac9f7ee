"""Reports as written by a real run: JSON (schema, strict, counts), Markdown, JUnit properties, terminal."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
import zipfile
from collections import Counter
from pathlib import Path

import jsonschema
import pytest
import torch
from plugin_runs import load_json, records_by_test, run, schema_errors

from pytest_jitcpu import reports
from pytest_jitcpu.record import Record
from pytest_jitcpu.reports import json as json_report
from pytest_jitcpu.reports import markdown
from pytest_jitcpu.settings import STATUSES

SUITE = """
import pytest

import tiny_models as tm


@pytest.mark.jitcpu(dtypes=["fp32", "bf16"])
def test_pass(jitcpu):
    jitcpu.check(tm.TinyText(), tm.text_batch())


def test_mismatch(jitcpu):
    jitcpu.check(tm.TracingDependent(), {"x": tm.features()})


def test_infinite_mismatch(jitcpu):
    jitcpu.check(tm.InfWhenTraced(), {"x": tm.features()})


def test_fallback(jitcpu):
    jitcpu.check(tm.Gap(), {"a": tm.features(), "c": tm.features(seed=1)})


def test_error(jitcpu):
    jitcpu.check(tm.RandomForward(), {"x": tm.features()})


@pytest.mark.jitcpu(modes=["trace-tuple"])
def test_two_models(jitcpu):
    jitcpu.check(tm.TinyMLP(), {"x": tm.features()})
    jitcpu.check(tm.TinyMLP(), {"x": tm.features()})


def test_without_jitcpu():
    pass
"""

# (test, model) -> {(mode, dtype): status} for every check the suite makes.
EXPECTED = {
    ("test_pass", "TinyText"): {
        (m, d): "pass" for d in ("fp32", "bf16") for m in ("eager", "trace-dict", "trace-tuple")
    },
    ("test_mismatch", "TracingDependent"): {
        ("eager", "fp32"): "pass",
        ("trace-dict", "fp32"): "mismatch",
        ("trace-tuple", "fp32"): "mismatch",
    },
    ("test_infinite_mismatch", "InfWhenTraced"): {
        ("eager", "fp32"): "pass",
        ("trace-dict", "fp32"): "mismatch",
        ("trace-tuple", "fp32"): "mismatch",
    },
    ("test_fallback", "Gap"): {
        ("eager", "fp32"): "pass",
        ("trace-dict", "fp32"): "pass",
        ("trace-tuple", "fp32"): "fallback",
    },
    ("test_error", "RandomForward"): {
        ("eager", "fp32"): "error",
        ("trace-dict", "fp32"): "error",
        ("trace-tuple", "fp32"): "error",
    },
    ("test_two_models", "TinyMLP"): {("eager", "fp32"): "pass", ("trace-tuple", "fp32"): "pass"},
    ("test_two_models", "TinyMLP#2"): {("eager", "fp32"): "pass", ("trace-tuple", "fp32"): "pass"},
}
CHECKS = sum(len(v) for v in EXPECTED.values())
COUNTS = Counter(status for by_check in EXPECTED.values() for status in by_check.values())
COUNTS_LINE = ", ".join(f"{COUNTS[s]} {s}" for s in STATUSES if COUNTS[s]) + f" ({CHECKS} checks)"


@pytest.fixture
def suite(jitcpu_pytester: pytest.Pytester) -> pytest.Pytester:
    jitcpu_pytester.makepyfile(test_suite=SUITE)
    return jitcpu_pytester


def test_reports_of_a_full_run(suite: pytest.Pytester) -> None:
    result = run(
        suite,
        "--jitcpu-dtypes=fp32",
        "--jitcpu-report=out/nested/dir/report.json",
        "--jitcpu-report=out/report.md",
        "--junitxml=out/junit.xml",
        "-v",
    )
    result.assert_outcomes(passed=4, failed=3, warnings=1)

    # JSON: the contract's schema, strict JSON, one record per check, summary = the records' counts.
    data = load_json(suite.path / "out" / "nested" / "dir" / "report.json")
    assert schema_errors(data) == []
    assert data["schema"] == "jitcpu-report/1"
    assert data["environment"]["torch"] == torch.__version__
    got = {}
    for test, records in records_by_test(data).items():
        for rec in records:
            got.setdefault((test, rec["model"]), {})[(rec["mode"], rec["dtype"])] = rec["status"]
    assert got == EXPECTED
    assert len(data["results"]) == CHECKS
    # The six statuses add up to the records; untested passes (none here: examples=0) are counted apart.
    assert data["summary"] == {**{status: COUNTS.get(status, 0) for status in STATUSES}, "untested": 0}
    assert data["summary"] == {**{s: sum(r["status"] == s for r in data["results"]) for s in STATUSES}, "untested": 0}
    keys = [(r["nodeid"], r["model"], r["mode"], r["dtype"]) for r in data["results"]]
    assert len(set(keys)) == len(keys)
    assert all(r["nodeid"].startswith("test_suite.py::") for r in data["results"])
    infinite = [r for r in data["results"] if r["model"] == "InfWhenTraced" and r["mode"] != "eager"]
    assert all(r["max_abs_diff"] is None and "not representable in JSON" in r["reason"] for r in infinite)

    # Markdown: a CI step summary with counts, the matrix and the reasons of what did not pass.
    md = (suite.path / "out" / "report.md").read_text(encoding="utf-8")
    lines = md.splitlines()
    assert lines[0] == "## pytest-jitcpu compatibility report"
    assert " | ".join(f"**{s}** {COUNTS.get(s, 0)}" for s in STATUSES) in lines
    assert f"❌ **3 of 7 models failing**, 1 falling back, 3 passing ({CHECKS} checks)" in lines
    columns = [f"{m} {d}" for d in ("fp32", "bf16") for m in ("eager", "trace-dict", "trace-tuple")]
    header = "|  | test | model | verdict | " + " | ".join(columns) + " |"
    assert lines.count(header) == 2  # models needing attention, then the passing ones folded
    assert lines[lines.index(header) + 1] == "|---|---|---|---|" + "---|" * len(columns)
    attention = _table_after(lines, "### Needs attention (worst first)")
    # worst first: mismatches (silently wrong), then the reference that failed, then the fallback
    assert [(row[0], row[2]) for row in attention] == [
        ("❌", "InfWhenTraced"),  # ties keep the report's order (by test id)
        ("❌", "TracingDependent"),
        ("❌", "RandomForward"),
        ("⚠️", "Gap"),
    ]
    assert attention[1][3] == "2 mismatch" and attention[1][5] == "**mismatch** (1)"
    assert attention[0][5] == "**mismatch**"  # an infinite difference is null in the records
    assert attention[3][3:7] == ["1 fallback", "pass", "pass (0)", "**fallback**"]
    folded = md[md.index("<details><summary>✅ 3 passing models</summary>") : md.index("</details>")]
    passing = _table_after(folded.splitlines(), "<details><summary>✅ 3 passing models</summary>")
    assert sorted(row[2] for row in passing) == ["TinyMLP", "TinyMLP#2", "TinyText"]
    assert all(row[0] == "✅" for row in passing)
    assert next(row for row in passing if row[2] == "TinyText")[3:6] == ["6 pass", "pass", "pass (0)"]
    assert "### Not passing" in lines
    fallback_row = next(line for line in lines if "| Gap | trace-tuple | fp32 | fallback |" in line)
    assert "'skipped'" in fallback_row
    charts = _mermaid_blocks(md)
    titles = [c[1] for c in charts]
    text = charts[titles.index('    title "TinyText (test_pass): speed-up over eager fp32"')]
    assert text[2] == '    x-axis ["' + '", "'.join(columns) + '"]'  # the matrix's columns, bf16 too
    assert '    title "TinyMLP (test_two_models): speed-up over eager fp32"' in titles
    assert not any("TracingDependent" in t for t in titles)  # only eager passed: nothing to compare

    # JUnit XML: every check as a user property of its test case.
    tree = ET.parse(suite.path / "out" / "junit.xml")
    cases = {case.get("name"): case for case in tree.iter("testcase")}
    for (test, model), by_check in EXPECTED.items():
        props = {p.get("name"): p.get("value") for p in cases[test].iter("property")}
        for (mode, dtype), status in by_check.items():
            assert props[f"jitcpu:{model}:{mode}:{dtype}"].startswith(status), (test, model, mode, dtype)
    assert not list(cases["test_without_jitcpu"].iter("property"))

    # Terminal: the matrix (with reasons under -v), the counts line, where the reports went.
    result.stdout.fnmatch_lines(
        [
            "*= jitcpu compatibility matrix =*",
            "test *eager/fp32*trace-dict/fp32*trace-tuple/fp32*eager/bf16*trace-dict/bf16*trace-tuple/bf16",
            "test_error ?RandomForward? *ERROR*ERROR*ERROR",
            "test_fallback ?Gap? *pass*pass*fallback",
        ]
    )
    result.stdout.fnmatch_lines(["test_two_models ?TinyMLP#2? *pass*pass"])
    result.stdout.fnmatch_lines(
        [
            COUNTS_LINE,
            "test_suite.py::test_error [[]RandomForward[]] eager/fp32: error: eager reference is nondeterministic*",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*generated jitcpu report: out/nested/dir/report.json*",
            "*generated jitcpu report: out/report.md*",
        ]
    )


# --- report functions on records (no run) ------------------------------------------------------------------


def _rec(nodeid: str, model: str, mode: str, dtype: str, status: str, **fields: object) -> Record:
    return Record(nodeid=nodeid, model=model, mode=mode, dtype=dtype, status=status, **fields)


def test_sort_order_does_not_depend_on_arrival_order() -> None:
    records = [
        _rec("b.py::t", "M", "trace-tuple", "bf16", "pass"),
        _rec("a.py::t", "N", "eager", "fp32", "pass"),
        _rec("b.py::t", "M", "eager", "fp32", "pass"),
        _rec("b.py::t", "M", "trace-dict", "fp32", "pass"),
        _rec("a.py::t", "N", "ipex", "fp32", "unavailable", reason="no ipex"),
    ]
    ordered = reports.sort_records(records)
    assert [(r.nodeid, r.mode, r.dtype) for r in ordered] == [
        ("a.py::t", "eager", "fp32"),
        ("a.py::t", "ipex", "fp32"),
        ("b.py::t", "eager", "fp32"),
        ("b.py::t", "trace-dict", "fp32"),
        ("b.py::t", "trace-tuple", "bf16"),
    ]


def test_dumps_refuses_nan_by_writing_null() -> None:
    rec = _rec("a.py::t", "M", "trace-dict", "fp32", "mismatch", max_abs_diff=math.nan, max_rel_diff=math.inf)
    data = json_report.to_json(
        [rec],
        {"python": "3", "torch": "t", "transformers": None, "ipex": None, "cpu": "c", "isa": "avx2", "threads": 1},
    )
    text = json_report.dumps(data)
    assert "NaN" not in text and "Infinity" not in text
    assert schema_errors(json.loads(text)) == []
    loaded = json.loads(text)["results"][0]
    assert loaded["max_abs_diff"] is None and loaded["max_rel_diff"] is None
    assert "max_abs_diff was nan" in loaded["reason"] and "max_rel_diff was inf" in loaded["reason"]


def _table_after(lines: list[str], heading: str) -> list[list[str]]:
    """The body rows (cells stripped) of the first Markdown table after ``heading``."""
    start = lines.index(heading)
    while not lines[start].startswith("|"):
        start += 1
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split(" | ")])
    return rows


def _mermaid_blocks(md: str) -> list[list[str]]:
    """Every ```mermaid block, checked line by line against the xychart-beta syntax this report uses."""
    blocks = []
    for chunk in md.split("```mermaid\n")[1:]:
        body = chunk[: chunk.index("\n```")].splitlines()
        assert body[0] == "xychart-beta"
        assert re.fullmatch(r'    title "[^"]+"', body[1]), body[1]
        labels = re.fullmatch(r'    x-axis \[("[^"]+"(, "[^"]+")*)\]', body[2])
        assert labels, body[2]
        top = re.fullmatch(r'    y-axis "[^"]+" 0 --> (\d+\.\d+)', body[3])
        assert top, body[3]
        bars = re.fullmatch(r"    bar \[(\d+\.\d+(, \d+\.\d+)*)\]", body[4])
        assert bars, body[4]
        values = [float(v) for v in bars.group(1).split(", ")]
        assert len(values) == len(labels.group(1).split(", ")) and max(values) <= float(top.group(1))
        assert len(body) == 5
        blocks.append(body)
    return blocks


def test_markdown_for_200_models_folds_the_passing_ones_and_puts_the_worst_first() -> None:
    records = []
    for i in range(200):
        node = f"tests/test_zoo.py::test_model[{i:03d}]"
        status = {7: "diverges", 42: "mismatch", 150: "fallback", 199: "error"}.get(i, "pass")
        records.append(_rec(node, f"M{i}", "eager", "fp32", "error" if status == "error" else "pass", latency_ms=4.0))
        for mode, latency in (("trace-dict", 2.0), ("trace-tuple", 5.0)):
            got = "pass" if status == "fallback" and mode == "trace-dict" else status
            fields = {"reason": f"because {i}"} if got != "pass" else {}
            records.append(_rec(node, f"M{i}", mode, "fp32", got, latency_ms=latency, max_abs_diff=1e-7, **fields))
    md = markdown.markdown(records, {"cpu": "Test CPU", "isa": "avx2", "threads": 2})
    lines = md.splitlines()
    assert "❌ **3 of 200 models failing**, 1 falling back, 196 passing (600 checks)" in lines
    attention = _table_after(lines, "### Needs attention (worst first)")
    assert [row[2] for row in attention] == ["M42", "M7", "M199", "M150"]
    assert [row[0] for row in attention] == ["❌", "❌", "❌", "⚠️"]
    start = lines.index("<details><summary>✅ 196 passing models</summary>")
    passing = _table_after(lines[start:], lines[start])
    assert len(passing) == 196 and lines[start + 2 + 2 + 196 + 1] == "</details>"
    assert [row[2] for row in passing[:3]] == ["M0", "M1", "M2"]
    charts = _mermaid_blocks(md)
    assert len(charts) == 197  # every model whose eager ran and some other mode passed
    assert charts[0][1] == '    title "M150 (test_model[150]): speed-up over eager fp32"'  # fallback: worst with a pass
    assert charts[0][2:5] == [
        '    x-axis ["eager fp32", "trace-dict fp32"]',
        '    y-axis "speed-up (x, higher is faster)" 0 --> 2.20',
        "    bar [1.00, 2.00]",
    ]
    assert charts[1][4] == "    bar [1.00, 2.00, 0.80]"
    more = md.index("<details><summary>187 more charts</summary>")
    assert md.count("```mermaid", 0, more) == 10


def test_markdown_escapes_pipes_in_reasons() -> None:
    rec = _rec("a.py::t", "M", "trace-dict", "fp32", "fallback", reason="a | b\nc")
    md = markdown.markdown([rec], {})
    assert "| `a.py::t` | M | trace-dict | fp32 | fallback | a \\| b c |" in md.splitlines()


def _g() -> dict:
    """An untested pass's generalization field."""
    return {
        "verdict": "untested",
        "tried": 3,
        "matched": 0,
        "rejected_by_eager": 3,
        "kinds": [],
        "why_none": "eager rejected every input tried",
        "diverged_on": None,
    }


def test_schema_rejects_what_the_contract_forbids() -> None:
    validate = schema_errors
    good = {
        "schema": "jitcpu-report/1",
        "environment": {
            "python": "3",
            "torch": "t",
            "transformers": None,
            "ipex": None,
            "cpu": "c",
            "isa": "a",
            "threads": 1,
        },
        "summary": dict.fromkeys(STATUSES, 0),
        "results": [_rec("a.py::t", "M", "eager", "fp32", "pass").to_json()],
    }
    assert validate(good) == []
    first = good["results"][0]
    assert validate({**good, "results": [{**first, "generalization": _g()}]}) == []
    bad = {
        "status": {**good, "results": [{**first, "status": "ok"}]},
        "no reason": {**good, "results": [{**first, "status": "fallback", "reason": None}]},
        "missing field": {**good, "results": [{k: v for k, v in first.items() if k != "latency_ms"}]},
        "negative diff": {**good, "results": [{**first, "max_abs_diff": -1.0}]},
        "string diff": {**good, "results": [{**first, "max_abs_diff": "0"}]},
        "extra status": {**good, "summary": {**good["summary"], "skipped": 0}},
        "bool count": {**good, "summary": {**good["summary"], "pass": True}},
        "negative untested": {**good, "summary": {**good["summary"], "untested": -1}},
        "untested mismatch": {
            **good,
            "results": [{**first, "status": "mismatch", "reason": "r", "generalization": _g()}],
        },
        "untested without why": {**good, "results": [{**first, "generalization": {**_g(), "why_none": None}}]},
        "unknown verdict": {**good, "results": [{**first, "generalization": {**_g(), "verdict": "maybe"}}]},
        "schema name": {**good, "schema": "other/1"},
        "no environment": {k: v for k, v in good.items() if k != "environment"},
    }
    for what, doc in bad.items():
        assert validate(doc), what
    schema = reports.json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


def test_the_schema_ships_in_the_built_wheel(tmp_path) -> None:
    """A user validates against the file in the installed package, not a copy in the repository."""
    root = Path(__file__).parent.parent
    src = tmp_path / "src"  # a copy: building in the checkout would leave an egg-info beside the package
    shutil.copytree(root / "pytest_jitcpu", src / "pytest_jitcpu", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, src / name)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(src),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("pytest_jitcpu-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        shipped = json.loads(zf.read("pytest_jitcpu/report_schema.json"))
    assert shipped == reports.json_schema()
