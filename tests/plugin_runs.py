"""Helpers for running the plugin as a user does (pytester) and reading what it wrote.

Each ``runpytest_subprocess`` costs a few seconds of imports, so the tests group many scenarios in one
inner test file and read the per-test outcomes from ``-rA`` and the records from the JSON report.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any, ClassVar

import pytest

HERE = Path(__file__).parent
SCHEMA_PATH = HERE / "report_schema.json"
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


def schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def schema_errors(instance: Any) -> list[str]:
    """Validate against tests/report_schema.json: with jsonschema when installed, else by hand."""
    try:
        import jsonschema
    except ImportError:
        return HandValidator(schema()).errors(instance)
    validator = jsonschema.Draft202012Validator(schema())
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(instance)]


class HandValidator:
    """The subset of JSON Schema 2020-12 that report_schema.json uses (when jsonschema is missing)."""

    TYPES: ClassVar[dict[str, Any]] = {
        "object": dict,
        "array": list,
        "string": str,
        "boolean": bool,
        "null": type(None),
        "integer": int,
        "number": (int, float),
    }

    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root

    def errors(self, instance: Any, node: dict[str, Any] | None = None, where: str = "") -> list[str]:
        node = self.root if node is None else node
        if "$ref" in node:
            target: Any = self.root
            for part in node["$ref"].lstrip("#/").split("/"):
                target = target[part]
            return self.errors(instance, target, where)
        found: list[str] = []
        if "type" in node and not self._type_ok(instance, node["type"]):
            return [f"{where}: {instance!r} is not of type {node['type']}"]
        if "const" in node and instance != node["const"]:
            found.append(f"{where}: {instance!r} != {node['const']!r}")
        if "enum" in node and instance not in node["enum"]:
            found.append(f"{where}: {instance!r} not in {node['enum']}")
        if "minimum" in node and isinstance(instance, (int, float)) and not isinstance(instance, bool):
            if instance < node["minimum"]:
                found.append(f"{where}: {instance!r} < {node['minimum']}")
        if "minLength" in node and isinstance(instance, str) and len(instance) < node["minLength"]:
            found.append(f"{where}: {instance!r} is too short")
        if isinstance(instance, dict):
            found += [
                f"{where}: {key!r} is a required property" for key in node.get("required", []) if key not in instance
            ]
            props = node.get("properties", {})
            for key, value in instance.items():
                if key in props:
                    found += self.errors(value, props[key], f"{where}/{key}")
                elif node.get("additionalProperties") is False:
                    found.append(f"{where}: additional property {key!r}")
        if isinstance(instance, list) and "items" in node:
            for i, item in enumerate(instance):
                found += self.errors(item, node["items"], f"{where}/{i}")
        for sub in node.get("allOf", []):
            if "if" in sub and not self.errors(instance, sub["if"], where):
                found += self.errors(instance, sub.get("then", {}), where)
        return found

    def _type_ok(self, instance: Any, wanted: str | list[str]) -> bool:
        names = [wanted] if isinstance(wanted, str) else wanted
        for name in names:
            if name in ("integer", "number") and isinstance(instance, bool):
                continue
            if isinstance(instance, self.TYPES[name]):
                return True
        return False
