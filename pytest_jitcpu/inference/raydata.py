"""Ray Data input and output for ``jitcpu run --ray``: a reader that keeps each row's file and line
(Ray's own text/JSON readers give neither, and fail a whole read on one malformed line), one Arrow schema
per task so every block and Parquet shard agrees, a JSONL shard sink, and the shard check that proves
every row is there exactly once.

This module imports Ray and pyarrow: it is loaded only when a run asks for ``--ray``.
"""

from __future__ import annotations

import glob
import io
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

try:
    import numpy as np
    import pyarrow as pa
    from ray.data.datasource import BlockBasedFileDatasink, FileBasedDatasource
except ImportError as exc:  # pragma: no cover - the message is the point
    from ..settings import UsageError

    raise UsageError(f"--ray needs Ray Data ({exc}); install it with pip install 'pytest-jitcpu[ray]'") from None

from ..settings import UsageError
from . import batching, rows
from .task_table import ROW_FIELDS, TASKS_TABLE

INPUT_SUFFIXES = (".txt", ".text", ".jsonl", ".ndjson", ".csv", ".tsv", ".parquet")
BLOCK_ROWS = 1024  # rows per block the reader yields
SHARD_FORMATS: tuple[str, ...] = ("jsonl", "parquet")

_READ_COLUMNS = ("file", "line", "id", *ROW_FIELDS, "error")
_ENTITY = pa.struct(
    [
        ("entity", pa.string()),
        ("word", pa.string()),
        ("start", pa.int64()),
        ("end", pa.int64()),
        ("score", pa.float64()),
    ]
)
# A task row's column types as Arrow types.
_ARROW: dict[str, pa.DataType] = {
    "vector": pa.list_(pa.float32()),
    "string": pa.string(),
    "float64": pa.float64(),
    "int64": pa.int64(),
    "entities": pa.list_(_ENTITY),
}
# The output columns of each task (its row in the task table), so every block (and every Parquet shard)
# has one schema.
TASK_COLUMNS: dict[str, list[tuple[str, pa.DataType]]] = {
    t.name: [(name, _ARROW[kind]) for name, kind in t.columns] for t in TASKS_TABLE
}
# Columns of one float32 vector a row: built and read without a Python float per value.
_VECTORS = frozenset(name for t in TASKS_TABLE for name, kind in t.columns if kind == "vector")


# -- input -----------------------------------------------------------------------------------------
def input_files(spec: str | Path | Sequence[str | Path]) -> list[str]:
    """The files of ``spec``: a file, a folder (its files with an input suffix, sorted, hidden ones left
    out), a glob, or a list of those. Remote URIs (``s3://...``) are passed to Ray as they are."""
    specs = [spec] if isinstance(spec, str | Path) else list(spec)
    out: list[str] = []
    for item in specs:
        text = str(item)
        if text == "-":
            raise UsageError("--input: --ray reads files with Ray Data, not standard input; write the rows to a file")
        if "://" in text:
            out.append(text)
            continue
        path = Path(text).expanduser()
        if glob.has_magic(text):
            found = sorted(p for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
            if not found:
                raise UsageError(f"--input: {text}: no file matches this pattern")
            out += [os.path.abspath(p) for p in found]
        elif path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if p.is_file()
                and p.suffix.lower() in INPUT_SUFFIXES
                and not any(part.startswith((".", "_")) for part in p.relative_to(path).parts)
            )
            if not found:
                raise UsageError(
                    f"--input: {text}: no input file in this folder (looked for {', '.join(INPUT_SUFFIXES)})"
                )
            out += [os.path.abspath(p) for p in found]
        elif path.is_file():
            out.append(os.path.abspath(path))
        else:
            raise UsageError(f"--input: {text}: no such file or folder")
    return out


def _format(path: str, given: str | None) -> str:
    if given is None and path.lower().endswith(".parquet"):
        return "parquet"
    return rows.detect_format(path, given)


