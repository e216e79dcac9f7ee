"""The inference loop: windows of rows -> features -> length-bucketed batches -> the chosen mode ->
per-row outputs in input order. The command line and the Python API both use :class:`Predictor`.
"""

from __future__ import annotations

import itertools
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import backends, environment
from ..atomic import same_file
from ..backends import table
from ..backends.base import Built, first_line
from ..inputs import Inputs
from ..settings import DTYPES, UsageError
from . import batching, gate, models, rows, selection, tasks, writers
from . import cache as cache_module
from .progress import Progress
from .summary import Summary
from .task_table import task_row

ON_ERROR: tuple[str, ...] = ("fail", "skip")
RUN_DTYPES: tuple[str, ...] = (*DTYPES, "auto")
COUNT_LIMIT = 256 << 20  # count the lines of input files up to this size (larger: effort as for a full window)


class RowError(Exception):
    """A row could not be processed and ``on_error`` is ``fail``; ``line`` says where."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line = line
        self.reason = reason


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class ModeRunner:
    """Runs batches in the chosen mode; the first failure is logged once and eager (same dtype) runs that
    batch and every later one, so no row is lost or repeated."""

    def __init__(
        self, built: Built, eager: Built, log: Callable[[str], None], verifier: gate.Verifier | None = None
    ) -> None:
        self.built = built
        self.eager = eager
        self.log = log
        self.fallback: str | None = None
        self.verifier = verifier  # --verify-all: each batch checked against eager fp32, missing rows replaced

    def __call__(self, inputs: Inputs) -> tuple[Any, float]:
        start = time.perf_counter()
        if self.verifier is not None and not (self.built.mode == "eager" and self.built.dtype == "fp32"):
            fresh = inputs.clone()  # the fp32 reference runs on the batch as given, not as the mode left it
            out, _ = self._run(inputs)
            out = self.verifier(fresh, out)
            return out, (time.perf_counter() - start) * 1000
        if self.verifier is not None:
            out, ms = self._run(inputs)
            self.verifier.fp32_rows(_rows(out))
            return out, ms
        return self._run(inputs)

    def _run(self, inputs: Inputs) -> tuple[Any, float]:
        start = time.perf_counter()
        try:
            out = self.built.run(inputs)
        except Exception as exc:
            if self.built is self.eager:
                raise
            self.fallback = (
                f"{selection.display(self.built.mode)}/{self.built.dtype} failed on a batch {inputs.describe()}: "
                f"{first_line(exc)}"
            )
            self.log(f"jitcpu: {self.fallback}; continuing in eager/{self.eager.dtype} for the rest of the run")
            self.built = self.eager
            start = time.perf_counter()
            out = self.built.run(inputs)
        return out, (time.perf_counter() - start) * 1000


def _rows(output: Any) -> int:
    from ..nested import tensors

    found = tensors(output)
    return int(found[0].shape[0]) if found and found[0].dim() else 0


@dataclass
class Result:
    """The outputs of :meth:`Predictor.predict`, in input order, and the run's summary."""

    outputs: list[dict[str, Any]]
    summary: Summary
    decision: selection.Decision | None = None
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.outputs)

    def __repr__(self) -> str:
        kept = f"{len(self.outputs)} outputs" if self.outputs else "outputs written to the output file"
        return f"Result({kept}; {self.summary.line()})"

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.outputs)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.outputs[i]

    @property
    def embeddings(self) -> np.ndarray:
        """feature-extraction: a (rows, dim) float32 array; a skipped row is a row of NaN."""
        vectors = [o.get("embedding") for o in self.outputs]
        dim = next((len(v) for v in vectors if v is not None), 0)
        return np.stack([v if v is not None else np.full(dim, np.nan, np.float32) for v in vectors]).astype(np.float32)


def _check_int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UsageError(f"{name}: {value!r} must be an integer >= {minimum}")
    return value


