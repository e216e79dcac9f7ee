"""Input rows, read lazily: plain text (a row a line), CSV with a header, JSON Lines, or a Python iterable.

A row that cannot be used (malformed JSON, empty text, missing field, bytes that are not UTF-8) is not
dropped: it comes out as a :class:`Row` with ``error`` set and its line number, so the run can stop there
or count and list it. Bytes that are not UTF-8 are never replaced silently (the text would change); a
leading byte-order mark (Excel's "CSV UTF-8") is not part of the first row or column name.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from ..settings import UsageError
from .task_table import task_row

FORMATS: tuple[str, ...] = ("text", "csv", "tsv", "jsonl")
# utf-8-sig drops a leading BOM; surrogateescape keeps undecodable bytes visible (as U+DC80..U+DCFF) so
# the row holding them becomes a row error instead of text with U+FFFD in it.
ENCODING, ERRORS = "utf-8-sig", "surrogateescape"
_SNIFF_BYTES = 8192
_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "tsv", ".txt": "text", ".text": "text"}


@dataclass
class Row:
    """One input row. ``index`` counts rows from 0 in input order; ``line`` is where it starts (1-based)."""

    index: int
    line: int
    id: Any = None
    text: str | None = None
    text_pair: str | None = None
    question: str | None = None
    context: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def fields_for(task: str) -> tuple[str, ...]:
    """What a row of ``task`` must give (its row in the task table)."""
    return task_row(task).fields


def detect_format(path: str | Path, given: str | None = None) -> str:
    if given:
        if given not in FORMATS:
            raise UsageError(f"--input-format: unknown format {given!r}; choose from {', '.join(FORMATS)}")
        return given
    suffix = Path(str(path)).suffix.lower()
    if suffix == ".json":
        raise UsageError(
            f"{path}: a .json file is read whole; give JSON Lines (.jsonl, one object a line) so rows stream, "
            "or pass --input-format jsonl if it is JSON Lines"
        )
    return _SUFFIXES.get(suffix, "text")


def undecodable(text: str) -> str | None:
    """Why ``text`` (read with surrogateescape) is not valid UTF-8, or None."""
    try:
        text.encode("utf-8")  # at C speed; a lone surrogate (an escaped byte) cannot be encoded
    except UnicodeEncodeError as exc:
        byte = ord(text[exc.start]) - 0xDC00
        what = f"byte 0x{byte:02x}" if 0x80 <= byte <= 0xFF else f"character U+{ord(text[exc.start]):04X}"
        return f"not valid UTF-8 ({what} at column {exc.start + 1}); save the file as UTF-8"
    return None


def check_readable(path: str | Path) -> None:
    """Refuse an input that cannot be read as rows, before any model loads: missing, a folder,
    unreadable, or binary (a NUL byte in its first 8 KiB: a model file or an archive given by mistake)."""
    if str(path) == "-":
        return
    file = Path(path)
    if not file.exists():
        raise UsageError(f"--input: {path}: no such file")
    if file.is_dir():
        raise UsageError(f"--input: {path}: is a folder, not a file")
    try:
        with open(file, "rb") as handle:
            head = handle.read(_SNIFF_BYTES)
    except OSError as exc:
        raise UsageError(f"--input: {path}: cannot be read ({exc.strerror or exc})") from None
    if b"\x00" in head:
        raise UsageError(
            f"--input: {path}: looks like a binary file (a NUL byte in its first {len(head)} bytes); give UTF-8 "
            "text (a row a line), CSV/TSV with a header, or JSON Lines"
        )


def _check_value(row: Row, name: str, value: Any) -> str | None:
    """The field as a str, or None after setting the row's error."""
    if value is None:
        row.error = f"no {name!r} field"
        return None
    if not isinstance(value, str):
        row.error = f"{name!r} must be a string, got {type(value).__name__}"
        return None
    bad = undecodable(value)
    if bad:
        row.error = f"{name!r}: {bad}"
        return None
    if not value.strip():
        row.error = f"empty {name}"
        return None
    return value


def from_mapping(index: int, line: int, data: Mapping[str, Any], task: str) -> Row:
    row = Row(index=index, line=line, id=data.get("id"))
    for name in fields_for(task):
        value = _check_value(row, name, data.get(name))
        if value is None:
            return row
        setattr(row, name, value)
    for name in task_row(task).optional_fields:
        value = data.get(name)
        if value is not None:
            setattr(row, name, _check_value(row, name, value))
    return row


def from_text(index: int, line: int, text: str, task: str) -> Row:
    row = Row(index=index, line=line)
    spec = task_row(task)
    if not spec.plain_text:
        needs = " and ".join(f"a {name}" for name in spec.fields)
        row.error = f"{spec.label} needs {needs}: give JSONL or CSV rows"
    elif not text.strip():
        row.error = "empty text"
    else:
        row.error = undecodable(text)
        row.text = None if row.error else text
    return row


