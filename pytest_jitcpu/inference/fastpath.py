"""The start without torch: ``jitcpu run`` on a cached, verified artifact that runs in ONNX Runtime or
OpenVINO (:mod:`.artifacts`), with the model folder's ``tokenizer.json`` read by ``tokenizers``, batches
padded in numpy, and the runtime's outputs (the pooled, normalized embeddings: pooling is part of the
saved program) written as the torch path writes them. Importing torch and transformers and loading the
model costs seconds; this path costs the runtime's load.

It applies only when everything matches what was verified: feature-extraction, the same request (model
fingerprint, versions, CPU, options: see :func:`.artifacts.request_key`), an entry marked torch-free (its
tokenizer gave the same token ids as the model's tokenizer when it was stored), and sequences no longer
than the verified domain. Under an accuracy budget (``--min-cosine``) the entry must have been chosen under
that budget and kept with its fp32 reference: the first window's gated batches (the ones the torch path's
gate measures) run in that reference too and are scored row by row before anything is written; a program
that misses the budget on this input sends the run the normal way. Anything else returns None *before any output is committed* and the run goes
the normal way (a row longer than the domain found late in the file discards this path's partial output
file, which was never renamed into place). Nothing in this module imports torch or transformers.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import artifacts, batching, folders, rows, writers
from .budget import Budget, Gate, cosine_rows, parse_budget, statistical_note
from .progress import Progress
from .summary import Summary

TASK = "feature-extraction"


class Encoder:
    """tokenizer.json through ``tokenizers``, as the torch path's fast tokenizer encodes: special tokens
    added, no padding, and truncation to ``max_len`` only for the rows that need it (counted)."""

    def __init__(self, path: Path, max_len: int) -> None:
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(path))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        self.max_len = max_len

    def encode(self, texts: Sequence[str]) -> tuple[list[list[int]], list[list[int]], list[int]]:
        """(input ids, token type ids, positions of truncated texts)."""
        full = self.tokenizer.encode_batch(list(texts))
        ids = [e.ids for e in full]
        types = [e.type_ids for e in full]
        long = [i for i, seq in enumerate(ids) if len(seq) > self.max_len]
        if long:
            self.tokenizer.enable_truncation(self.max_len)
            try:
                cut = self.tokenizer.encode_batch([texts[i] for i in long])
            finally:
                self.tokenizer.no_truncation()
            for i, e in zip(long, cut, strict=True):
                ids[i], types[i] = e.ids, e.type_ids
        return ids, types, long


def _pad(ids: list[list[int]], types: list[list[int]], pad_id: int, left: bool) -> dict[str, np.ndarray]:
    n, width = len(ids), max(len(s) for s in ids)
    out_ids = np.full((n, width), pad_id, dtype=np.int64)
    mask = np.zeros((n, width), dtype=np.int64)
    out_types = np.zeros((n, width), dtype=np.int64)
    for i, (seq, typ) in enumerate(zip(ids, types, strict=True)):
        cols = slice(width - len(seq), width) if left else slice(0, len(seq))
        out_ids[i, cols] = seq
        mask[i, cols] = 1
        out_types[i, cols] = typ
    return {"input_ids": out_ids, "attention_mask": mask, "token_type_ids": out_types}


class _OutOfDomain(Exception):
    pass


@dataclass(frozen=True)
class Handover:
    """A run that chose its mode in this process a moment ago (the torch path: eager fp32 the reference)
    and kept the program in the cache: the rows run through that program here, as a later run would, and
    the summary says what the choice found."""

    decision: str  # the choice's reason
    gate: dict[str, Any] | None  # the choice's gate against eager fp32 (under a budget)
    setup_s: float  # loading the model and choosing, before this path started
    started: float  # time.perf_counter() when the run started
    lines: int | None  # the input's lines, counted already (None: not counted, a large input)


def try_run(
    args: Any,
    model: str | None,
    mode: str,
    dtype: str | None,
    log: Callable[[str], None],
    handover: Handover | None = None,
) -> int | None:
    """Run ``args`` (the parsed ``jitcpu run``) on a cached torch-free artifact; the exit code, or None
    when this path does not apply (then nothing was written and the caller runs the normal way).

    ``handover``: the program was chosen and kept by this process just now; it is not gated again (the
    choice gated it against eager fp32 on these batches) and the log does not repeat the decision."""
    start = time.perf_counter()
    cache_on = args.cache if args.cache is not None else artifacts.decisions.enabled()
    if (
        not cache_on
        or args.verify
        or getattr(args, "verify_all", False)  # every row against eager fp32: that needs torch
        or args.ray is not None
        or "-" in (args.input, args.output)  # stdin is read once; rows sent to stdout cannot be taken back
        or mode not in ("auto", *artifacts.KINDS)
    ):
        return None
    try:
        path, _ = folders.resolve(model)
        task, _ = folders.parse_task(args.task, path)
    except Exception:  # noqa: BLE001 - the normal path reports a bad model with its own message
        return None
    if task != TASK:
        return None
    budget = parse_budget(args.min_cosine, args.min_agreement, False)  # the CLI checked the values already
    if budget is not None and budget.metric != "cosine":
        return None
    options = artifacts.request_options(
        task,
        mode=mode,
        dtype=dtype,
        batch_size=args.batch_size,
        max_seq_length=args.max_seq_length,
        pooling=args.pooling,
        normalize=args.normalize,
        candidates=args.candidates,
        threads_requested=args.threads,
        budget=budget,
    )
    try:
        key = artifacts.request_key(path, options)
    except OSError:
        return None
    entry = artifacts.lookup(key, log)
    if entry is None or not entry.meta.get("torch_free") or (budget is not None and not entry.gated):
        return None
    meta = entry.meta
    try:
        encoder = Encoder(path / meta["tokenizer"], int(meta["max_seq_length"]))
        lines = handover.lines if handover else rows.count_lines(args.input, limit_bytes=rows.COUNT_LIMIT)
        run = entry.pipeline(None if lines is None else -(-lines // max(1, int(args.batch_size))))
        gating = _Gating(budget, entry.open_reference()) if budget is not None and handover is None else None
        measured = gating
    except Exception as exc:  # noqa: BLE001 - an artifact its runtime refuses is rebuilt the normal way
        log(f"jitcpu: note: the cached {entry.name} could not be loaded ({type(exc).__name__}: {exc}); building again")
        artifacts.discard(entry.folder)
        return None
    entry.touch()
    load_s = time.perf_counter() - start
    summary = Summary(task=task, max_seq_length=int(meta["max_seq_length"]), mode=meta["display"], dtype=entry.dtype)
    summary.decision = f"cached artifact, {entry.describe()}" if handover is None else handover.decision
    if handover is not None:
        summary.gate = handover.gate
    writer = writers.open_writer(args.output, task)
    names = list(meta["inputs"])
    pad_id, left = int(meta.get("pad_id") or 0), bool(meta.get("left_padding"))
    bar = Progress(enabled=getattr(args, "progress", None))  # as the torch path's: on a terminal by default
    if bar.enabled and lines is not None:
        header = rows.detect_format(args.input, args.input_format) in ("csv", "tsv")
        bar.total = max(lines - 1, 0) if header else lines
    try:
        for window in batching.windows(rows.read_file(args.input, task, args.input_format), batching.WINDOW_ROWS):
            for obj in _window(window, encoder, entry, run, names, pad_id, left, args, summary, gating):
                writer.write(obj)
            bar.update(len(window))
            gating = None  # the first window's gated batches are the sample, as in the torch path
    except _OutOfDomain as exc:
        writer.abort()
        log(f"jitcpu: {exc}: this input goes the normal way")
        return None
    except _RowFailed as exc:
        writer.abort()
        _err(f"jitcpu run: {args.input} line {exc.line}: {exc.reason}")
        _err("jitcpu run: stopped (--on-error fail); no output written. Pass --on-error skip to skip bad rows.")
        for note in summary.notes():
            _err(note)
        return 1
    except Exception as exc:  # noqa: BLE001 - a runtime failure: the normal path runs (and reports) instead
        writer.abort()
        log(f"jitcpu: note: the cached {entry.name} failed ({type(exc).__name__}: {exc}); running the normal way")
        return None
    except BaseException:
        writer.abort()
        raise
    finally:
        bar.close()
    writer.close()
    summary.setup_s = load_s
    summary.wall_s = time.perf_counter() - start
    if handover is not None:
        summary.setup_s += handover.setup_s
        summary.wall_s = time.perf_counter() - handover.started
        if getattr(args, "verbose", 0) > 0:
            log(
                f"jitcpu: ran the rows through the {meta['display']}/{entry.dtype} program as kept, without torch's loop"
            )
    elif getattr(args, "verbose", 0) - getattr(args, "quiet", 0) >= 0:  # -q: the final line only
        log(
            f"jitcpu: ran {meta['display']}/{entry.dtype} from the cache without torch ({entry.describe()}); "
            "--verify checks it against eager again"
        )
        if measured is not None and measured.gate is not None:
            ref = meta["reference"]
            log(
                f"jitcpu: accuracy gate ({measured.budget.describe()}): {meta['display']}/{entry.dtype} "
                f"{measured.gate.text()} "
                f"(against its fp32 reference, run without torch; that was checked against eager fp32 on "
                f"{ref.get('batches', '?')} batches when kept, worst difference {float(ref.get('worst_diff') or 0):.2g})"
            )
            log(f"jitcpu: note: {statistical_note(measured.gate)}")
    for note in summary.notes():
        _err(note)
    if args.summary:
        import json

        from ..atomic import write_text

        write_text(args.summary, json.dumps(summary.to_json(), indent=2) + "\n")
    if summary.rows == 0:
        _err(f"jitcpu run: warning: {args.input} has no rows; the output is empty")
    _err(f"jitcpu run: {summary.line()}")
    if args.output != "-":
        _err(f"jitcpu run: wrote {args.output}")
    return 0


class _Gating:
    """The accuracy gate of a run under a budget: the first window's gated batches run in the fp32
    reference too, and their rows are scored before the window's outputs are written."""

    def __init__(self, budget: Budget, reference: artifacts.Runner) -> None:
        self.budget = budget
        self.reference = reference
        self.scores: list[np.ndarray] = []
        self.gate: Gate | None = None

    def score(self, arrays: list[np.ndarray], output: np.ndarray) -> None:
        expected = np.asarray(self.reference(arrays)[0], dtype=np.float32)
        self.scores.append(cosine_rows(expected, output))

    def close(self, name: str, summary: Summary) -> None:
        self.gate = Gate(self.budget, np.concatenate(self.scores) if self.scores else np.zeros(0))
        summary.gate = self.gate.to_json()
        if not self.gate.ok:
            raise _OutOfDomain(f"the cached {name} misses {self.budget.describe()} on this input ({self.gate.text()})")


