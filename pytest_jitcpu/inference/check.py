"""``jitcpu check MODEL``: the compatibility matrix of one model (every mode x dtype) on a batch of real
or built-in rows, without writing a test: statuses, diffs, reasons and latency per mode."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .. import isolation
from ..environment import environment
from ..record import CheckResult, Record
from ..reports import model as report_model
from ..reports import writers
from ..settings import MODES, Settings, UsageError
from . import batching, models, rows, task_table, tasks


def sample_rows(task: str, input: str | Path | None, input_format: str | None, count: int) -> list[rows.Row]:
    """The first ``count`` usable rows of ``input``, or the built-in samples."""
    if input is None:
        items: Sequence[Any] = task_table.task_row(task).samples
        return [r for r in rows.from_iterable(list(items)[:count], task)]
    picked: list[rows.Row] = []
    for row in rows.read_file(input, task, input_format):
        if row.ok:
            picked.append(row)
        if len(picked) >= count:
            break
    if not picked:
        raise UsageError(f"--input: {input}: no usable row to check on")
    return picked


def check_model(
    model: str | Path | None = None,
    task: str | None = None,
    *,
    input: str | Path | None = None,
    input_format: str | None = None,
    modes: str | Sequence[str] = "all",
    dtypes: str | Sequence[str] = "all",
    batch_size: int = 8,
    max_seq_length: int | None = None,
    examples: int | None = None,
    atol: float | None = None,
    rtol: float | None = None,
    report_paths: Sequence[str | Path] = (),
    log: Callable[[str], None] = print,
) -> CheckResult:
    """Load MODEL for TASK, check it in every mode and dtype on one batch, print the table, write reports."""
    loaded = models.load(model, task, max_seq_length)
    for note in loaded.notes:
        log(f"jitcpu: {note}")
    task_impl = tasks.make(loaded, loaded.max_seq_length)
    picked = sample_rows(loaded.task, input, input_format, batch_size)
    encoded = task_impl.encode(picked)
    if not encoded.features:
        raise UsageError("no row could be encoded to check on: " + "; ".join(encoded.errors.values()))
    features = encoded.features[:batch_size]
    pad_id = loaded.tokenizer.pad_token_id or 0
    batch = batching.as_inputs(batching.pad(features, pad_id, loaded.input_names))
    settings = Settings().updated(modes=modes, dtypes=dtypes, atol=atol, rtol=rtol, examples=examples)
    name = type(getattr(loaded.module, "model", loaded.module)).__name__
    log(
        f"jitcpu check: {loaded.label} as {loaded.task} ({name}) on {len(features)} rows "
        f"({batch.describe()}), modes {', '.join(settings.modes)}, dtypes {', '.join(settings.dtypes)}"
    )
    with models.quiet_transformers():
        # in a forked child where it can: a model that kills the interpreter is an error record in the report
        result = isolation.check(
            loaded.module, batch, settings=settings, name=name, nodeid=f"jitcpu check {loaded.label}"
        )
    for line in table(result.records):
        log(line)
    env = environment()
    for path in report_paths:
        written = writers.write(path, result.records, env, extra={"model": str(loaded.path), "task": loaded.task})
        log(f"jitcpu check: wrote {written}")
    return result


def table(records: Sequence[Record]) -> list[str]:
    """mode, dtype, status, max diff, latency, speed-up over eager fp32, and the reason or notes."""
    eager = next((r.latency_ms for r in records if r.mode == "eager" and r.dtype == "fp32"), None)
    header = ("mode", "dtype", "status", "max_abs_diff", "latency_ms", "vs eager", "reason / notes")
    lines = [header]
    ordered = sorted(records, key=lambda r: (r.dtype != "fp32", MODES.index(r.mode) if r.mode in MODES else 99))
    for r in ordered:
        speed = f"{eager / r.latency_ms:.2f}x" if eager and r.latency_ms else "-"
        detail = r.reason or ""
        if r.fused_ops:
            detail = (detail + "; " if detail else "") + f"fused: {', '.join(r.fused_ops[:6])}"
        if r.frozen is False:
            detail = (detail + "; " if detail else "") + "not frozen"
        if r.serializable is False:
            detail = (detail + "; " if detail else "") + f"not serializable ({r.serializable_reason})"
        lines.append(
            (
                r.mode,
                r.dtype,
                r.status,
                "-" if r.max_abs_diff is None else f"{r.max_abs_diff:.2g}",
                "-" if r.latency_ms is None else f"{r.latency_ms:.1f}",
                speed,
                detail,
            )
        )
    widths = [max(len(row[i]) for row in lines) for i in range(len(header) - 1)]
    out = ["  ".join(row[i].ljust(widths[i]) for i in range(len(widths))) + "  " + row[-1] for row in lines]
    failing = [r for r in records if r.failed]
    counts = report_model.summary(records)
    out.append(", ".join(report_model.counts_text(counts)) + f" ({len(records)} checks)")
    if failing:
        out.append(f"{len(failing)} check(s) failed: " + ", ".join(f"{r.mode}/{r.dtype} {r.status}" for r in failing))
    return [line.rstrip() for line in out]