def _text_rows(handle: TextIO, task: str) -> Iterator[Row]:
    for i, raw in enumerate(handle):
        yield from_text(i, i + 1, raw.rstrip("\r\n"), task)


def _jsonl_rows(handle: TextIO, task: str) -> Iterator[Row]:
    for i, raw in enumerate(handle):
        line = raw.strip()
        if not line:
            yield Row(index=i, line=i + 1, error="empty line (not a JSON object)")
            continue
        bad = undecodable(line)
        if bad:
            yield Row(index=i, line=i + 1, error=bad)
            continue
        try:
            data = json.loads(line)
        except ValueError as exc:
            yield Row(index=i, line=i + 1, error=f"malformed JSON: {exc}")
            continue
        if not isinstance(data, dict):
            yield Row(index=i, line=i + 1, error=f"expected a JSON object, got {type(data).__name__}")
            continue
        yield from_mapping(i, i + 1, data, task)


def _csv_rows(handle: TextIO, task: str, delimiter: str, source: str) -> Iterator[Row]:
    reader = csv.DictReader(handle, delimiter=delimiter)
    columns = reader.fieldnames or []
    missing = [name for name in fields_for(task) if name not in columns]
    if missing:
        have = ", ".join(columns) if columns else "none (empty file?)"
        raise UsageError(f"{source}: no {' / '.join(repr(m) for m in missing)} column in the header (columns: {have})")
    start, index = 2, 0
    for data in reader:
        line = start
        start = reader.line_num + 1
        if None in data or any(v is None for v in data.values()):
            have = len([v for v in data.values() if v is not None]) + len(data.get(None) or [])  # type: ignore[call-overload]
            yield Row(index=index, line=line, error=f"expected {len(columns)} fields, got {have}")
        else:
            clean = {k: v for k, v in data.items() if k is not None}
            if clean.get("id") == "":
                clean.pop("id")
            yield from_mapping(index, line, clean, task)
        index += 1


def read_file(path: str | Path, task: str, input_format: str | None = None) -> Iterator[Row]:
    """Stream the rows of a file ('-' is standard input). Raises UsageError for a missing file or a bad header."""
    fmt = detect_format(path, input_format)
    source = str(path)
    if source == "-":
        handle: TextIO = io.TextIOWrapper(sys.stdin.buffer, encoding=ENCODING, errors=ERRORS, newline="")
        return _rows_from(handle, fmt, task, "<stdin>", close=False)
    check_readable(path)
    handle = open(Path(path), encoding=ENCODING, errors=ERRORS, newline="")  # closed by _closing()
    spec = task_row(task)
    if fmt == "text" and not spec.plain_text:
        handle.close()
        raise UsageError(f"--input: {path}: {spec.label} needs JSONL or CSV rows with {' and '.join(spec.fields)}")
    return _rows_from(handle, fmt, task, source, close=True)


def _rows_from(handle: TextIO, fmt: str, task: str, source: str, close: bool) -> Iterator[Row]:
    if fmt in ("csv", "tsv"):
        # Read the header now, so a missing column is a usage error before any work starts.
        rows = _csv_rows(handle, task, "," if fmt == "csv" else "\t", source)
        try:
            first = next(rows, None)
        except BaseException:
            if close:
                handle.close()
            raise
        return _closing(_chain_first(first, rows), handle, close)
    if fmt == "jsonl":
        return _closing(_jsonl_rows(handle, task), handle, close)
    return _closing(_text_rows(handle, task), handle, close)


def _chain_first(first: Row | None, rest: Iterator[Row]) -> Iterator[Row]:
    if first is not None:
        yield first
        yield from rest


def _closing(rows: Iterator[Row], handle: TextIO, close: bool) -> Iterator[Row]:
    try:
        yield from rows
    finally:
        if close:
            handle.close()


def from_iterable(items: Iterable[Any], task: str) -> Iterator[Row]:
    """Rows from Python values: a str is a text, a mapping has the JSONL fields, a Row is taken as is."""
    for i, item in enumerate(items):
        if isinstance(item, Row):
            yield item
        elif isinstance(item, str):
            yield from_text(i, i + 1, item, task)
        elif isinstance(item, Mapping):
            yield from_mapping(i, i + 1, item, task)
        else:
            yield Row(index=i, line=i + 1, error=f"expected a str or a dict, got {type(item).__name__}")


# Runs count their input's lines up to this size (a fast pass over the bytes; larger: a large input).
COUNT_LIMIT = 256 << 20


def count_lines(path: str | Path, limit_bytes: int = 1 << 30) -> int | None:
    """Lines in a file (for the progress bar's ETA); None for stdin or files larger than ``limit_bytes``."""
    try:
        file = Path(path)
        if str(path) == "-" or file.stat().st_size > limit_bytes:
            return None
        count, last = 0, b"\n"
        with open(file, "rb") as handle:
            while chunk := handle.read(1 << 20):
                count += chunk.count(b"\n")
                last = chunk[-1:]
        return count + (last != b"\n")
    except OSError:
        return None