class Predictor:
    """A model loaded for a task, run in a verified mode. Build once, call many times (a notebook's cell).

    >>> p = Predictor("default", "feature-extraction")          # doctest: +SKIP
    >>> p.predict(["a sentence", "another"]).embeddings.shape   # doctest: +SKIP
    (2, 384)
    """

    def __init__(
        self,
        model: str | Path | None = None,
        task: str | None = None,
        *,
        mode: str = "auto",
        dtype: str | None = None,
        batch_size: int = 32,
        threads: int | None = None,
        max_seq_length: int | None = None,
        doc_stride: int = 128,
        on_error: str = "fail",
        candidates: Sequence[str] | str | None = None,
        window: int = batching.WINDOW_ROWS,
        pooling: str | None = None,
        normalize: bool | None = None,
        log: Callable[[str], None] | bool = True,
        cache: bool | None = None,
        verbose: int = 0,
        min_cosine: float | str | None = None,
        min_agreement: float | str | None = None,
        verify_all: bool = False,
    ) -> None:
        start = time.perf_counter()
        self.mode = selection.parse_mode(mode)
        if dtype is not None and dtype not in RUN_DTYPES:
            raise UsageError(f"--dtype: unknown dtype {dtype!r}; choose from {', '.join(RUN_DTYPES)}")
        if dtype == "auto" and self.mode != "auto":
            raise UsageError("--dtype auto needs --mode auto (it times fp32 and bf16 and keeps the faster)")
        self.dtype = dtype
        self.batch_size = _check_int(batch_size, "--batch-size", 1)
        self.window = max(_check_int(window, "window", 1), self.batch_size)
        if on_error not in ON_ERROR:
            raise UsageError(f"--on-error: unknown policy {on_error!r}; choose from {', '.join(ON_ERROR)}")
        self.on_error = on_error
        # Candidates named by the user are all tried; the default ones only as this input's size allows.
        self.explicit_candidates = candidates is not None
        self.candidates = (
            selection.parse_candidates(candidates)
            if candidates is not None
            else selection.auto_modes(quantized=True)
            if min_cosine is not None or min_agreement is not None
            else selection.auto_modes()
        )
        self.cache = cache_module.enabled() if cache is None else bool(cache)  # auto's decision cache
        self.expected_rows: int | None = None  # rows in the input when known: scales auto's effort
        if threads is not None:
            torch.set_num_threads(_check_int(threads, "--threads", 1))
        if max_seq_length is not None:
            _check_int(max_seq_length, "--max-seq-length", 1)
        _check_int(doc_stride, "--doc-stride", 0)
        self.log: Callable[[str], None] = (
            log if callable(log) else (_stderr if log else (lambda _message: None))  # type: ignore[assignment]
        )
        # Like pytest's -q/-v: 0 says the decision in one line; 1 adds the model's notes and every candidate
        # with its status, timing and reason; -1 only warnings. The summary is the caller's to print.
        self.verbose = int(verbose)
        # the budget's values are checked before the model loads; its task once the model says which it is
        self.budget = gate.parse_budget(min_cosine, min_agreement, verify_all)
        self._check_quantized()
        self.loaded = models.load(model, task, max_seq_length, pooling, normalize)
        gate.check_task(self.budget, self.loaded.task)
        if task_row(self.loaded.task).windows and doc_stride >= self.loaded.max_seq_length // 2:
            raise UsageError(
                f"--doc-stride: {doc_stride} must be less than half of --max-seq-length {self.loaded.max_seq_length}"
            )
        self.task = tasks.make(self.loaded, self.loaded.max_seq_length, doc_stride)
        self.decision: selection.Decision | None = None
        self.runner: ModeRunner | None = None
        self.summary = Summary(task=self.loaded.task, max_seq_length=self.loaded.max_seq_length)
        self.load_s = time.perf_counter() - start
        for note in self.loaded.notes if self.verbose > 0 else ():
            self.log(f"jitcpu: {note}")
        self._pad_id = self.loaded.tokenizer.pad_token_id
        if self._pad_id is None:
            self._pad_id = 0
        self._left = getattr(self.loaded.tokenizer, "padding_side", "right") == "left"

    def _check_quantized(self) -> None:
        """An int8 mode is judged by an accuracy budget: asking for one without a budget is a usage error
        (fp tolerances would always reject it)."""
        if self.budget is not None:
            return
        asked = [selection.MODE_NAMES[self.mode]] if self.mode not in ("auto", "eager") else []
        asked += [m for m in self.candidates if self.explicit_candidates]
        int8 = [selection.display(m) for m in asked if table.backend(m.partition("+")[0]).quantized]
        if int8:
            flag = "--mode" if self.mode not in ("auto", "eager") and int8[0] == self.mode else "--candidates"
            raise UsageError(
                f"{flag}: {int8[0]} is int8: state the accuracy it must keep, --min-cosine X (embeddings) or "
                "--min-agreement X (labels), e.g. 0.99; it is measured row by row against eager fp32"
            )

    # -- batches and mode ----------------------------------------------------------------------------
    def make_inputs(self, features: Sequence[tasks.Feature]) -> Inputs:
        return batching.as_inputs(batching.pad(features, self._pad_id, self.loaded.input_names, self._left))

    def _dtypes(self) -> list[str]:
        """fp32, and for ``auto`` bf16 too where the CPU has native BF16 (emulated bf16 is slower than
        fp32); ``--dtype auto`` tries both anyway, ``--dtype fp32|bf16`` only that one."""
        if self.dtype == "auto":
            return ["fp32", "bf16"]
        if self.dtype is None:
            return ["fp32", "bf16"] if self.mode == "auto" and environment.native_bf16() else ["fp32"]
        return [self.dtype]

    def _choose(self, features: Sequence[tasks.Feature], order: list[list[int]]) -> dict[int, tuple[Any, float]]:
        """Choose the mode on the first window's batches; returns the outputs selection already computed
        (batch index in ``order`` -> (model output, ms)), which the run uses instead of running them again."""
        module = self.loaded.module
        dtypes = self._dtypes()
        if self.dtype == "bf16" and not environment.native_bf16():
            self.log(
                f"jitcpu: warning: this CPU ({environment.isa()}) has no native BF16: bf16 autocast is emulated "
                "and usually slower than fp32"
            )
        first = self.make_inputs([features[i] for i in order[0]])
        if self.mode == "eager":
            eager = backends.build("eager", module, first, dtypes[0])
            self.decision = selection.Decision("eager", dtypes[0], eager, "requested")
        else:
            plan = selection.Plan(
                batch=lambda j: self.make_inputs([features[i] for i in order[j]]),
                tokens=[len(b) * max(len(features[i]) for i in b) for b in order],
                rows=len({f.row for f in features}),
                expected_rows=self.expected_rows,
                sizes=[len(b) for b in order],
            )
            auto = self.mode == "auto"
            modes = self.candidates if auto else ("eager", selection.MODE_NAMES[self.mode])
            key = self._cache_key(modes, dtypes) if auto else None
            entry = cache_module.get(key) if key else None
            self.decision = selection.choose(
                module,
                plan,
                modes,
                dtypes,
                timed=auto,
                explicit=self.explicit_candidates or not auto,
                log=self.log,
                cached=(entry["mode"], entry["dtype"]) if entry else None,
                budget=self.budget,
            )
            if key and self.decision.cacheable:
                ms = {c.name: c.ms for c in self.decision.candidates if c.ms is not None}
                cache_module.put(key, {"mode": self.decision.mode, "dtype": self.decision.dtype, "ms": ms})
            elif key and self.decision.stale:
                cache_module.put(key, None)
        d = self.decision
        if d.candidates and self.verbose > 0:
            tried = ", ".join(dict.fromkeys(selection.display(c.mode) for c in d.candidates))
            kept = f"; kept the outputs of {len(d.kept)} batch{'es' if len(d.kept) != 1 else ''}" if d.kept else ""
            self.log(
                f"jitcpu: mode {self.mode}: checked {tried} ({'/'.join(dtypes)}) on real batches of this input "
                f"in {selection.seconds(d.seconds)}{kept}:"
            )
            for line in d.lines():
                self.log(line)
            skipped = [m for m in selection.NOT_IN_AUTO if selection.MODE_NAMES[m] not in self.candidates]
            if self.mode == "auto" and skipped:
                why = "; ".join(f"{m}: {selection.NOT_IN_AUTO[m]}" for m in skipped)
                self.log(f"  not tried ({why}); add them with --candidates")
            if self.mode == "auto" and self.budget is None:
                int8 = ", ".join(selection.display(m) for m in table.QUANTIZED_MODES)
                self.log(f"  not tried ({int8}: int8, only under an accuracy budget: --min-cosine or --min-agreement)")
        if self.verbose >= 0:
            self.log(f"jitcpu: running {d.name}: {d.reason}")
        if d.gate is not None and self.verbose >= 0:
            self.log(f"jitcpu: accuracy gate ({d.budget.describe() if d.budget else ''}): {d.name} {d.gate.text()}")
            if d.calibration_rows:
                self.log(f"jitcpu: {d.name} calibrated on {d.calibration_rows} other rows of this input, set aside")
            if not (self.budget and self.budget.verify_all):
                self.log(f"jitcpu: note: {gate.statistical_note(d.gate)}")
        eager = d.built
        if d.mode != "eager":
            eager = backends.build("eager", module, first, d.dtype)
        verifier = None
        if self.budget is not None and self.budget.verify_all:
            fp32 = d.built if (d.mode, d.dtype) == ("eager", "fp32") else backends.build("eager", module, first, "fp32")
            verifier = gate.Verifier(self.budget, fp32.run)
        self.runner = ModeRunner(d.built, eager, self.log, verifier)
        return d.kept

    def _cache_key(self, modes: Sequence[str], dtypes: Sequence[str]) -> str | None:
        if not self.cache:
            return None
        try:
            settings = {
                "task": self.loaded.task,
                "batch_size": self.batch_size,
                "max_seq_length": self.loaded.max_seq_length,
                "candidates": list(modes),
                "dtypes": list(dtypes),
            }
            if self.budget is not None:  # a choice under one budget says nothing about another
                settings["budget"] = [self.budget.metric, self.budget.threshold]
            return cache_module.key(self.loaded.path, settings)
        except OSError:
            return None  # an unreadable model file: no cache, the choice runs in full

    def decide(self, items: Iterable[Any], expected_rows: int | None = None) -> selection.Decision:
        """Choose the mode on a sample of rows (the Ray driver decides once, then hands the mode to its
        actors); ``expected_rows``: rows in the whole input, which scales auto's effort as in one run."""
        window = [r for r in itertools.islice(rows.from_iterable(items, self.loaded.task), self.window) if r.ok]
        features = self.task.encode(window).features
        if not features:
            raise UsageError("no usable row in the input's first rows to choose a mode on")
        if expected_rows is not None:
            self.expected_rows = expected_rows
        with models.quiet_transformers():
            self._choose(features, batching.length_batches(features, self.batch_size))
        assert self.decision is not None
        return self.decision

    # -- the loop ------------------------------------------------------------------------------------
    def _bad(self, row: rows.Row, reason: str, summary: Summary) -> None:
        if self.on_error == "fail":
            raise RowError(row.line, reason)
        summary.skip(row.line, reason)

    def _run_batch(
        self, features: Sequence[tasks.Feature], summary: Summary
    ) -> tuple[list[Any] | None, dict[int, str]]:
        """(per-feature results, errors by feature index); eager errors are narrowed to single rows."""
        assert self.runner is not None
        try:
            out, ms = self.runner(self.make_inputs(features))
        except Exception as exc:  # noqa: BLE001 - a model error becomes a row error, narrowed below
            if len(features) == 1:
                return None, {0: f"the model failed on this row: {first_line(exc)}"}
            results: list[Any] = [None] * len(features)
            errors: dict[int, str] = {}
            for i, feature in enumerate(features):
                part, err = self._run_batch([feature], summary)
                if part is None:
                    errors[i] = err[0]
                else:
                    results[i] = part[0]
            return results, errors
        summary.latencies_ms.append(ms)
        summary.batches += 1
        return self.task.reduce(out, features), {}

    def _window(self, window: list[rows.Row], summary: Summary, progress: Progress) -> Iterator[dict[str, Any]]:
        for row in window:
            if not row.ok:
                self._bad(row, row.error or "bad row", summary)
        encoded = self.task.encode(window)
        errors: dict[int, str] = {}
        for pos, reason in encoded.errors.items():
            self._bad(window[pos], reason, summary)
            errors[pos] = reason
        for pos in encoded.truncated:
            summary.truncate(window[pos].line)
        features = encoded.features
        order = batching.length_batches(features, self.batch_size)
        done: dict[int, tuple[Any, float]] = {}
        if features and self.runner is None:
            with models.quiet_transformers():  # tracing touches properties that log config chatter
                done = self._choose(features, order)
        parts: dict[int, list[Any]] = {}
        per_row: dict[int, int] = {}
        for f in features:
            per_row[f.row] = per_row.get(f.row, 0) + 1
        for j, batch in enumerate(order):
            chosen = [features[i] for i in batch]
            if j in done:  # selection ran this batch in eager fp32 already: its output is the batch's
                out, ms = done.pop(j)
                if self.runner is not None and self.runner.verifier is not None:
                    self.runner.verifier.fp32_rows(len(chosen))
                summary.latencies_ms.append(ms)
                summary.batches += 1
                results, failed = self.task.reduce(out, chosen), {}
            else:
                results, failed = self._run_batch(chosen, summary)
            for k, feature in enumerate(chosen):
                if k in failed:
                    if feature.row not in errors:
                        errors[feature.row] = failed[k]
                        self._bad(window[feature.row], failed[k], summary)
                else:
                    parts.setdefault(feature.row, []).append(results[k])  # type: ignore[index]
            progress.update(sum(1 / per_row[f.row] for f in chosen))
        for pos, row in enumerate(window):
            summary.rows += 1
            head: dict[str, Any] = {} if row.id is None else {"id": row.id}
            reason = row.error or errors.get(pos)
            if reason is None and pos not in parts:
                reason = "no output for this row"  # cannot happen; never drop a row silently
                self._bad(row, reason, summary)
            if reason is not None:
                yield {**head, "line": row.line, "error": reason}
                continue
            summary.ok += 1
            yield {**head, **self.task.combine(row, parts[pos])}
        progress.update(len(window) - len(per_row))  # rows that never reached the model

    def stream(
        self, items: Iterable[Any], progress: Progress | None = None, summary: Summary | None = None
    ) -> Iterator[dict[str, Any]]:
        """Outputs in input order, one per row (a bad row gives ``{"line", "error"}`` with on_error="skip").

        ``items``: Row objects, str (a text) or dicts (JSONL fields). Memory is bounded by the window size.
        """
        summary = summary if summary is not None else self._new_summary()
        progress = progress or Progress(enabled=False)
        if self.runner is None and self.expected_rows is None and hasattr(items, "__len__"):
            self.expected_rows = len(items)  # type: ignore[arg-type]
        source = rows.from_iterable(items, self.loaded.task)
        start = time.perf_counter()
        setup = 0.0
        try:
            for window in batching.windows(source, self.window):
                had_runner = self.runner is not None
                yield from self._window(window, summary, progress)
                if not had_runner and self.runner is not None and self.decision is not None:
                    setup += self.decision.seconds
                    summary.choice_s += self.decision.seconds
                    summary.mode, summary.dtype = self.decision.name.split("/")
                    summary.decision = self.decision.reason
                    summary.gate = self.decision.gate.to_json() if self.decision.gate is not None else None
        finally:
            if self.runner is not None:
                summary.fallback = self.runner.fallback
                if self.runner.verifier is not None:
                    summary.verified = self.runner.verifier.to_json()
                if summary.fallback:
                    summary.mode = "eager"
            summary.setup_s += setup
            summary.wall_s += time.perf_counter() - start
            self.summary = summary

    def _new_summary(self) -> Summary:
        summary = Summary(task=self.loaded.task, max_seq_length=self.loaded.max_seq_length)
        if self.decision is not None:
            summary.mode, summary.dtype = self.decision.name.split("/")
            summary.decision = self.decision.reason
            summary.gate = self.decision.gate.to_json() if self.decision.gate is not None else None
        return summary

    def predict(self, items: Iterable[Any]) -> Result:
        """Run on Python values and keep the outputs (for a notebook); see :meth:`stream`."""
        outputs = list(self.stream(items))
        return Result(outputs, self.summary, self.decision)

    def run(
        self,
        input: str | Path,
        output: str | Path,
        input_format: str | None = None,
        progress: bool | None = None,
    ) -> Summary:
        """Stream the rows of ``input`` to ``output`` (JSONL, or .npy for embeddings). Raises UsageError for
        bad arguments and RowError for a bad row with on_error="fail" (then no output file is left)."""
        if str(input) != "-" and str(output) != "-" and same_file(output, input):
            raise UsageError(f"--output {output} is the input file {input}; write the output to another file")
        source = rows.read_file(input, self.loaded.task, input_format)
        writer = writers.open_writer(output, self.loaded.task)
        # Counting lines is a fast pass over the bytes; it tells auto how much work its choice is for.
        total = rows.count_lines(input, limit_bytes=COUNT_LIMIT)
        if self.runner is None:
            self.expected_rows = total
        bar = Progress(enabled=progress)
        if bar.enabled:
            fmt = rows.detect_format(input, input_format)
            if total is not None and fmt in ("csv", "tsv"):
                total = max(total - 1, 0)
            bar.total = total
        summary = self._new_summary()
        summary.setup_s = self.load_s
        summary.wall_s = self.load_s
        self.load_s = 0.0  # counted once, in the first run
        try:
            for obj in self.stream(source, bar, summary):
                writer.write(obj)
        except BaseException:
            bar.close()
            writer.abort()
            raise
        bar.close()
        writer.close()
        return summary