def _parquet_rows(data: bytes, task: str) -> Iterator[rows.Row]:
    """Rows of a Parquet file; its row number (from 1) stands for the line number."""
    import pyarrow.parquet as pq

    index = 0
    for batch in pq.ParquetFile(pa.BufferReader(data)).iter_batches(batch_size=BLOCK_ROWS):
        for record in batch.to_pylist():
            yield rows.from_mapping(index, index + 1, record, task)
            index += 1


def _id_text(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False)


class RowSource(FileBasedDatasource):
    """Ray Data reader for jitcpu's input rows: text, CSV/TSV, JSONL (the same parser as one process, so a
    malformed line becomes a row with an error instead of failing the read) and Parquet. Each row keeps
    its file and line, which Ray's own readers do not give."""

    def __init__(self, paths: list[str], task: str, input_format: str | None = None) -> None:
        super().__init__(paths)
        self._task = task
        self._given_format = input_format

    def _read_stream(self, f: Any, path: str) -> Iterator[Any]:
        fmt = _format(path, self._given_format)
        if fmt == "parquet":
            items: Iterator[rows.Row] = _parquet_rows(f.read(), self._task)
        else:
            handle = io.TextIOWrapper(f, encoding="utf-8", errors="replace", newline="")  # streamed
            items = rows._rows_from(handle, fmt, self._task, path, close=False)
        for chunk in batching.windows(items, BLOCK_ROWS):
            yield pa.table(
                {
                    "file": pa.array([path] * len(chunk), pa.string()),
                    "line": pa.array([r.line for r in chunk], pa.int64()),
                    "id": pa.array([_id_text(r.id) for r in chunk], pa.string()),
                    **{name: pa.array([getattr(r, name) for r in chunk], pa.string()) for name in ROW_FIELDS},
                    "error": pa.array([r.error for r in chunk], pa.string()),
                }
            )


def to_rows(records: list[dict[str, Any]]) -> list[rows.Row]:
    return [
        rows.Row(
            index=i,
            line=r["line"],
            id=None if r["id"] is None else json.loads(r["id"]),
            **{name: r[name] for name in ROW_FIELDS},
            error=r["error"],
        )
        for i, r in enumerate(records)
    ]


# -- output ----------------------------------------------------------------------------------------
def output_schema(task: str, id_type: pa.DataType, with_file: bool) -> pa.Schema:
    head = [("id", id_type), ("line", pa.int64())] + ([("file", pa.string())] if with_file else [])
    return pa.schema([*head, *TASK_COLUMNS[task], ("error", pa.string())])


def _ids_fit(values: list[Any], id_type: pa.DataType) -> list[Any]:
    """ids as the output column's type: integers stay integers; with a string column, a non-string id is
    written as its JSON text (Parquet needs one type per column)."""
    if pa.types.is_integer(id_type):
        return values
    return [v if v is None or isinstance(v, str) else json.dumps(v, ensure_ascii=False) for v in values]


def output_table(
    records: list[dict[str, Any]], outputs: list[dict[str, Any]], schema: pa.Schema, task: str
) -> pa.Table:
    """One block of results in the task's schema: each output row next to its input's file, line and id."""
    columns: dict[str, Any] = {}
    for name in schema.names:
        if name in ("line", "file"):
            columns[name] = [r[name] for r in records]
        elif name in _VECTORS:
            columns[name] = _embeddings([o.get(name) for o in outputs])
        else:
            columns[name] = [o.get(name) for o in outputs]
    id_type = schema.field("id").type
    if pa.types.is_integer(id_type) and any(not isinstance(v, int | type(None)) for v in columns["id"]):
        # an id that is not an integer in a run whose sampled ids were: this block's ids become strings
        schema = schema.set(schema.get_field_index("id"), pa.field("id", pa.string()))
    columns["id"] = _ids_fit(columns["id"], schema.field("id").type)
    return pa.table(columns, schema=schema)


def _embeddings(vectors: list[Any]) -> pa.Array:
    """float32 vectors as one Arrow list column without a Python float per value (a skipped row is null)."""
    present = [np.asarray(v, dtype=np.float32).reshape(-1) for v in vectors if v is not None]
    values = np.concatenate(present) if present else np.zeros(0, np.float32)
    lengths = np.array([0 if v is None else np.asarray(v).size for v in vectors], dtype=np.int32)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    mask = pa.array([v is None for v in vectors])
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values), mask=mask)


