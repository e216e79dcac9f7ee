"""``jitcpu run --ray``: the same job on a Ray cluster, with Ray Data doing the scheduling.

The driver reads the input with Ray Data (:mod:`.raydata`), decides the mode once on the input's first
rows (the same ``auto`` logic as one process, :func:`.selection.choose`), and hands the decision to a
pool of actors (``map_batches`` with a callable class holding one
:class:`~pytest_jitcpu.inference.runner.Predictor` each). Every actor checks that mode against eager on
its own first batch before using it and falls back to eager, logged, when it does not match on that
machine. Output: one merged JSONL (or .npy) in input order written by the driver, and/or JSONL /
Parquet shards written by the cluster's workers.

No row is lost or repeated: every row carries its line number (and its file when there are several) from
the reader to the output; the driver counts the input, checks that every (file, line) came out exactly
once, and drops a repeat a retried task may produce (in the merged file as it streams, in the shards
by rewriting the shard). An actor that dies is restarted by Ray (``max_restarts=-1``) and its batch
retried (``max_task_retries=-1``).

This module imports Ray: it is loaded only when a run asks for ``--ray``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    import pyarrow as pa
    import ray
    import ray.data
except ImportError as exc:  # pragma: no cover - the message is the point
    from ..settings import UsageError

    raise UsageError(f"--ray needs Ray Data ({exc}); install it with pip install 'pytest-jitcpu[ray]'") from None

from ..settings import UsageError
from . import raydata, writers
from .models import DEFAULT_LABEL
from .raydata import SHARD_FORMATS, Seen
from .runner import Predictor, RowError
from .selection import display
from .summary import Summary

ROWS_PER_CALL = 512  # rows per map_batches call: one length-bucketed window inside the actor


# -- actors ----------------------------------------------------------------------------------------
@ray.remote(num_cpus=0)
class Reports:
    """What each actor ran (mode, fallback) and which rows it truncated, collected for the driver."""

    def __init__(self) -> None:
        self.actors: dict[int, dict[str, Any]] = {}
        self.truncated: set[tuple[str, int]] = set()

    def actor(self, pid: int, node: str, mode: str, reason: str, fallback: str | None) -> None:
        self.actors[pid] = {"pid": pid, "node": node, "mode": mode, "reason": reason, "fallback": fallback}

    def truncate(self, keys: list[tuple[str, int]]) -> None:
        self.truncated.update(keys)

    def collect(self) -> dict[str, Any]:
        return {"actors": list(self.actors.values()), "truncated": sorted(self.truncated)}


class InferActor:
    """The callable class ``map_batches`` runs: one Predictor per actor, in the mode the driver chose.

    The Predictor checks that mode against eager on this actor's first batch (a named mode is verified
    before use, as in one process) and runs eager, logged, when it does not match here."""

    def __init__(
        self,
        model: str | None,
        task: str,
        mode: str,
        dtype: str,
        threads: int,
        options: dict[str, Any],
        schema: pa.Schema,
        reports: Any,
    ) -> None:
        self.pid = os.getpid()
        self.schema = schema
        self.reports = reports
        self.task = task
        self.with_file = "file" in schema.names
        self.expected = f"{display(mode)}/{dtype}"
        if "+" in mode:
            # a variant of a mode (the oneDNN-fused trace) is no --mode value: it is verified against eager
            # as an explicit candidate, and kept unless eager is faster on this actor
            options = {**options, "candidates": [display(mode)]}
            mode = "auto"
        self.predictor = Predictor(model, task, mode=mode, dtype=dtype, threads=threads, log=_stderr, **options)
        self.reported: tuple[str, str | None] | None = None

    def _report(self) -> None:
        p = self.predictor
        if p.decision is None:
            return
        fallback = p.runner.fallback if p.runner is not None else None
        mode = "eager/" + p.decision.dtype if fallback else p.decision.name
        if self.reported == (mode, fallback):
            return
        self.reported = (mode, fallback)
        node = ray.get_runtime_context().get_node_id()
        if mode != self.expected and not fallback:
            _stderr(f"jitcpu: actor pid {self.pid}: {self.expected} did not verify here; running {mode}")
        ray.get(self.reports.actor.remote(self.pid, node, mode, p.decision.reason, fallback))

    def __call__(self, batch: pa.Table) -> pa.Table:
        records = batch.to_pylist()
        items = raydata.to_rows(records)
        outputs = list(self.predictor.stream(items))
        self._report()
        if self.predictor.summary.truncated:
            lines = set(self.predictor.summary.truncated_lines)
            ray.get(self.reports.truncate.remote([(r["file"], r["line"]) for r in records if r["line"] in lines]))
        return raydata.output_table(records, outputs, self.schema, self.task)


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- the run ---------------------------------------------------------------------------------------
@dataclass
class ClusterSummary(Summary):
    """A Ray run's summary: the single-process counts plus the cluster layout."""

    actors: int = 0
    threads: int = 0
    address: str = ""
    ray_version: str = ""
    actor_modes: list[dict[str, Any]] = field(default_factory=list)
    repeats_dropped: int = 0
    shards: str | None = None
    first_output_s: float | None = None  # when the first block of results reached the driver
    first_rows: int = 0  # rows in that block

    def line(self) -> str:
        counts = f"{self.ok} ok" + (f", {self.skipped} skipped" if self.skipped else "")
        text = f"{self.rows} rows ({counts}) in {self.wall_s:.1f} s: {self.rows_per_s:.1f} rows/s"
        if self.first_output_s is not None:
            text += f" (first results after {self.first_output_s:.1f} s)"
        text += f"; mode {self.mode}/{self.dtype}"
        fell = [a for a in self.actor_modes if a["mode"] != f"{self.mode}/{self.dtype}"]
        if fell:
            text += f" ({len(fell)} of {len(self.actor_modes)} actors ran eager: see the log)"
        thread = "thread" if self.threads == 1 else "threads"
        text += (
            f"; {self.actors} actor{'s' if self.actors != 1 else ''} x {self.threads} {thread} (Ray {self.ray_version})"
        )
        return text

    def to_json(self) -> dict[str, Any]:
        out = super().to_json()
        out.update(
            actors=self.actors,
            threads_per_actor=self.threads,
            ray_address=self.address,
            ray_version=self.ray_version,
            actor_modes=self.actor_modes,
            repeats_dropped=self.repeats_dropped,
            shards=self.shards,
            first_output_s=self.first_output_s,
        )
        return out


