"""Helpers for running the plugin as a user does (pytester) and reading what it wrote.

Each ``runpytest_subprocess`` costs a few seconds of imports, so the tests group many scenarios in one
inner test file and read the per-test outcomes from ``-rA`` and the records from the JSON report.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from pytest_jitcpu import reports

HERE = Path(__file__).parent
# Generalization checks and the serialization round trip (issue 4) have their own tests; here they
# only cost time (the round trip is a subprocess per check call).
FAST = ("-p", "no:cacheprovider", "--jitcpu-examples=0", "--jitcpu-serialize=false")
TIMING_FIELDS = ("latency_ms", "compile_time_ms")
_OUTCOME = re.compile(r"^(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS) (\S+?::\S+)")


def run(pytester: pytest.Pytester, *args: str, fast: bool = True) -> pytest.RunResult:
    """Run pytest in a subprocess on the pytester folder; no run may end in an INTERNALERROR."""
    result = pytester.runpytest_subprocess(*(FAST if fast else ("-p", "no:cacheprovider")), *args)
    no_internal_error(result)
    return result


def run_inprocess(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    """In-process run: cheap (torch is already imported) but only for runs that check no model
    (the outer suite's ``filterwarnings = error`` leaks into in-process runs)."""
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", *args)
    no_internal_error(result)
    return result


def no_internal_error(result: pytest.RunResult) -> None:
    result.stdout.no_fnmatch_line("*INTERNALERROR*")
    result.stderr.no_fnmatch_line("*INTERNALERROR*")
    result.stderr.no_fnmatch_line("*Traceback (most recent call last)*")


def outcomes(result: pytest.RunResult) -> dict[str, str]:
    """Test name -> outcome word, from the ``-rA`` short summary (``PASSED file.py::test_x``)."""
    found: dict[str, str] = {}
    for line in result.outlines:
        match = _OUTCOME.match(line)
        if match:
            found[match.group(2).split("::", 1)[1]] = match.group(1)
    return found


def load_json(path: Path) -> dict[str, Any]:
    """Parse a report as strict JSON: NaN/Infinity literals are an error."""

    def refuse(constant: str) -> None:
        raise AssertionError(f"{path}: non-standard JSON constant {constant}")

    return json.loads(Path(path).read_text(encoding="utf-8"), parse_constant=refuse)


def records_by_test(report: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Test name (the part after ``::``) -> its records, in report order."""
    found: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for rec in report["results"]:
        found[rec["nodeid"].split("::", 1)[1]].append(rec)
    return dict(found)


def statuses(records: list[dict[str, Any]]) -> dict[tuple[str, str, str], str]:
    return {(r["model"], r["mode"], r["dtype"]): r["status"] for r in records}


def without_timing(report: dict[str, Any]) -> dict[str, Any]:
    """What must be the same between two runs of the same tests (no timings, no environment)."""
    results = [{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in report["results"]]
    return {"schema": report["schema"], "summary": report["summary"], "results": results}


def schema_errors(instance: Any) -> list[str]:
    """Every way ``instance`` breaks the report schema shipped in the package (empty: valid)."""
    validator = jsonschema.Draft202012Validator(reports.json_schema())
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(instance)]
