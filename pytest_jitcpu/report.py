"""The import path the README documents (``pytest_jitcpu.report.json_schema()``); the reports live in
:mod:`pytest_jitcpu.reports`, one module per format."""

from __future__ import annotations

from .reports.json import SCHEMA, dumps, load, to_json
from .reports.markdown import markdown
from .reports.model import counts_text, sort_records, summary
from .reports.schema import json_schema
from .reports.terminal import terminal_matrix
from .reports.writers import SUFFIXES as REPORT_SUFFIXES
from .reports.writers import path_problem, write

__all__ = [
    "REPORT_SUFFIXES",
    "SCHEMA",
    "counts_text",
    "dumps",
    "json_schema",
    "load",
    "markdown",
    "path_problem",
    "sort_records",
    "summary",
    "terminal_matrix",
    "to_json",
    "write",
]