class _RowFailed(Exception):
    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line, self.reason = line, reason


def _err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _window(
    window: list[rows.Row],
    encoder: Encoder,
    entry: artifacts.Entry,
    run: artifacts.Pipeline,
    names: list[str],
    pad_id: int,
    left: bool,
    args: Any,
    summary: Summary,
    gating: _Gating | None = None,
) -> list[dict[str, Any]]:
    """One window's outputs in input order, as :meth:`.runner.Predictor._window` makes them; with
    ``gating``, its gated batches scored against the fp32 reference first (nothing is returned, so nothing
    is written, when the program misses the budget)."""
    good = [pos for pos, row in enumerate(window) if row.ok]
    for row in window:
        if not row.ok:
            if args.on_error == "fail":
                raise _RowFailed(row.line, row.error or "bad row")
            summary.skip(row.line, row.error or "bad row")
    ids, types, long = encoder.encode([window[pos].text or "" for pos in good]) if good else ([], [], [])
    longest = max((len(s) for s in ids), default=0)
    why = entry.covers(TASK, longest)
    if why:
        raise _OutOfDomain(why)
    for i in long:
        summary.truncate(window[good[i]].line)
    vectors: dict[int, np.ndarray] = {}
    order = batching.length_batches(ids, args.batch_size)  # type: ignore[arg-type]
    gated = set(batching.gated_batches(len(order))) if gating is not None else set()
    kept: dict[int, list[np.ndarray]] = {}  # the gated batches' inputs, run in the reference after

    def feed() -> Iterator[tuple[int, list[np.ndarray]]]:
        for j, batch in enumerate(order):
            padded = _pad([ids[i] for i in batch], [types[i] for i in batch], pad_id, left)
            arrays = [padded[n] for n in names]
            if j in gated:
                kept[j] = arrays
            yield j, arrays

    for j, outputs, ms in run(feed()):
        out = np.asarray(outputs[0], dtype=np.float32)
        summary.latencies_ms.append(ms)
        summary.batches += 1
        if j in gated:
            gating.score(kept.pop(j), out)  # type: ignore[union-attr]
        for k, i in enumerate(order[j]):
            vectors[good[i]] = out[k].copy()
    if gating is not None:
        gating.close(f"{entry.meta['display']}/{entry.dtype}", summary)
    outputs = []
    for pos, row in enumerate(window):
        summary.rows += 1
        head: dict[str, Any] = {} if row.id is None else {"id": row.id}
        if not row.ok:
            outputs.append({**head, "line": row.line, "error": row.error or "bad row"})
            continue
        summary.ok += 1
        outputs.append({**head, "embedding": vectors[pos]})
    return outputs