def _connect(address: str | None) -> tuple[bool, str]:
    """(whether this call started Ray, the address). An empty address: RAY_ADDRESS, else a new local cluster."""
    if ray.is_initialized():
        return False, ray.get_runtime_context().gcs_address
    kwargs: dict[str, Any] = {"log_to_driver": True, "configure_logging": False}
    target = address or os.environ.get("RAY_ADDRESS") or None
    if target is None:
        kwargs["include_dashboard"] = False
    try:
        ray.init(address=target, **kwargs)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise UsageError(f"--ray {target or ''}: cannot reach the Ray cluster: {str(exc).splitlines()[0]}") from None
    return True, ray.get_runtime_context().gcs_address


def _shards_target(path: str | Path) -> tuple[Path, Path]:
    target = Path(path).expanduser()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise UsageError(
            f"--shards: {path} exists and is not an empty folder; give a new folder (shards never overwrite)"
        )
    return target, target.parent / f".{target.name}.{os.getpid()}.part"


def _check_output(output: str | Path, files: list[str]) -> None:
    out = os.path.abspath(Path(output).expanduser())
    if out in files:
        raise UsageError(f"--output: {output} is an input file; write to a new file")


def run(
    model: str | Path | None,
    task: str | None,
    input: str | Path | Sequence[str | Path],
    output: str | Path | None = None,
    *,
    address: str | None = None,
    actors: int | None = None,
    threads: int | None = None,
    shards: str | Path | None = None,
    shard_format: str = "jsonl",
    input_format: str | None = None,
    progress: bool | None = None,
    rows_per_call: int = ROWS_PER_CALL,
    mode: str = "auto",
    dtype: str = "fp32",
    log: Callable[[str], None] | bool = True,
    **options: Any,
) -> ClusterSummary:
    """Run MODEL over ``input`` on Ray: ``output`` (one JSONL or .npy in input order, written by the driver)
    and/or ``shards`` (a new folder of ``shard_format`` files written by the workers). Raises RowError for
    a bad row with on_error="fail" and UsageError for bad arguments; nothing is left behind on failure."""
    with warnings.catch_warnings():
        # Ray Data warns about its own deprecated settings when it builds its context: not the user's
        # concern, and it must not fail a test suite run with filterwarnings = error.
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"ray(\.|$)")
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"ray(\.|$)")
        return _run(
            model,
            task,
            input,
            output,
            address=address,
            actors=actors,
            threads=threads,
            shards=shards,
            shard_format=shard_format,
            input_format=input_format,
            progress=progress,
            rows_per_call=rows_per_call,
            mode=mode,
            dtype=dtype,
            log=log,
            **options,
        )


