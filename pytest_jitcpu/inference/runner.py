"""The inference loop: windows of rows -> features -> length-bucketed batches -> the chosen mode ->
per-row outputs in input order. The command line and the Python API both use :class:`Predictor`.
"""

from __future__ import annotations

import itertools
import os
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
from . import artifacts, batching, gate, models, rows, selection, tasks, writers
from . import cache as cache_module
from .progress import Progress
from .summary import Summary
from .task_table import task_row

ON_ERROR: tuple[str, ...] = ("fail", "skip")
RUN_DTYPES: tuple[str, ...] = (*DTYPES, "auto")
RUNTIME_START_S = 0.5  # a torch-free start: Python, numpy, tokenizers and the runtime, loading the file
EXAMPLE_ROWS = 2  # rows of the first (longest) batch a runtime mode is converted with


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


def _input_keys(feed: list[tuple[str, Any]], batch: Inputs) -> list[str] | None:
    """The batch's input name for each of the program's inputs, in the program's order (by name, else by
    value); None when one cannot be told apart (then the artifact is not kept)."""
    given = {k: v.numpy() for k, v in (batch.kwargs or {}).items() if isinstance(v, torch.Tensor)}
    out = []
    for name, array in feed:
        if name in given:
            out.append(name)
            continue
        same = [k for k, v in given.items() if v.shape == np.shape(array) and np.array_equal(v, array)]
        if len(same) != 1:
            return None
        out.append(same[0])
    return out


