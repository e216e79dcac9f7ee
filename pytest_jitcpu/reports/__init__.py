"""Reports from records, one layer: the matrix :mod:`.model` every format reads, one module per format
(:mod:`.json`, :mod:`.markdown`, :mod:`.terminal`, :mod:`.html` for pytest-html), the table of report
files by suffix (:mod:`.writers`), the JSON :mod:`.schema` built from the tables, the CI gate against a
previous report (:mod:`.baseline`) and the journal that keeps records when a session dies (:mod:`.journal`).

The format modules import the model, never each other. Nothing here imports torch.
"""

from __future__ import annotations

from .json import SCHEMA, load
from .model import sort_records, summary
from .schema import json_schema
from .writers import SUFFIXES, path_problem, write

__all__ = ["SCHEMA", "SUFFIXES", "json_schema", "load", "path_problem", "sort_records", "summary", "write"]
