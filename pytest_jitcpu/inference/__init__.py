"""CPU inference with the engine's verified modes: the ``jitcpu`` command line and this Python API.

>>> from pytest_jitcpu import inference                                           # doctest: +SKIP
>>> result = inference.run(rows=["a sentence", "another one"])                   # embedded MiniLM
>>> result.embeddings.shape, result.summary.mode                                  # doctest: +SKIP
((2, 384), 'trace')
>>> inference.run("my-model", task="text-classification", input="in.jsonl", output="out.jsonl")  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # at run time these come from __getattr__
    from .check import check_model
    from .rows import Row
    from .runner import Predictor, Result, RowError
    from .selection import AUTO_CANDIDATES, Decision, ModelFailed
    from .summary import Summary
    from .task_table import TASKS

# public name -> the module that defines it. Imported on first use: the command line reads the task table
# (inference.task_table) to parse its arguments, and parsing must not import torch.
_EXPORTS: dict[str, str] = {
    "AUTO_CANDIDATES": "selection",
    "TASKS": "task_table",
    "Decision": "selection",
    "ModelFailed": "selection",
    "Predictor": "runner",
    "Result": "runner",
    "Row": "rows",
    "RowError": "runner",
    "Summary": "summary",
    "check_model": "check",
}

__all__ = [
    "AUTO_CANDIDATES",
    "TASKS",
    "Decision",
    "ModelFailed",
    "Predictor",
    "Result",
    "Row",
    "RowError",
    "Summary",
    "check_model",
    "run",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def run(
    model: str | Path | None = None,
    task: str | None = None,
    *,
    rows: Iterable[Any] | None = None,
    input: str | Path | None = None,
    output: str | Path | None = None,
    input_format: str | None = None,
    progress: bool | None = None,
    ray: bool | str | None = None,
    actors: int | None = None,
    shards: str | Path | None = None,
    shard_format: str = "jsonl",
    **options: Any,
) -> Result:
    """Run MODEL (a local folder; None or "default" = the embedded all-MiniLM-L6-v2) on ``rows`` (str, dicts)
    or the file ``input``. ``options`` are :class:`Predictor`'s: mode, dtype, batch_size, threads,
    max_seq_length, doc_stride, on_error, candidates, log.

    Without ``output`` the outputs are kept and returned in input order; with ``output`` (.jsonl, or .npy
    for embeddings) they are streamed there and ``Result.outputs`` stays empty, so memory stays flat.

    ``ray=True`` (a new local cluster, or the one in RAY_ADDRESS) or ``ray="host:6379"`` / ``"ray://..."``
    runs the job on Ray Data: ``input`` is a file, a folder or a glob (text, CSV, JSONL, Parquet); results go
    to ``output`` (merged, in input order) and/or ``shards`` (a new folder of ``shard_format`` files: jsonl
    or parquet); ``actors`` (default: the cluster's CPUs / ``threads``) each run ``threads`` (default 1)
    torch threads. ``Result.summary`` then also says the layout. See :mod:`.cluster`.
    """
    from . import writers
    from .runner import Predictor, Result

    if ray not in (None, False):
        if input is None or rows is not None:
            raise ValueError("ray= runs on files: give input= (a file, a folder or a glob), not rows=")
        from . import cluster

        summary = cluster.run(
            model,
            task,
            input,
            output,
            address=None if ray is True else str(ray),
            actors=actors,
            shards=shards,
            shard_format=shard_format,
            input_format=input_format,
            progress=progress,
            **options,
        )
        return Result([], summary, None)
    if actors is not None or shards is not None:
        raise ValueError("actors= and shards= need ray=")
    if (rows is None) == (input is None):
        raise ValueError("give exactly one of rows= (Python values) or input= (a file)")
    predictor = Predictor(model, task, **options)
    if input is not None and output is not None:
        summary = predictor.run(input, output, input_format, progress)
        return Result([], summary, predictor.decision)
    from . import rows as rows_module

    source = rows_module.read_file(input, predictor.loaded.task, input_format) if input is not None else rows
    assert source is not None
    if output is None:
        return predictor.predict(source)
    writer = writers.open_writer(output, predictor.loaded.task)
    try:
        for obj in predictor.stream(source):
            writer.write(obj)
    except BaseException:
        writer.abort()
        raise
    writer.close()
    return Result([], predictor.summary, predictor.decision)
