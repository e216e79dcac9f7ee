"""pytest-html: a real ``--html`` run; the HTML it wrote is parsed (the summary section and the JSON blob
pytest-html embeds for its rows) to find each test's jitcpu table and the session's matrix."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from plugin_runs import run

pytest.importorskip("pytest_html")  # in the test extra; the plugin itself works without it

SUITE = """
import pytest

import tiny_models as tm


def test_pass(jitcpu):
    jitcpu.check(tm.TinyMLP(), {"x": tm.features()})


def test_mismatch(jitcpu):
    jitcpu.check(tm.TracingDependent(), {"x": tm.features()})


@pytest.fixture
def checked(jitcpu):
    jitcpu.check(tm.Gap(), {"a": tm.features(), "c": tm.features(seed=1)}, name="InSetup")


def test_check_in_a_fixture(checked):
    pass


def test_without_jitcpu():
    pass
"""


class Tables(HTMLParser):
    """Every <table> (rows of cell texts), the <div> class each sits in, and the data-jsonblob attribute."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[tuple[str, list[list[str]]]] = []
        self.blob: str | None = None
        self._divs: list[str] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "div":
            self._divs.append(a.get("class") or "")
            if a.get("id") == "data-container":
                self.blob = a.get("data-jsonblob")
        elif tag == "table":
            where = next((d for d in reversed(self._divs) if d.startswith("jitcpu")), "")
            self.tables.append((where, []))
        elif tag == "tr" and self.tables:
            self.tables[-1][1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "div" and self._divs:
            self._divs.pop()
        elif tag in ("td", "th") and self._cell is not None:
            self.tables[-1][1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def parse(text: str) -> Tables:
    parser = Tables()
    parser.feed(text)
    return parser


def check_tables(blob: dict[str, Any]) -> dict[str, list[list[list[str]]]]:
    """Test id -> the jitcpu tables among its rows' html extras."""
    found: dict[str, list[list[list[str]]]] = {}
    for nodeid, rows in blob["tests"].items():
        for row in rows:
            for extra in row.get("extras", []):
                if extra["format_type"] == "html" and 'class="jitcpu-check"' in extra["content"]:
                    found.setdefault(nodeid.split("::", 1)[1], []).extend(t for _, t in parse(extra["content"]).tables)
    return found


def statuses(table: list[list[str]]) -> dict[tuple[str, str, str], str]:
    header, *rows = table
    col = {name: i for i, name in enumerate(header)}
    return {(r[col["model"]], r[col["mode"]], r[col["dtype"]]): r[col["status"]] for r in rows}


@pytest.mark.parametrize("xdist", [False, True], ids=["serial", "xdist"])
def test_html_report_has_each_tests_table_and_the_matrix(jitcpu_pytester: pytest.Pytester, xdist: bool) -> None:
    jitcpu_pytester.makepyfile(test_suite=SUITE)
    args = ["--html=out/r.html", "--self-contained-html", "--jitcpu-dtypes=fp32"]
    result = run(jitcpu_pytester, *args, *(["-n", "2"] if xdist else []))
    result.assert_outcomes(passed=3, failed=1, warnings=1)
    page = parse((jitcpu_pytester.path / "out" / "r.html").read_text(encoding="utf-8"))

    assert page.blob is not None
    tables = check_tables(json.loads(page.blob))
    assert set(tables) == {"test_pass", "test_mismatch", "test_check_in_a_fixture"}  # not test_without_jitcpu
    modes = ("eager", "trace-dict", "trace-tuple")
    assert statuses(tables["test_pass"][0]) == {("TinyMLP", m, "fp32"): "pass" for m in modes}
    mismatch = tables["test_mismatch"][0]
    assert statuses(mismatch) == {
        ("TracingDependent", "eager", "fp32"): "pass",
        ("TracingDependent", "trace-dict", "fp32"): "mismatch",
        ("TracingDependent", "trace-tuple", "fp32"): "mismatch",
    }
    assert mismatch[0][-1] == "reason" and "exceeds atol" in mismatch[2][-1]
    # a check made in a fixture's setup still shows in its test's row
    assert statuses(tables["test_check_in_a_fixture"][0])[("InSetup", "trace-tuple", "fp32")] == "fallback"

    (matrix,) = [t for where, t in page.tables if where == "jitcpu-matrix"]
    assert matrix[0] == ["test", "model", "eager fp32", "trace-dict fp32", "trace-tuple fp32"]
    assert sorted(row[:2] for row in matrix[1:]) == [
        ["test_suite.py::test_check_in_a_fixture", "InSetup"],
        ["test_suite.py::test_mismatch", "TracingDependent"],
        ["test_suite.py::test_pass", "TinyMLP"],
    ]
    assert ["test_suite.py::test_mismatch", "TracingDependent", "pass", "mismatch", "mismatch"] in matrix


def test_no_html_no_hooks(jitcpu_pytester: pytest.Pytester) -> None:
    """Without --html (or with pytest-html disabled) nothing of it is registered or written."""
    jitcpu_pytester.makepyfile(test_suite="def test_x():\n    pass\n")
    jitcpu_pytester.makeconftest(
        "def pytest_sessionfinish(session):\n"
        "    print('JITCPU-HTML', session.config.pluginmanager.get_plugin('jitcpu-html') is not None)\n"
    )
    for args, registered in (([], False), (["-p", "no:html", "--junitxml=j.xml"], False), (["--html=r.html"], True)):
        result = run(jitcpu_pytester, "-s", *args)
        result.assert_outcomes(passed=1)
        result.stdout.fnmatch_lines([f"*JITCPU-HTML {registered}*"])
    assert not Path(jitcpu_pytester.path / "out").exists()
