"""The JSON Schema (draft 2020-12) of a JSON report, built from the tables: the statuses (the summary's
keys, the record's ``status`` enum, which statuses must say why), the modes (the backends table, and
their packages' versions in the environment) and the dtypes. It cannot drift from what the code writes.

A copy ships as ``pytest_jitcpu/report_schema.json`` for tools that read a file (a test keeps it equal
to this; after changing a table, rewrite it with ``python -m pytest_jitcpu.reports.schema``).
Validate a report with ``jsonschema.validate(json.load(f), pytest_jitcpu.reports.json_schema())``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from ..backends.table import BACKENDS
from ..settings import DTYPES, MODES
from ..statuses import EXPLAINED_STATUSES, STATUSES
from .json import SCHEMA

FILE = Path(__file__).resolve().parents[1] / "report_schema.json"
VERDICTS = ("tested", "untested", "off", "not searched")  # a record's generalization.verdict


def json_schema() -> dict[str, Any]:
    """The schema of a JSON report (a fresh dict each call)."""
    count = {"$ref": "#/$defs/count"}
    text = {"$ref": "#/$defs/text"}
    measure = {"$ref": "#/$defs/measure"}
    versions = {b.version_key: {"type": ["string", "null"]} for b in BACKENDS if b.version_key}
    summary = {name: dict(count) for name in STATUSES}
    summary["untested"] = {
        "$comment": "passes whose trace no other valid input was tried on (generalization.verdict untested); "
        "counted in pass too",
        **count,
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://github.com/pytest-jitcpu/pytest-jitcpu/pytest_jitcpu/report_schema.json",
        "title": f"pytest-jitcpu JSON report ({SCHEMA})",
        "description": "The contract's JSON report: environment, summary counts per status, one record per "
        "(nodeid, model, mode, dtype). Extra fields are allowed (later stages add some); the contract's fields "
        "are required and typed.",
        "type": "object",
        "required": ["schema", "environment", "summary", "results"],
        "properties": {
            "schema": {"const": SCHEMA},
            "complete": {
                "type": "boolean",
                "description": "false while the session runs (the report is rewritten as tests finish); true "
                "once it ended normally",
            },
            "environment": {
                "type": "object",
                "required": ["python", "torch", "transformers", "ipex", "cpu", "isa", "threads"],
                "properties": {
                    "python": {"type": "string"},
                    "torch": {"type": "string"},
                    "transformers": {"type": ["string", "null"]},
                    **versions,
                    "cpu": {"type": "string"},
                    "isa": {"type": "string"},
                    "threads": {"type": "integer", "minimum": 1},
                },
            },
            "summary": {
                "type": "object",
                "required": list(STATUSES),
                "additionalProperties": False,
                "properties": summary,
            },
            "results": {"type": "array", "items": {"$ref": "#/$defs/record"}},
        },
        "$defs": {
            "count": {"type": "integer", "minimum": 0},
            "measure": {"type": ["number", "null"], "minimum": 0},
            "text": {"type": ["string", "null"]},
            "record": {
                "type": "object",
                "required": [
                    "nodeid",
                    "model",
                    "mode",
                    "dtype",
                    "status",
                    "max_abs_diff",
                    "max_rel_diff",
                    "atol",
                    "rtol",
                    "reason",
                    "latency_ms",
                ],
                "properties": {
                    "nodeid": {"type": "string"},
                    "model": {"type": "string", "minLength": 1},
                    "mode": {"enum": list(MODES)},
                    "dtype": {"enum": list(DTYPES)},
                    "status": {"enum": list(STATUSES)},
                    "max_abs_diff": measure,
                    "max_rel_diff": measure,
                    "atol": measure,
                    "rtol": measure,
                    "reason": text,
                    "latency_ms": measure,
                    "worst": text,
                    "frozen": {"type": ["boolean", "null"]},
                    "warnings": {"type": "array", "items": {"type": "string"}},
                    "notes": {"type": "array", "items": {"type": "string"}},
                    "fused_ops": {"type": ["array", "null"], "items": {"type": "string"}},
                    "serializable": {"type": ["boolean", "null"]},
                    "serializable_reason": text,
                    "counterexample": text,
                    "replay": text,
                    "compile_time_ms": measure,
                    "examples": {"type": ["integer", "null"], "minimum": 0},
                    "generalization": {
                        "$comment": "what a searched mode's verdict rests on beyond the example; null where no "
                        "search applies (eager, a failed mode)",
                        "type": ["object", "null"],
                        "required": ["verdict", "tried", "matched", "rejected_by_eager", "kinds", "why_none"],
                        "properties": {
                            "verdict": {"enum": list(VERDICTS)},
                            "tried": count,
                            "matched": count,
                            "rejected_by_eager": count,
                            "kinds": {"type": "array", "items": {"type": "string"}},
                            "why_none": text,
                            "diverged_on": text,
                            "held": {
                                "$comment": "the input domain's dims and the other sizes of them that matched eager",
                                "type": "object",
                                "additionalProperties": {"type": "array", "items": {"type": "integer"}},
                            },
                            "diverged_axes": {"type": "array", "items": {"type": "string"}},
                            "narrow": text,
                        },
                    },
                    "domain": {
                        "$comment": "the check's input domain: per input {dim: name}, the ranges searched, the names "
                        "eager kept fixed, whether the user declared it (dynamic=)",
                        "type": ["object", "null"],
                        "required": ["inputs", "ranges", "fixed", "declared"],
                        "properties": {
                            "inputs": {
                                "type": "object",
                                "additionalProperties": {"type": "object", "additionalProperties": {"type": "string"}},
                            },
                            "ranges": {
                                "type": "object",
                                "additionalProperties": {
                                    "type": "array",
                                    "items": {"type": "integer"},
                                    "minItems": 2,
                                    "maxItems": 2,
                                },
                            },
                            "fixed": {"type": "object", "additionalProperties": {"type": "integer"}},
                            "declared": {"type": "boolean"},
                        },
                    },
                    "attn_implementation": {
                        "$comment": "the transformers attention implementation the mode ran the model with (eager, "
                        "sdpa, flex_attention, or 'sdpa; vision_config: eager' when sub-models differ); null for a "
                        "model that is not a transformers model, or an attention mode that could not be set",
                        "type": ["string", "null"],
                    },
                },
                "allOf": [
                    {
                        "$comment": "every status but pass says why",
                        "if": {"properties": {"status": {"enum": list(EXPLAINED_STATUSES)}}},
                        "then": {"properties": {"reason": {"type": "string", "minLength": 1}}},
                    },
                    {
                        "$comment": "an untested verdict is a pass resting on the example alone, and says why",
                        "if": {
                            "required": ["generalization"],
                            "properties": {
                                "generalization": {
                                    "type": "object",
                                    "required": ["verdict"],
                                    "properties": {"verdict": {"const": "untested"}},
                                }
                            },
                        },
                        "then": {
                            "properties": {
                                "status": {"const": "pass"},
                                "generalization": {"properties": {"why_none": {"type": "string", "minLength": 1}}},
                            }
                        },
                    },
                ],
            },
        },
    }


def main() -> int:
    """Rewrite the shipped copy from the tables."""
    FILE.write_text(json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
