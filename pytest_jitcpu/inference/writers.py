"""Output files, written as rows arrive: JSON Lines (one object per input row, in input order) or ``.npy``
(embeddings, row i = input row i). Both go to a temporary file renamed into place only when the run
succeeds (:mod:`pytest_jitcpu.atomic`), so a failed or killed run never leaves a partial file that
looks complete, and an existing file of that name stays as it was until the new one is whole.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any, BinaryIO, TextIO

import numpy as np

from ..atomic import AtomicFile
from ..settings import UsageError
from .task_table import TASKS_TABLE, task_row


def _jsonable(value: Any) -> Any:
    """numpy arrays and scalars anywhere in a value as plain lists and numbers (plain recursion, not
    :mod:`..nested`: that imports torch, and the torch-free start writes with this module)."""
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


class JsonlWriter:
    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self.count = 0
        self._file: AtomicFile | None = None
        if self.path == "-":
            self._handle: TextIO = sys.stdout
        else:
            self._file = AtomicFile(path, "w", encoding="utf-8")
            self._handle = self._file.handle  # type: ignore[assignment]

    def write(self, obj: dict[str, Any]) -> None:
        clean = {k: _jsonable(v) for k, v in obj.items()}
        self._handle.write(json.dumps(clean, ensure_ascii=False, allow_nan=False) + "\n")
        self.count += 1

    def close(self) -> None:
        if self._file is None:
            self._handle.flush()
        else:
            self._file.commit()

    def abort(self) -> None:
        if self._file is None:
            self._handle.flush()
        else:
            self._file.discard()


class NpyWriter:
    """float32 rows appended to a raw file; the .npy header (which needs the final row count) is written
    at the end and the rows copied after it in chunks, so memory stays flat. A skipped row is a row of
    NaN, keeping row i = input row i."""

    def __init__(self, path: str | Path, column: str = "embedding") -> None:
        if str(path) == "-":
            raise UsageError("--output: .npy output needs a file name, not '-'")
        self.column = column  # the output object's vector field (the task row's npy_column)
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._raw_path = self.path.with_name(f".{self.path.name}.{os.getpid()}.raw")
        self._raw: BinaryIO = open(self._raw_path, "wb")  # closed in close()/abort()
        self.dim: int | None = None
        self.count = 0
        self._pending_nan = 0  # skipped rows before the first embedding fixed the width

    def write(self, obj: dict[str, Any]) -> None:
        vector = obj.get(self.column)
        if vector is None:
            if self.dim is None:
                self._pending_nan += 1
            else:
                self._raw.write(np.full(self.dim, np.nan, dtype=np.float32).tobytes())
            self.count += 1
            return
        vector = np.asarray(vector, dtype=np.float32).reshape(-1)
        if self.dim is None:
            self.dim = vector.shape[0]
            if self._pending_nan:
                self._raw.write(np.full((self._pending_nan, self.dim), np.nan, dtype=np.float32).tobytes())
        self._raw.write(vector.tobytes())
        self.count += 1

    def close(self) -> None:
        self._raw.close()
        dim = self.dim or 0
        try:
            out = AtomicFile(self.path, "wb")
            try:
                header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False}
                header["shape"] = (self.count, dim)
                np.lib.format.write_array_header_1_0(out.handle, header)
                with open(self._raw_path, "rb") as raw:
                    shutil.copyfileobj(raw, out.handle, 1 << 20)
            except BaseException:
                out.discard()
                raise
            out.commit()
        finally:
            self._raw_path.unlink(missing_ok=True)

    def abort(self) -> None:
        self._raw.close()
        self._raw_path.unlink(missing_ok=True)


def open_writer(path: str | Path, task: str) -> JsonlWriter | NpyWriter:
    if Path(str(path)).suffix.lower() == ".npy":
        column = task_row(task).npy_column
        if column is None:
            vectors = [t.name for t in TASKS_TABLE if t.npy_column]
            raise UsageError(
                f"--output: .npy is for {' and '.join(vectors)} embeddings; write {task} results as .jsonl"
            )
        return NpyWriter(path, column)
    return JsonlWriter(path)
