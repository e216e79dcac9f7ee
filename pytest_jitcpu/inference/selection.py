"""Choosing the mode a run uses: only modes the engine verified on this input, and for ``auto`` the
fastest of them, timed on batches of the real input.

The check runs ``engine.check`` on a batch of real rows (the same tolerances as the test suite), then
compares each passing mode with eager on more real batches of other shapes (longest, shortest, a single
row): a trace that baked one shape in shows up here, before the run, not as wrong output later.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .. import backends, engine
from ..backends import table
from ..backends.base import Built, first_line
from ..compare import Tolerance, compare
from ..inputs import Inputs
from ..settings import MODES, Settings, UsageError

# Command-line mode names -> engine modes (`trace` is the Trainer's jit_mode_eval: dict inputs).
MODE_NAMES: dict[str, str] = table.CLI_NAMES
RUN_MODES: tuple[str, ...] = ("auto", *MODE_NAMES)
# `auto` tries the modes that can be faster than eager at a cost a run recovers; the others (with the
# reason) only when --candidates lists them. Both come from the backends table.
AUTO_CANDIDATES: tuple[str, ...] = table.AUTO_CANDIDATES
NOT_IN_AUTO: dict[str, str] = table.NOT_IN_AUTO
MIN_GAIN = 1.03  # a mode other than the baseline must be at least 3% faster: less is timing noise
TIMING_BATCHES = 3
CHECK_ROWS = 8  # rows in the batch the engine checks every mode on


def display(mode: str) -> str:
    """The name users typed: trace-dict shows as `trace`."""
    return table.DISPLAY.get(mode, mode)


def parse_mode(value: str) -> str:
    if value not in RUN_MODES:
        raise UsageError(f"--mode: unknown mode {value!r}; choose from {', '.join(RUN_MODES)}")
    return value


def parse_candidates(value: str | Sequence[str]) -> tuple[str, ...]:
    items = value.replace(",", " ").split() if isinstance(value, str) else list(value)
    out: list[str] = []
    for item in items:
        if item not in MODE_NAMES:
            raise UsageError(f"--candidates: unknown mode {item!r}; choose from {', '.join(MODE_NAMES)}")
        mode = MODE_NAMES[item]
        if mode not in out:
            out.append(mode)
    if "eager" not in out:
        out.insert(0, "eager")
    return tuple(sorted(out, key=MODES.index))


class ModelFailed(RuntimeError):
    """The model does not even run in eager mode on the sampled input: nothing to choose from."""


@dataclass
class Candidate:
    mode: str  # engine mode
    dtype: str
    status: str
    reason: str | None = None
    max_abs_diff: float | None = None
    built: Built | None = None
    ms: float | None = None  # total latency on the timing batches

    @property
    def name(self) -> str:
        return f"{display(self.mode)}/{self.dtype}"


@dataclass
class Decision:
    mode: str
    dtype: str
    built: Built
    reason: str
    candidates: list[Candidate] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def name(self) -> str:
        return f"{display(self.mode)}/{self.dtype}"

    def lines(self) -> list[str]:
        """The per-candidate table printed with the decision."""
        baseline = next((c.ms for c in self.candidates if c.mode == "eager" and c.ms), None)
        out = []
        width = max((len(c.name) for c in self.candidates), default=10)
        for c in self.candidates:
            text = f"  {c.name.ljust(width)}  {c.status}"
            if c.ms is not None:
                text += f"  {c.ms:8.1f} ms"
                if baseline:
                    text += f"  {baseline / c.ms:5.2f}x eager"
            if c.max_abs_diff is not None and c.mode != "eager":
                text += f"  max diff {c.max_abs_diff:.2g}"
            if c.reason:
                text += f"  ({c.reason})"
            out.append(text)
        return out


def sample_batches(
    features: Sequence[Any], batch_size: int, make: Callable[[Sequence[Any]], Inputs]
) -> tuple[Inputs, list[Inputs], list[Inputs]]:
    """From a window of real features, ordered by length:

    - the check batch: up to CHECK_ROWS rows of median length (the engine checks every mode on it);
    - verification batches of other shapes: the 2 longest rows, the shortest row alone, 3 rows of
      lower-quartile length (shape variety is what catches a trace that baked a shape in);
    - timing batches: TIMING_BATCHES full batches around the median length. Like the run's batches each
      has its own shape, so a mode that is slow on a shape it has not seen is timed as the run sees it.
    Small check batches keep the choice cheap next to the run; only timing uses full batches.
    """
    order = sorted(range(len(features)), key=lambda i: -len(features[i]))
    n = len(order)

    def around(center: int, size: int) -> list[int]:
        first = max(0, min(n - size, center - size // 2))
        return order[first : first + size]

    check = around(n // 2, min(CHECK_ROWS, batch_size))
    offsets = [(k - TIMING_BATCHES // 2) * batch_size for k in range(TIMING_BATCHES)]
    timing = [around(n // 2 + offset, batch_size) for offset in offsets]
    verify = [order[:2], order[-1:], around((3 * n) // 4, 3)]
    unique: list[Inputs] = []
    seen: set[tuple[int, ...]] = {tuple(check)}
    for group in verify:
        if group and tuple(group) not in seen:
            seen.add(tuple(group))
            unique.append(make([features[i] for i in group]))
    return make([features[i] for i in check]), unique, [make([features[i] for i in g]) for g in timing]


def _time(candidates: list[Candidate], batches: list[Inputs]) -> None:
    """Each candidate runs each timing batch once, interleaved batch by batch so a busy machine slows
    them alike; ``ms`` is the total."""
    for c in candidates:
        c.ms = 0.0
    for batch in batches:
        for c in candidates:
            x = batch.clone()
            start = time.perf_counter()
            c.built.run(x)  # type: ignore[union-attr]
            c.ms += (time.perf_counter() - start) * 1000  # type: ignore[operator]


def _verify(c: Candidate, eager: Built, batches: list[Inputs]) -> None:
    """Compare a passing mode with eager fp32 on more real batches; a difference rejects it."""
    tolerance = Tolerance(c.dtype)
    for b in batches:
        try:
            with torch.no_grad():
                ref = eager.run(b.clone())
                out = c.built.run(b.clone())  # type: ignore[union-attr]
        except Exception as exc:  # noqa: BLE001 - any failure rejects the mode, with the reason
            c.status, c.reason = "fallback", f"failed on a real batch {b.describe()}: {first_line(exc)}"
            return
        result = compare(ref, out, tolerance, allow_float_dtype_change=c.dtype != "fp32")
        if c.max_abs_diff is None or (result.max_abs_diff or 0) > c.max_abs_diff:
            c.max_abs_diff = result.max_abs_diff
        if not result.ok:
            c.status = "diverges"
            c.reason = f"differs from eager on a real batch {b.describe()}: {result.reason}"
            return


def choose(
    module: torch.nn.Module,
    label: str,
    features: Sequence[Any],
    batch_size: int,
    make: Callable[[Sequence[Any]], Inputs],
    modes: Sequence[str],
    dtypes: Sequence[str],
    timed: bool,
) -> Decision:
    """Check ``modes`` x ``dtypes`` (engine names) on real batches of ``features``.

    ``timed`` (``--mode auto``): time the verified ones and pick the fastest; the baseline, eager in the
    first dtype, is kept unless another mode is MIN_GAIN faster. Otherwise ``modes`` is eager plus the
    one requested mode: it is used if verified, else eager in the same dtype (the reason is given).
    """
    start = time.perf_counter()
    check_batch, verify_batches, timing_batches = sample_batches(features, batch_size, make)
    built: dict[tuple[str, str], Built] = {("eager", "fp32"): backends.build("eager", module, check_batch, "fp32")}

    def keep(b: Built) -> None:
        built[(b.mode, b.dtype)] = b

    settings = Settings(examples=0, serialize=False).updated(modes=list(modes), dtypes=list(dtypes))
    result = engine.check(module, check_batch, settings=settings, name=label, on_built=keep)
    candidates = [
        Candidate(r.mode, r.dtype, r.status, r.reason, r.max_abs_diff, built.get((r.mode, r.dtype)))
        for r in result.records
    ]
    for c in candidates:
        if c.status == "pass" and c.built is None:
            c.status, c.reason = "error", "passed the check but no module was kept"
        elif c.status == "pass" and c.mode != "eager":
            _verify(c, built[("eager", "fp32")], verify_batches)
    passing = [c for c in candidates if c.status == "pass"]
    eagers = {c.dtype: c for c in passing if c.mode == "eager"}
    if not eagers:
        reasons = "; ".join(sorted({f"{c.name}: {c.reason}" for c in candidates if c.mode == "eager"}))
        raise ModelFailed(f"the model does not run in eager mode on this input: {reasons}")
    baseline = eagers.get(dtypes[0]) or next(iter(eagers.values()))
    if timed:
        _time(passing, timing_batches)
        pick = min(passing, key=lambda c: c.ms if c.ms is not None else float("inf"))
        gain = (baseline.ms or 0.0) / (pick.ms or 1.0)
        if pick is baseline:
            reason = f"no verified mode was faster than {baseline.name}"
        elif gain < MIN_GAIN:
            reason = (
                f"the fastest verified mode, {pick.name}, is only {gain:.3f}x {baseline.name} "
                f"(under {MIN_GAIN}x is timing noise), so {baseline.name} it is"
            )
            pick = baseline
        else:
            reason = (
                f"fastest verified mode: {pick.ms:.1f} ms vs {baseline.ms:.1f} ms for {baseline.name} "
                f"({gain:.2f}x) on {len(timing_batches)} batches of this input"
            )
    else:
        target = next((c for c in candidates if c.mode != "eager"), baseline)
        if target.status == "pass":
            pick, reason = target, f"verified on {1 + len(verify_batches)} batches of this input"
        else:
            pick = eagers.get(target.dtype, baseline)
            reason = f"{target.name} is {target.status} ({target.reason}); running {pick.name} instead"
    assert pick.built is not None
    return Decision(pick.mode, pick.dtype, pick.built, reason, candidates, time.perf_counter() - start)