def records(block: pa.Table) -> Iterator[dict[str, Any]]:
    """The rows of a result block as the single-process run writes them: None fields left out, an
    embedding as a float32 array (one JSON list, not a Python float per value)."""
    vectors: dict[str, list[Any]] = {}
    for name in [n for n in block.column_names if n in _VECTORS]:
        column = block.column(name).combine_chunks()
        flat = column.flatten().to_numpy(zero_copy_only=False)
        starts = column.offsets.to_numpy()
        nulls = column.is_null().to_numpy(zero_copy_only=False)
        vectors[name] = [
            None if nulls[i] else flat[starts[i] - starts[0] : starts[i + 1] - starts[0]] for i in range(len(column))
        ]
        block = block.drop_columns([name])
    for i, row in enumerate(block.to_pylist()):
        for name, column_vectors in vectors.items():
            row[name] = column_vectors[i]
        yield {k: v for k, v in row.items() if v is not None}


def _json_line(record: dict[str, Any]) -> str:
    clean = {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in record.items()}
    return json.dumps(clean, ensure_ascii=False, allow_nan=False)


class JsonlShards(BlockBasedFileDatasink):
    """One JSONL shard per write task, each line the same object the merged file has."""

    def __init__(self, path: str) -> None:
        super().__init__(path, file_format="jsonl")

    def write_block_to_file(self, block: Any, file: Any) -> None:
        text = "".join(_json_line(r) + "\n" for r in records(block.to_arrow()))
        file.write(text.encode("utf-8"))


# -- the shard check -------------------------------------------------------------------------------
def shard_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith((".", "_")))


class Seen:
    """Which (file, line) came out: one byte a line per file, so a repeat is found in flat memory."""

    def __init__(self) -> None:
        self.files: dict[str, bytearray] = {}
        self.count = 0

    def add(self, file: str, line: int) -> bool:
        """True the first time (file, line) is seen."""
        seen = self.files.setdefault(file, bytearray())
        if line >= len(seen):
            seen.extend(bytes(max(line + 1 - len(seen), len(seen))))
        if seen[line]:
            return False
        seen[line] = 1
        self.count += 1
        return True


def dedupe_shards(folder: Path, fmt: str, seen: Seen) -> Iterator[dict[str, Any]]:
    """The (file, line, error) of every row in the shards, each (file, line) once.

    Ray Data names a shard after its write task, so a retried write replaces its own file; a repeat can
    only come from a map task that ran twice and emitted its block twice. Such a repeat is removed here
    (its shard rewritten without it, through a temporary file) so the shards hold each row exactly once.
    """
    import pyarrow.parquet as pq

    for path in shard_files(folder):
        if fmt == "parquet":
            table = pq.read_table(path)
            files = table.column("file").to_pylist() if "file" in table.column_names else [""] * table.num_rows
            keys = list(zip(files, table.column("line").to_pylist(), strict=True))
            keep = [seen.add(file, line) for file, line in keys]
            if not all(keep):
                tmp = path.with_name(f".{path.name}.part")
                pq.write_table(table.filter(pa.array(keep)), tmp)
                os.replace(tmp, path)
            errors = table.column("error").to_pylist()
            for (file, line), error, kept in zip(keys, errors, keep, strict=True):
                yield {"file": file or None, "line": line, "error": error, "repeat": not kept}
        else:
            with open(path, encoding="utf-8") as handle:
                texts = handle.readlines()
            records = [json.loads(text) for text in texts]
            keep = [seen.add(r.get("file") or "", r["line"]) for r in records]
            if not all(keep):
                tmp = path.with_name(f".{path.name}.part")
                with open(tmp, "w", encoding="utf-8") as out:
                    out.writelines(t for t, k in zip(texts, keep, strict=True) if k)
                os.replace(tmp, path)
            for r, kept in zip(records, keep, strict=True):
                yield {"file": r.get("file"), "line": r["line"], "error": r.get("error"), "repeat": not kept}