def _open_artifact(entry: artifacts.Entry) -> Built:
    """A cached artifact as a Built: torch tensors in, its runtime's numpy in the saved input order, torch out."""
    run_arrays = entry.open()
    names = list(entry.meta["inputs"])

    def run(batch: Inputs) -> Any:
        kwargs = batch.kwargs or {}
        outs = [torch.from_numpy(np.asarray(a)) for a in run_arrays([kwargs[n].contiguous().numpy() for n in names])]
        return outs[0] if len(outs) == 1 else tuple(outs)

    return Built(entry.mode, entry.dtype, run)


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
        self.cache = cache_module.enabled() if cache is None else bool(cache)  # decisions and artifacts
        # The request as the artifact cache keys it (the torch-free start builds the same from the CLI's args).
        self._request_args = {
            "batch_size": batch_size,
            "max_seq_length": max_seq_length,
            "pooling": pooling,
            "normalize": normalize,
            "candidates": candidates,
            "threads_requested": threads,
        }
        self._sample: list[rows.Row] = []  # the rows the mode was chosen on (the tokenizer check uses them)
        self._prepared: tuple[str, str] | None = None  # the torch-free candidate built for later runs
        self._prepare = True  # False: a decision for others to run (the Ray driver's), nothing to prepare
        self._plan: Any = None  # (plan, batches, features) the choice ran on
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
        self.first_load_s = self.load_s
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
                example=lambda: self.make_inputs([features[i] for i in order[0][:EXAMPLE_ROWS]]),
            )
            auto = self.mode == "auto"
            modes = self.candidates if auto else ("eager", selection.MODE_NAMES[self.mode])
            key = self._cache_key(modes, dtypes) if auto else None
            request = self._request()
            entry, prebuilt = self._cached_artifact(request, features, modes, dtypes)
            self._prepared = self._preparing(request, entry)
            self._plan = (plan, order, features)
            decided = cache_module.get(key) if key and entry is None else None
            cached = (entry.mode, entry.dtype) if entry else (decided["mode"], decided["dtype"]) if decided else None
            self.decision = selection.choose(
                module,
                plan,
                modes,
                dtypes,
                timed=auto,
                explicit=self.explicit_candidates or not auto,
                log=self.log,
                cached=cached,
                prebuilt=prebuilt,
                budget=self.budget,
                always={self._prepared} if self._prepared else None,
            )
            d = self.decision
            if key and d.cacheable:
                ms = {c.name: c.ms for c in d.candidates if c.ms is not None}
                cache_module.put(key, {"mode": d.mode, "dtype": d.dtype, "ms": ms})
            elif key and d.stale:
                cache_module.put(key, None)
            if entry is not None and prebuilt and d.built is prebuilt.get((entry.mode, entry.dtype)):
                entry.touch()
                d.reason = f"loaded from the artifact cache ({entry.describe()}), and {d.reason}"
            elif entry is not None:
                artifacts.discard(entry.folder)  # it failed on this input: the next run builds afresh
            if request and d.mode in artifacts.KINDS and not (entry and d.built is prebuilt.get((d.mode, d.dtype))):
                self._store(request, d, features, order)
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
            attention = f" ({d.attention} attention)" if d.attention else ""  # a part of the mode that ran
            self.log(f"jitcpu: running {d.name}: {d.reason}{attention}")
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

    def _request(self) -> str | None:
        """The artifact cache's key for this run, or None (cache off, a mode it cannot keep, no model file)."""
        if not self.cache or (self.mode != "auto" and selection.MODE_NAMES[self.mode] not in artifacts.KINDS):
            return None
        options = artifacts.request_options(
            self.loaded.task, mode=self.mode, dtype=self.dtype, budget=self.budget, **self._request_args
        )
        try:
            return artifacts.request_key(self.loaded.path, options)
        except OSError:
            return None

    def _cached_artifact(
        self, request: str | None, features: Sequence[tasks.Feature], modes: Sequence[str], dtypes: Sequence[str]
    ) -> tuple[artifacts.Entry | None, dict[tuple[str, str], Built] | None]:
        """The cached artifact for this request, loaded, when this input is inside its verified domain."""
        entry = artifacts.lookup(request, self.log) if request else None
        if entry is None:
            return None, None
        why = entry.covers(self.loaded.task, max(len(f) for f in features))
        if why is None and (entry.mode not in modes or entry.dtype not in dtypes):
            why = f"the cached {entry.name} is not among this run's candidates"
        if why:
            self.log(f"jitcpu: {why}: choosing the normal way")
            return None, None
        try:
            return entry, {(entry.mode, entry.dtype): _open_artifact(entry)}
        except Exception as exc:  # noqa: BLE001 - a runtime that refuses the file: note, rebuild
            self.log(f"jitcpu: note: the cached {entry.name} cannot be loaded ({first_line(exc)}); building again")
            artifacts.discard(entry.folder)
            return None, None

    def _store(
        self, request: str, d: selection.Decision, features: Sequence[tasks.Feature], order: list[list[int]]
    ) -> None:
        """Keep the verified program for later runs, with its input domain and verification."""
        built = d.built
        if built.portable is None:
            return
        pick = next((c for c in d.candidates if (c.mode, c.dtype) == (d.mode, d.dtype)), None)
        eager = next((c.built for c in d.candidates if (c.mode, c.dtype) == ("eager", "fp32") and c.built), None)
        verified = d.verified or [0]
        widths = [max(len(features[i]) for i in order[j]) for j in verified]
        first = self.make_inputs([features[i] for i in order[0]])
        names = _input_keys(built.portable.feed(first), first)
        if names is None:
            return
        max_tokens = max(widths)
        if (
            eager is not None
            and max_tokens < self.loaded.max_seq_length
            and self._verify_longest(built, eager, features, quantized=pick is not None and pick.quantized)
        ):
            max_tokens = self.loaded.max_seq_length
        with models.quiet_transformers():
            torch_free, tokenizer = self._tokenizer_check()
        meta = {
            "display": selection.display(d.mode),
            "task": self.loaded.task,
            "tokenizer": tokenizer,
            "max_seq_length": self.loaded.max_seq_length,
            "pad_id": self._pad_id,
            "left_padding": self._left,
            "inputs": names,
            "threads": built.portable.options.get("threads", torch.get_num_threads()),
            "options": built.portable.options,
            "torch_free": torch_free,
            "domain": {
                "task": self.loaded.task,
                "max_tokens": max_tokens,
                "batch_sizes": sorted({len(order[j]) for j in verified}),
            },
            "verified": {
                "when": time.time(),
                "rows": sum(len(order[j]) for j in verified),
                "batches": len(verified),
                "worst_diff": pick.max_abs_diff if pick else None,
                "longest_checked": max_tokens,
            },
        }
        reference = None
        if self.budget is not None:  # a later run without torch gates this program's rows against fp32
            meta["budget"] = {"metric": self.budget.metric, "threshold": self.budget.threshold}
            measured = (pick.gate if pick else None) or d.gate
            meta["gate"] = measured.to_json() if measured else None
            reference = {"options": {"precision": "f32"} if built.portable.runtime == "openvino" else {}}
        entry = artifacts.store(request, built, meta, self.log, reference)
        if entry is not None and entry.gated:
            self._check_reference(entry, d, eager, order, features)
        if entry is not None and self.verbose > 0:
            self.log(f"jitcpu: kept {d.name} in the artifact cache for later runs ({entry.folder})")

    def _check_reference(
        self,
        entry: artifacts.Entry,
        d: selection.Decision,
        eager: Built | None,
        order: list[list[int]],
        features: Sequence[tasks.Feature],
    ) -> None:
        """The fp32 reference a later run gates this entry by, checked against eager fp32 (fp32 tolerance)
        on the batches the choice verified candidates on (eager's outputs the run kept, else eager run
        again); one that differs is dropped, and later runs under the budget go the torch way instead."""
        from ..compare import Tolerance, compare

        names = list(entry.meta["inputs"])
        worst = 0.0
        batches = list(d.verified) or list(d.kept)  # the longest, shortest and a middle batch
        try:
            if not batches or (eager is None and not d.kept):
                raise ValueError("no batch of eager fp32's to check it on")
            run = entry.open_reference()
            for j in batches:
                batch = self.make_inputs([features[i] for i in order[j]])
                if j in d.kept:
                    expected = d.kept[j][0]
                elif eager is not None:
                    with torch.no_grad():
                        expected = eager.run(batch.clone())
                else:
                    continue
                got = run([batch.kwargs[n].contiguous().numpy() for n in names])  # type: ignore[index]
                leaves = [torch.from_numpy(np.asarray(a)) for a in got]
                result = compare(expected, leaves[0] if len(leaves) == 1 else tuple(leaves), Tolerance("fp32"))
                if not result.ok:
                    raise ValueError(f"it differs from eager fp32: {result.reason}")
                worst = max(worst, result.max_abs_diff or 0.0)
        except Exception as exc:  # noqa: BLE001 - without a sound reference the next run gates with torch
            self.log(f"jitcpu: note: the fp32 reference kept with {entry.name} is not used ({first_line(exc)})")
            artifacts.update(entry, reference=None)
            return
        artifacts.update(entry, reference={**entry.meta["reference"], "worst_diff": worst, "batches": len(batches)})

    def _preparing(self, request: str | None, entry: artifacts.Entry | None) -> tuple[str, str] | None:
        """The torch-free candidate an ``auto`` run builds whatever this input's size (its cost is paid for
        the later runs, which start with it without torch): under an accuracy budget the int8 OpenVINO
        program with dynamic activations, else OpenVINO in bf16 where the CPU has native BF16, else fp32;
        ONNX if OpenVINO is missing. None when there is nothing to prepare: a cached artifact, a request
        the cache cannot keep, a task the torch-free start does not run, ``JITCPU_PREPARE=off``, or a
        request an earlier run found it would not pay for."""
        if (
            request is None
            or entry is not None
            or not self._prepare
            or self.mode != "auto"
            or self.loaded.task != "feature-extraction"
            or os.environ.get("JITCPU_PREPARE", "on").strip().lower() in ("0", "off", "false", "no")
            or artifacts.declined(request)
        ):
            return None
        dtypes = self._dtypes()
        options = [("openvino-int8-dynamic", "fp32")] if self.budget is not None else []
        options += [(m, t) for m in ("openvino", "onnx") for t in ("bf16", "fp32") if t in dtypes]
        options = [(m, t) for m, t in options if m in self.candidates and not selection.missing(m)]
        return options[0] if options else None

    def prepare_next(self, import_s: float = 0.0) -> str | None:
        """After an ``auto`` run whose winner cannot be cached (eager, a trace): keep the torch-free
        candidate the choice built anyway (:meth:`_preparing`), verified and timed on the same batches
        as the winner, when the next run would be faster with it, counting the start it saves (importing
        torch and loading the model). Saving it costs a fraction of a second, after the output is written;
        ``JITCPU_PREPARE=off`` skips it. Returns the line it logged. ``import_s``: what importing torch and
        transformers cost this process."""
        d = self.decision
        request = self._request()
        if d is None or request is None or self._prepared is None or d.mode in artifacts.KINDS:
            return None
        new = next((c for c in d.candidates if (c.mode, c.dtype) == self._prepared), None)
        old = next((c for c in d.candidates if (c.mode, c.dtype) == (d.mode, d.dtype)), None)
        if new is None or new.status == "pending" or old is None:
            return None  # not tried this run (a cached decision was verified instead): a later run may
        if new.status != "pass" or new.ms is None or old.ms is None:
            why = f"{new.status}: {new.reason}"
            line = f"jitcpu: prepared nothing for the next run: {selection.display(self._prepared[0])}/{self._prepared[1]} is {why}"
            artifacts.decline(request, line)
            self.log(line)
            return line
        plan, order, features = self._plan
        # The next run's time in each: per-token cost from the timing batches, over this input's tokens.
        timed_tokens = sum(plan.tokens[j] for j in batching.timing_batches(plan.count, d.verified))
        scale = (
            sum(plan.tokens) * max(1.0, (self.expected_rows or plan.rows) / max(plan.rows, 1)) / max(timed_tokens, 1)
        )
        keep_s = old.ms / 1000 * scale + import_s + self.first_load_s
        new_s = new.ms / 1000 * scale + RUNTIME_START_S
        if new_s >= keep_s:
            line = (
                f"jitcpu: prepared nothing for the next run: {new.name} would take ~{new_s:.1f} s without torch, "
                f"{d.name} ~{keep_s:.1f} s with it"
            )
            artifacts.decline(request, line)
            self.log(line)
            return line
        started = time.perf_counter()
        chosen = selection.Decision(
            new.mode, new.dtype, new.built, "prepared", d.candidates, kept=d.kept, verified=d.verified, gate=new.gate
        )
        self._store(request, chosen, features, order)
        line = (
            f"jitcpu: prepared the next run in {time.perf_counter() - started:.1f} s: {new.name}, verified on this "
            f"input, ~{new_s:.1f} s without torch vs ~{keep_s:.1f} s for {d.name} with it "
            "(JITCPU_PREPARE=off skips this)"
        )
        self.log(line)
        return line

    def _verify_longest(
        self, built: Built, eager: Built, features: Sequence[tasks.Feature], quantized: bool = False
    ) -> bool:
        """One more check at the full --max-seq-length: the longest rows, their tokens repeated to fill it.
        Passing widens the cached domain to every input this model can take, so a later input with
        longer rows than this one still rests on a verification. An int8 program is held to the run's
        accuracy budget there (fp tolerances are not what int8 meets)."""
        from ..compare import Tolerance, compare

        limit = self.loaded.max_seq_length
        longest = sorted(features, key=len)[-min(4, self.batch_size) :]
        grown = []
        for f in longest:
            body = f.input_ids[1:-1] or f.input_ids
            ids = [f.input_ids[0], *itertools.islice(itertools.cycle(body), limit - 2), f.input_ids[-1]]
            types = [0] * limit if f.token_type_ids is not None else None
            grown.append(tasks.Feature(row=0, input_ids=ids, token_type_ids=types))
        batch = self.make_inputs(grown)
        try:
            with torch.no_grad():
                reference, out = eager.run(batch.clone()), built.run(batch.clone())
        except Exception:  # noqa: BLE001 - not verified there: the domain stays what was verified
            return False
        if quantized and self.budget is not None:
            return gate.Gate(self.budget, gate.per_row(self.budget, reference, out, batch)).ok
        return compare(reference, out, Tolerance(built.dtype), allow_float_dtype_change=built.dtype != "fp32").ok

    def _tokenizer_check(self) -> tuple[bool, str | None]:
        """(torch-free, tokenizer.json relative to the model folder): the torch-free start tokenizes with
        ``tokenizers``; allowed only for feature-extraction and when that gives the model's tokenizer's
        ids on the rows this run chose on."""
        if self.loaded.task != "feature-extraction":
            return False, None
        layout = models.sentence_transformers_layout(self.loaded.path)
        file = (layout.transformer_dir if layout else self.loaded.path) / "tokenizer.json"
        if not file.is_file():
            return False, None
        from .fastpath import Encoder

        texts = [r.text or "" for r in self._sample if r.ok][:256]
        try:
            ids, _, _ = Encoder(file, self.loaded.max_seq_length).encode(texts)
        except Exception:  # noqa: BLE001 - a tokenizer.json tokenizers cannot read: the torch path only
            return False, None
        features = self.task.encode([r for r in self._sample if r.ok][:256]).features
        same = [f.input_ids for f in features] == ids
        return same, file.relative_to(self.loaded.path).as_posix()

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

    def choose_for(self, input: str | Path, input_format: str | None = None) -> selection.Decision | None:
        """Choose the mode on the first window of the file ``input``, as :meth:`run` would on its first
        window (the artifact kept, the later runs prepared); None when the window has no usable row (then
        :meth:`run` reports it). A later :meth:`run` keeps this choice."""
        self.expected_rows = rows.count_lines(input, limit_bytes=rows.COUNT_LIMIT)
        window = list(itertools.islice(rows.read_file(input, self.loaded.task, input_format), self.window))
        features = self.task.encode([r for r in window if r.ok]).features
        if not features:
            return None
        self._sample = window
        with models.quiet_transformers():
            self._choose(features, batching.length_batches(features, self.batch_size))
        return self.decision

    def decide(self, items: Iterable[Any], expected_rows: int | None = None) -> selection.Decision:
        """Choose the mode on a sample of rows (the Ray driver decides once, then hands the mode to its
        actors); ``expected_rows``: rows in the whole input, which scales auto's effort as in one run."""
        window = [r for r in itertools.islice(rows.from_iterable(items, self.loaded.task), self.window) if r.ok]
        self._sample = window
        features = self.task.encode(window).features
        if not features:
            raise UsageError("no usable row in the input's first rows to choose a mode on")
        if expected_rows is not None:
            self.expected_rows = expected_rows
        self._prepare = False  # the actors build the mode themselves; this process runs no later input
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
            self._sample = window
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
                    summary.decision, summary.attention = self.decision.reason, self.decision.attention
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
            summary.decision, summary.attention = self.decision.reason, self.decision.attention
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
        total = rows.count_lines(input, limit_bytes=rows.COUNT_LIMIT)
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