def _run(
    model: str | Path | None,
    task: str | None,
    input: str | Path | Sequence[str | Path],
    output: str | Path | None,
    *,
    address: str | None,
    actors: int | None,
    threads: int | None,
    shards: str | Path | None,
    shard_format: str,
    input_format: str | None,
    progress: bool | None,
    rows_per_call: int,
    mode: str,
    dtype: str,
    log: Callable[[str], None] | bool,
    **options: Any,
) -> ClusterSummary:
    start = time.perf_counter()
    if output is None and shards is None:
        raise UsageError("--output or --shards: say where the results go")
    if shard_format not in SHARD_FORMATS:
        raise UsageError(f"--shard-format: unknown format {shard_format!r}; choose from {', '.join(SHARD_FORMATS)}")
    for name, value in (("--actors", actors), ("--threads", threads), ("rows_per_call", rows_per_call)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise UsageError(f"{name}: {value!r} must be an integer >= 1")
    say: Callable[[str], None] = log if callable(log) else (_stderr if log else (lambda _m: None))  # type: ignore[assignment]
    files = raydata.input_files(input)
    if output is not None:
        _check_output(output, files)
        if str(output) == "-":
            raise UsageError("--output: --ray writes a file, not standard output")
    shard_dir, shard_tmp = _shards_target(shards) if shards is not None else (None, None)
    threads = threads or 1
    driver = Predictor(model, task, mode=mode, dtype=dtype, threads=threads, log=say, **options)
    started, where = _connect(address)
    context = ray.data.DataContext.get_current()
    saved = (context.execution_options.preserve_order, context.enable_progress_bars)
    writer = None
    try:
        cpus = int(ray.cluster_resources().get("CPU", 0))
        n_actors = actors or max(1, cpus // threads)
        if n_actors * threads > cpus:
            raise UsageError(
                f"--actors {n_actors} x --threads {threads} needs {n_actors * threads} CPUs; the Ray cluster at "
                f"{where} has {cpus}: lower --actors or --threads, or add nodes"
            )
        context.execution_options.preserve_order = output is not None
        if progress is False:
            context.enable_progress_bars = False
        source = ray.data.read_datasource(raydata.RowSource(files, driver.loaded.task, input_format), num_cpus=0)
        total = source.count()
        sample = raydata.to_rows(source.take(driver.window))
        decision = driver.decide(sample, expected_rows=total)
        ids = [r.id for r in sample if r.id is not None]
        id_type = pa.int64() if all(isinstance(v, int) and not isinstance(v, bool) for v in ids) else pa.string()
        schema = raydata.output_schema(driver.loaded.task, id_type, with_file=len(files) > 1)
        reports = Reports.remote()
        actor_options = {k: v for k, v in options.items() if k not in ("candidates", "log")}
        # Actors always keep a bad row as {"line", "error"}; the driver applies --on-error in input order, so
        # "fail" names the first bad row of the input, as one process does, whichever actor met it first.
        actor_options.update(batch_size=driver.batch_size, on_error="skip")
        say(
            f"jitcpu: Ray at {where}: {total} rows in {len(files)} file(s); {n_actors} actor(s) x {threads} thread(s) "
            f"will run {decision.name} (each verifies it on its first batch)"
        )
        results = source.map_batches(
            InferActor,
            fn_constructor_kwargs={
                "model": None if driver.loaded.label == DEFAULT_LABEL else str(driver.loaded.path),
                "task": driver.loaded.task,
                "mode": decision.mode,
                "dtype": decision.dtype,
                "threads": threads,
                "options": actor_options,
                "schema": schema,
                "reports": reports,
            },
            batch_size=rows_per_call,
            batch_format="pyarrow",
            # A fixed pool; Ray places each actor where --threads CPUs are free. Ray Data gives its actor pools
            # max_restarts=-1 and max_task_retries=-1: a killed actor is started again and its batch retried.
            compute=ray.data.ActorPoolStrategy(size=n_actors),
            num_cpus=threads,
        )
        summary = ClusterSummary(
            task=driver.loaded.task,
            mode=decision.name.split("/")[0],
            dtype=decision.dtype,
            decision=decision.reason,
            max_seq_length=driver.loaded.max_seq_length,
            actors=n_actors,
            threads=threads,
            address=where,
            ray_version=ray.__version__,
        )
        summary.setup_s = time.perf_counter() - start
        seen = Seen()
        if output is not None:
            if shard_dir is not None:
                results = results.materialize()  # computed once, for the merged file and the shards
            writer = writers.open_writer(output, driver.loaded.task)
            for block in results.iter_batches(batch_size=None, batch_format="pyarrow"):
                if summary.first_output_s is None:
                    summary.first_output_s = time.perf_counter() - start
                    summary.first_rows = block.num_rows
                for record in raydata.records(block):
                    if _count(record, seen, summary, driver.on_error):
                        writer.write(record)
        if shard_dir is not None and shard_tmp is not None:
            # Writers take no CPU slot, else they would wait behind actors holding every CPU.
            if shard_format == "parquet":
                results.write_parquet(str(shard_tmp), ray_remote_args={"num_cpus": 0})
            else:
                results.write_datasink(raydata.JsonlShards(str(shard_tmp)), ray_remote_args={"num_cpus": 0})
            shard_seen = Seen()
            for record in raydata.dedupe_shards(shard_tmp, shard_format, shard_seen):
                if output is None:
                    _count(record, seen, summary, driver.on_error)
                elif record["repeat"]:
                    summary.repeats_dropped += 1
            if shard_seen.count != total:
                raise RuntimeError(f"the shards hold {shard_seen.count} distinct rows for {total} input rows")
        if seen.count != total:
            raise RuntimeError(f"the output has {seen.count} distinct rows for {total} input rows")
        if summary.repeats_dropped:
            say(f"jitcpu: dropped {summary.repeats_dropped} repeated row(s) a retried task emitted twice")
        collected = ray.get(reports.collect.remote())
        summary.actor_modes = collected["actors"]
        for _file, line in collected["truncated"]:
            summary.truncate(line)
        if writer is not None:
            writer.close()
            writer = None
        if shard_dir is not None and shard_tmp is not None:
            if shard_dir.exists():
                shard_dir.rmdir()
            os.replace(shard_tmp, shard_dir)
            summary.shards = str(shard_dir)
        summary.wall_s = time.perf_counter() - start
        return summary
    except BaseException:
        if writer is not None:
            writer.abort()
        if shard_tmp is not None:
            shutil.rmtree(shard_tmp, ignore_errors=True)
        raise
    finally:
        context.execution_options.preserve_order, context.enable_progress_bars = saved
        if started:
            with contextlib.suppress(Exception):
                ray.shutdown()


def _count(record: dict[str, Any], seen: Seen, summary: ClusterSummary, on_error: str) -> bool:
    """Account for one output row; False for a repeat (dropped). A bad row raises RowError with "fail"."""
    file = record.get("file")
    if not seen.add(file or "", record["line"]):
        summary.repeats_dropped += 1
        return False
    summary.rows += 1
    if record.get("error") is not None:
        reason = record["error"] + (f" (in {file})" if file else "")
        if on_error == "fail":
            raise RowError(record["line"], reason)
        summary.skip(record["line"], reason)
    else:
        summary.ok += 1
    return True


def cli_run(args: Any, model: str | None, mode: str, dtype: str) -> int:
    """``jitcpu run --ray``: the run, its notes and final line on stderr; the exit status."""
    from .selection import ModelFailed

    try:
        summary = run(
            model,
            args.task,
            args.input,
            args.output,
            address=args.ray or None,
            actors=args.actors,
            threads=args.threads,
            shards=args.shards,
            shard_format=args.shard_format,
            input_format=args.input_format,
            progress=args.progress,
            mode=mode,
            dtype=dtype,
            batch_size=args.batch_size,
            max_seq_length=args.max_seq_length,
            doc_stride=args.doc_stride,
            on_error=args.on_error,
            candidates=args.candidates,
            pooling=args.pooling,
            normalize=args.normalize,
            verbose=args.verbose - args.quiet,
        )
    except ModelFailed as exc:
        _stderr(f"jitcpu run: {exc}; no output written")
        return 1
    except RowError as exc:
        _stderr(f"jitcpu run: {args.input} {exc}")
        _stderr("jitcpu run: stopped (--on-error fail); no output written. Pass --on-error skip to skip bad rows.")
        return 1
    for note in summary.notes():
        _stderr(note)
    if args.summary:
        from ..atomic import write_text

        write_text(args.summary, json.dumps(summary.to_json(), indent=2) + "\n")
    _stderr(f"jitcpu run: {summary.line()}")
    for target in (args.output, summary.shards):
        if target and args.verbose >= args.quiet:
            _stderr(f"jitcpu run: wrote {target}")
    return 0
