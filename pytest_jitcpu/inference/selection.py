"""Choosing the mode a run uses: only modes verified against eager on this input, and for ``auto`` the
fastest of them, timed on real batches of the input.

Selection works on the run's own batches (the first window's length-sorted batches): eager runs a few of
them (the longest, the shortest, one in the middle, then the timing batches) and those outputs are kept,
so the run never computes them again. Each candidate runs the same batches and is compared with eager
(the test suite's tolerances); a trace that baked one shape in shows up here, before the run.

How much ``auto`` spends is scaled to the input: the eager time of the first batch estimates the whole
run in eager, and building and timing candidates may cost at most SELECT_SHARE of it. A candidate whose
expected build cost does not fit is not tried (with the reason); on a few dozen rows that leaves eager.
Candidates listed explicitly (``--candidates``) are always tried: nothing a user asked for is skipped.
"""

from __future__ import annotations

import contextlib
import importlib.util
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .. import backends
from ..backends import table
from ..backends.attention import implementation
from ..backends.base import Built, Fallback, Unavailable, first_line
from ..compare import Tolerance, compare
from ..inputs import Inputs
from ..settings import MODES, UsageError
from .batching import gated_batches, timing_batches, verification_batches
from .gate import Budget, Gate, per_row

# Command-line mode names -> engine modes (`trace` is the Trainer's jit_mode_eval: dict inputs).
MODE_NAMES: dict[str, str] = table.CLI_NAMES
RUN_MODES: tuple[str, ...] = ("auto", *MODE_NAMES)
# `auto` tries the modes that can be faster than eager at a cost a run recovers; the others (with the
# reason) only when --candidates lists them. Both come from the backends table.
AUTO_CANDIDATES: tuple[str, ...] = table.AUTO_CANDIDATES
NOT_IN_AUTO: dict[str, str] = table.NOT_IN_AUTO
MIN_GAIN = 1.03  # a mode other than the baseline must be at least 3% faster: less is timing noise
SELECT_SHARE = 0.15  # of the estimated eager run time, what choosing may cost (load and imports come on top)
FUSION = "onednn"  # the TorchScript variant with oneDNN Graph (LLGA) fusion: `trace+onednn`
# Expected cost of building a mode and warming it up: its row's build_cost, in eager forward passes of a
# reference batch of REFERENCE_TOKENS padded tokens (32 rows x 128), the first batch's eager time per
# token times that. The runs verification and timing add are counted from the batches themselves.
REFERENCE_TOKENS = 32 * 128
CALIBRATION_ROWS = 256  # rows of the input set aside for an int8 build's calibration (NNCF's statistics)
FUSION_COST = 1.0  # the fusion pass compiles oneDNN partitions on the first runs


def display(mode: str) -> str:
    """The name users typed: trace-dict shows as `trace`."""
    base, plus, variant = mode.partition("+")
    return table.DISPLAY.get(base, base) + plus + variant


def parse_mode(value: str) -> str:
    if value not in RUN_MODES:
        raise UsageError(f"--mode: unknown mode {value!r}; choose from {', '.join(RUN_MODES)}")
    return value


def parse_candidates(value: str | Sequence[str]) -> tuple[str, ...]:
    items = value.replace(",", " ").split() if isinstance(value, str) else list(value)
    out: list[str] = []
    for item in items:
        base, _, variant = item.partition("+")
        if base not in MODE_NAMES or (variant and (variant != FUSION or not table.backend(MODE_NAMES[base]).trace)):
            choices = ", ".join([*MODE_NAMES, *(f"{n}+{FUSION}" for n, m in MODE_NAMES.items() if _fusable(m))])
            raise UsageError(f"--candidates: unknown mode {item!r}; choose from {choices}")
        mode = MODE_NAMES[base] + (f"+{variant}" if variant else "")
        if mode not in out:
            out.append(mode)
    if "eager" not in out:
        out.insert(0, "eager")
    return tuple(sorted(out, key=lambda m: (MODES.index(m.partition("+")[0]), m)))


def _fusable(mode: str) -> bool:
    """oneDNN Graph fuses TorchScript graphs: the plain trace rows (IPEX brings its own fusions)."""
    row = table.backend(mode)
    return row.trace and row.module == "trace"


def auto_modes(quantized: bool = False) -> tuple[str, ...]:
    """`auto`'s default candidates: the table's rows marked auto, and the oneDNN-fused variant of a trace;
    with ``quantized`` (an accuracy budget was given) the int8 rows too."""
    out: list[str] = []
    for b in table.BACKENDS:
        if b.auto or (quantized and b.quantized):
            out.append(b.name)
            if _fusable(b.name):
                out.append(f"{b.name}+{FUSION}")
    return tuple(out)


class ModelFailed(RuntimeError):
    """The model does not even run in eager mode on the sampled input: nothing to choose from."""


@dataclass
class Candidate:
    mode: str  # engine mode, with "+onednn" for the fused trace variant
    dtype: str
    # an engine status, "skipped" (not tried: the reason says why) or "redundant" (an attention mode that
    # would switch the model to the implementation it already runs: eager in that dtype)
    status: str
    reason: str | None = None
    max_abs_diff: float | None = None
    built: Built | None = None
    ms: float | None = None  # total latency on the timing batches
    gate: Gate | None = None  # per-row scores against eager fp32 under an accuracy budget

    @property
    def name(self) -> str:
        return f"{display(self.mode)}/{self.dtype}"

    @property
    def quantized(self) -> bool:
        return table.backend(self.base).quantized

    @property
    def base(self) -> str:
        return self.mode.partition("+")[0]


@dataclass
class Decision:
    mode: str
    dtype: str
    built: Built
    reason: str
    candidates: list[Candidate] = field(default_factory=list)
    seconds: float = 0.0  # what choosing cost beyond the kept batches (builds, candidates' runs)
    # Outputs of the run's batches that selection ran in eager fp32: batch index -> (model output, ms).
    kept: dict[int, tuple[Any, float]] = field(default_factory=dict)
    kept_s: float = 0.0
    budget_s: float | None = None  # None: unlimited (candidates listed explicitly, or a requested mode)
    cache_hit: bool = False  # the mode came from the decision cache (and was verified on this input)
    cacheable: bool = False  # a full auto choice (no candidate skipped for the budget): worth caching
    stale: bool = False  # a cached decision failed on this input and was chosen again
    verified: list[int] = field(default_factory=list)  # the plan's batches each candidate was verified on
    budget: Budget | None = None  # the accuracy budget every candidate was gated by
    gate: Gate | None = None  # the pick's per-row scores on the held-back batches (under a budget)
    calibration_rows: int = 0  # rows set aside for int8 calibration (never measured by the gate)

    @property
    def name(self) -> str:
        return f"{display(self.mode)}/{self.dtype}"

    @property
    def attention(self) -> str | None:
        """The transformers attention implementation the chosen mode runs (None: not a transformers model)."""
        return self.built.attn_implementation

    def lines(self) -> list[str]:
        """The per-candidate table printed with the decision."""
        baseline = next((c.ms for c in self.candidates if c.mode == "eager" and c.dtype == "fp32" and c.ms), None)
        out = []
        width = max((len(c.name) for c in self.candidates), default=10)
        for c in self.candidates:
            text = f"  {c.name.ljust(width)}  {c.status}"
            if c.ms is not None:
                text += f"  {c.ms:8.1f} ms"
                if baseline:
                    text += f"  {baseline / c.ms:5.2f}x eager"
            if c.gate is not None and c.gate.rows:
                text += f"  {c.gate.text()}"
            elif c.max_abs_diff is not None and c.mode != "eager":
                text += f"  max diff {c.max_abs_diff:.2g}"
            if c.reason:
                text += f"  ({c.reason})"
            out.append(text)
        return out


@contextlib.contextmanager
def _onednn_fusion(on: bool) -> Iterator[None]:
    """oneDNN Graph fusion is a global TorchScript switch read when a graph is optimized (its first runs):
    set only around the fused variant's own builds and runs."""
    if not on:
        yield
        return
    before = torch.jit.onednn_fusion_enabled()
    torch.jit.enable_onednn_fusion(True)
    try:
        yield
    finally:
        torch.jit.enable_onednn_fusion(before)


def build(
    mode: str, module: torch.nn.Module, inputs: Inputs, dtype: str, calibration: Sequence[Inputs] | None = None
) -> Built:
    """``backends.build``, plus the ``+onednn`` variant of a trace (built and run with the fusion on)."""
    base, _, variant = mode.partition("+")
    if not variant:
        return backends.build(base, module, inputs, dtype, calibration=calibration)
    with _onednn_fusion(True):
        built = backends.build(base, module, inputs, dtype)
    plain = built.run

    def run(batch: Inputs) -> Any:
        with _onednn_fusion(True):
            return plain(batch)

    built.run, built.mode = run, mode
    return built


def missing(mode: str) -> str | None:
    """Why ``mode`` cannot run here without importing it: its package is not installed."""
    row = table.backend(mode.partition("+")[0])
    if row.import_name and importlib.util.find_spec(row.import_name) is None:
        hint = f" ({row.install})" if row.install else ""
        return f"{row.package} is not installed{hint}"
    return None


def build_unit_s(first_s: float, tokens: int) -> float:
    """The unit of BUILD_COST, one eager pass of the reference batch, from the first batch's eager time.

    A batch of REFERENCE_TOKENS or more scales down to it by tokens (eager time is about linear in tokens
    there). A smaller batch's time is mostly fixed per-call overhead, and the first call also pays the
    process's warm-up, so scaling it up by tokens multiplied that overhead (a 2-row input priced a trace at
    ~276 s); such a batch is the one the modes are built on, so its own pass is the unit.
    """
    return min(first_s, first_s / max(tokens, 1) * REFERENCE_TOKENS)


def seconds(s: float) -> str:
    """A duration as people read it: 0.31 ms, 42 ms, 6.7 s (a tiny input's costs are milliseconds)."""
    if s < 0.01:
        return f"{s * 1000:.2g} ms"
    if s < 1:
        return f"{s * 1000:.0f} ms"
    return f"{s:.1f} s"


def _build_cost(c: Candidate) -> float:
    """Build + warm-up, in eager passes of the reference batch (the row's build_cost)."""
    cost = table.backend(c.base).build_cost if c.base in table.MODES else table.UNMEASURED_BUILD_COST
    return cost + (FUSION_COST if c.mode.endswith(f"+{FUSION}") else 0.0)


@dataclass
class Plan:
    """The run's batches of the first window, as selection sees them."""

    batch: Callable[[int], Inputs]  # batch index -> its padded inputs
    tokens: Sequence[int]  # padded rows x width of each batch (what eager time is proportional to)
    rows: int  # rows in the window
    expected_rows: int | None = None  # rows in the whole input, when known
    sizes: Sequence[int] | None = None  # rows (features) in each batch, when known
    # A small batch (a few rows of the first) the runtime modes are converted with: their programs are
    # dynamic in every dim, and tracing the longest batch of 32 rows for the conversion cost seconds
    # (OpenVINO's frontend runs it three times). None: the first batch.
    example: Callable[[], Inputs] | None = None

    @property
    def count(self) -> int:
        return len(self.tokens)

    def batch_rows(self, j: int) -> int:
        return self.sizes[j] if self.sizes is not None else 1


def _run_timed(built: Built, inputs: Inputs) -> tuple[Any, float]:
    start = time.perf_counter()
    with torch.no_grad():
        out = built.run(inputs)
    return out, (time.perf_counter() - start) * 1000


def choose(
    module: torch.nn.Module,
    plan: Plan,
    modes: Sequence[str],
    dtypes: Sequence[str],
    timed: bool,
    explicit: bool = False,
    log: Callable[[str], None] | None = None,
    cached: tuple[str, str] | None = None,
    prebuilt: dict[tuple[str, str], Built] | None = None,
    budget: Budget | None = None,
    always: Collection[tuple[str, str]] | None = None,
) -> Decision:
    """Verify ``modes`` x ``dtypes`` (engine names) on real batches of the plan against eager fp32.

    ``timed`` (``--mode auto``): time the verified ones and pick the fastest; the baseline, eager in the
    first dtype, is kept unless another mode is MIN_GAIN faster. Unless ``explicit``, candidates are tried
    only while their expected cost fits the budget (SELECT_SHARE of the estimated eager run). ``prebuilt``:
    (mode, dtype) -> a program loaded from the artifact cache, verified like a build but not built. Otherwise
    ``modes`` is eager plus the one requested mode: it is used if verified, else eager in the same dtype.

    ``budget`` (``--min-cosine``/``--min-agreement``): every candidate is also gated row by row on the
    verification and timing batches (an int8 one only by the budget, the others by their fp tolerances
    too); batches neither of those use are set aside for int8 calibration, so the gate never measures a row
    a build calibrated on.

    ``always``: (mode, dtype) pairs tried whatever this input's budget for choosing (the torch-free
    candidate the run prepares for later runs: its cost is paid for them, not by this input alone).
    """
    start = time.perf_counter()
    kept: dict[int, tuple[Any, float]] = {}
    batches: dict[int, Inputs] = {}

    def get(j: int) -> Inputs:
        if j not in batches:
            batches[j] = plan.batch(j)
        return batches[j]

    def reference(j: int) -> Any:
        """Eager fp32 on batch j: the reference, kept as the run's output for that batch."""
        if j not in kept:
            try:
                kept[j] = _run_timed(eager, get(j).clone())
            except Exception as exc:  # noqa: BLE001 - the model itself fails: nothing to choose from
                raise ModelFailed(
                    f"the model does not run in eager mode on this input: {first_line(exc)} on a batch "
                    f"{get(j).describe()}"
                ) from None
        return kept[j][0]

    try:
        eager = backends.build("eager", module, get(0), "fp32")
    except (Fallback, Unavailable) as exc:
        raise ModelFailed(f"the model does not run in eager mode on this input: {exc}") from None
    reference(0)
    # The estimate: eager time is about proportional to padded tokens (measured on the first batch).
    token_s = kept[0][1] / 1000 / max(plan.tokens[0], 1)
    unit_s = build_unit_s(kept[0][1] / 1000, plan.tokens[0])
    scale = max(1.0, (plan.expected_rows or plan.rows) / max(plan.rows, 1))
    estimate_s = token_s * sum(plan.tokens) * scale
    budget_s = None if explicit or not timed else SELECT_SHARE * estimate_s
    verify = verification_batches(plan.count)
    timing = timing_batches(plan.count, verify)
    gated = gated_batches(plan.count) if budget is not None else verify
    calibration = _calibration_batches(plan, gated)
    # a candidate runs the verification batches (batch 0 is the first, and its warm-up) and the timing ones
    # (under a budget twice: the gate measures them before they are timed)
    runs_s = token_s * (sum(plan.tokens[j] for j in gated) + sum(plan.tokens[j] for j in timing))

    given = implementation(module)  # an attention mode switching to it would run the model as it is
    candidates: list[Candidate] = []
    for mode in modes:
        for dtype in dtypes:
            if (mode, dtype) == ("eager", "fp32"):
                continue
            if mode.endswith(f"+{FUSION}") and dtype != "fp32":
                continue  # oneDNN Graph under autocast is not a path torch maintains: fp32 only
            if table.backend(mode.partition("+")[0]).quantized and dtype != "fp32":
                continue  # int8 quantizes the fp32 model: one candidate, not one per dtype
            if not timed and mode == "eager":
                continue  # a requested mode: only it is verified; eager in its dtype is built if it fails
            candidates.append(Candidate(mode, dtype, "pending"))
    # Cheap first: with a small budget the ones that fit are the ones tried.
    candidates.sort(key=_build_cost)
    base = Candidate("eager", "fp32", "pass", built=eager, max_abs_diff=0.0)

    def spent_s() -> float:
        return time.perf_counter() - start - sum(ms for _, ms in kept.values()) / 1000

    def attempt(c: Candidate, budgeted: bool) -> None:
        """Build and verify one candidate, unless it is missing here or its cost is over the budget."""
        absent = missing(c.mode)
        if absent:
            c.status, c.reason = "unavailable", absent
            return
        switch = table.backend(c.base).attention
        if switch is not None and switch == given:
            c.status, c.reason = "redundant", f"the model already runs {switch} attention: that is eager/{c.dtype}"
            return
        cost_s = _build_cost(c) * unit_s + runs_s
        if table.backend(c.base).calibrated:
            cost_s += token_s * sum(plan.tokens[j] for j in calibration)
        if (
            budgeted
            and budget_s is not None
            and (c.mode, c.dtype) not in (always or ())
            and spent_s() + cost_s > budget_s
        ):
            c.status = "skipped"
            c.reason = (
                f"not tried: ~{seconds(cost_s)} to build and verify, over this input's budget for choosing "
                f"({seconds(budget_s)} = {SELECT_SHARE:.0%} of ~{seconds(estimate_s)} in eager)"
            )
            return
        rows = None
        if table.backend(c.base).calibrated:
            if not calibration:
                c.status = "skipped"
                c.reason = (
                    f"not tried: no rows left to set aside for calibration (the {plan.count} batches of this "
                    "input's first window are all measured by the gate); a longer input or a smaller --batch-size"
                )
                return
            rows = [get(j) for j in calibration]
        try:
            with torch.no_grad():
                small = plan.example is not None and table.backend(c.base).family == "runtime"
                c.built = (prebuilt or {}).get((c.mode, c.dtype)) or build(
                    c.mode,
                    module,
                    plan.example() if small else get(0),
                    c.dtype,
                    calibration=rows,  # type: ignore[misc]
                )
        except (Fallback, Unavailable) as exc:
            c.status, c.reason = ("unavailable" if isinstance(exc, Unavailable) else "fallback"), str(exc)
            return
        except Exception as exc:  # noqa: BLE001 - a mode that cannot be built is a result, not a crash
            c.status, c.reason = "fallback", first_line(exc)
            return
        _verify(c, reference, get, verify, budget, gated)

    def decided(pick: Candidate, reason: str, everyone: list[Candidate], **extra: Any) -> Decision:
        assert pick.built is not None
        kept_s = sum(ms for _, ms in kept.values()) / 1000
        total = time.perf_counter() - start
        if budget is not None and pick.gate is None:
            pick.gate = _gate_of(pick, reference, get, budget, gated)
        cal_rows = sum(int(plan.batch_rows(j)) for j in calibration) if pick.built and _calibrated(pick) else 0
        return Decision(
            pick.mode,
            pick.dtype,
            pick.built,
            reason,
            everyone,
            total - kept_s,
            kept,
            kept_s,
            budget_s,
            budget=budget,
            gate=pick.gate,
            calibration_rows=cal_rows,
            **extra,
            verified=verify,
        )

    stale: Candidate | None = None
    if cached is not None and timed:
        # A cached decision: verify only that mode on this input (no timing); if it fails here, forget it.
        mode, dtype = cached
        if (mode, dtype) == ("eager", "fp32"):
            return decided(base, "cached decision for this model, stack and CPU", [base], cache_hit=True)
        hit = next((c for c in candidates if (c.mode, c.dtype) == (mode, dtype)), None)
        if hit is not None:
            attempt(hit, budgeted=False)
            if hit.status == "pass":
                reason = (
                    f"cached decision for this model, stack and CPU, verified on {len(verify)} batches of this input"
                )
                return decided(hit, reason, [base, hit], cache_hit=True)
            stale = hit
            candidates.remove(hit)
            if log is not None:
                log(
                    f"jitcpu: the cached decision {hit.name} is {hit.status} on this input ({hit.reason}); choosing again"
                )
    for c in candidates:
        attempt(c, budgeted=True)

    passing = [base, *(c for c in candidates if c.status == "pass")]
    everyone = [base, *candidates, *([stale] if stale else [])]
    if timed and len(passing) > 1:
        _time(passing, reference, kept, get, timing)
        pick = min(passing, key=lambda c: c.ms if c.ms is not None else float("inf"))
        gain = (base.ms or 0.0) / (pick.ms or 1.0)
        if pick is base:
            reason = f"no verified mode was faster than {base.name}"
        elif gain < MIN_GAIN:
            reason = (
                f"the fastest verified mode, {pick.name}, is only {gain:.3f}x {base.name} "
                f"(under {MIN_GAIN}x is timing noise), so {base.name} it is"
            )
            pick = base
        else:
            reason = (
                f"fastest verified mode: {pick.ms:.1f} ms vs {base.ms:.1f} ms for {base.name} "
                f"({gain:.2f}x) on the same batches of this input"
            )
    elif timed:
        pick = base
        if candidates and all(
            c.status == "skipped" for c in candidates if c.status not in ("unavailable", "redundant")
        ):
            reason = (
                f"this input is small (~{seconds(estimate_s)} in eager): building another mode would cost more "
                f"than it could save (name them with --candidates to try them anyway)"
            )
        else:
            reason = "no other mode was verified on this input"
    else:
        target = candidates[0] if candidates else base
        if target.status == "pass":
            pick, reason = target, f"verified on {len(verify)} batches of this input"
        else:
            pick = base
            if target.dtype != "fp32":
                pick = Candidate(
                    "eager", target.dtype, "pass", built=backends.build("eager", module, get(0), target.dtype)
                )
                if budget is not None:  # the replacement is held to the budget as well (bf16 could miss it)
                    _verify(pick, reference, get, verify, budget, gated)
                    if pick.status != "pass":
                        pick = base
            reason = f"{target.name} is {target.status} ({target.reason}); running {pick.name} instead"
    # Worth remembering only when every candidate had its chance (not cut short by a small input's budget).
    complete = timed and not any(c.status == "skipped" for c in candidates)
    return decided(pick, reason, everyone, cacheable=complete, stale=stale is not None)


def _verify(
    c: Candidate,
    reference: Callable[[int], Any],
    get: Callable[[int], Inputs],
    verify: list[int],
    budget: Budget | None = None,
    gated: Sequence[int] = (),
) -> None:
    """Compare a candidate with eager fp32 on real batches of several shapes; a difference rejects it:
    ``mismatch`` on the first batch, ``diverges`` when it matched there but not on another shape.

    Under a ``budget`` the candidate also runs the ``gated`` batches and is scored row by row; one that
    misses the budget is ``mismatch`` with its worst row, p1 and rows covered. An int8 candidate is held to
    the budget only (fp tolerances are not what int8 can meet); the others to both."""
    tolerance = Tolerance(c.dtype)
    scores = []
    batches = list(dict.fromkeys([*verify, *gated])) if budget is not None else verify
    for k, j in enumerate(batches):
        ref = reference(j)
        batch = get(j)
        try:
            out, _ = _run_timed(c.built, batch.clone())  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001 - any failure rejects the mode, with the reason
            c.status, c.reason = "fallback", f"failed on a real batch {batch.describe()}: {first_line(exc)}"
            return
        if budget is not None:
            try:
                scores.append(per_row(budget, ref, out, batch))
            except (ValueError, RuntimeError) as exc:
                c.status, c.reason = "mismatch", f"cannot score its outputs against eager's: {first_line(exc)}"
                return
        if c.quantized or j not in verify:
            continue
        result = compare(ref, out, tolerance, allow_float_dtype_change=c.dtype != "fp32")
        if c.max_abs_diff is None or (result.max_abs_diff or 0) > c.max_abs_diff:
            c.max_abs_diff = result.max_abs_diff
        if not result.ok:
            c.status = "mismatch" if k == 0 else "diverges"
            c.reason = f"differs from eager on a real batch {batch.describe()}: {result.reason}"
            return
    if budget is not None:
        c.gate = Gate(budget, np.concatenate(scores) if scores else np.zeros(0))
        if not c.gate.ok:
            c.status, c.reason = "mismatch", f"misses {budget.describe()} on held-back rows of this input"
            return
    c.status = "pass"


def _gate_of(
    c: Candidate, reference: Callable[[int], Any], get: Callable[[int], Inputs], budget: Budget, gated: Sequence[int]
) -> Gate:
    """eager fp32 is the reference: its rows score 1 (cosine) or agree; other picks were gated in _verify."""
    if (c.mode, c.dtype) == ("eager", "fp32"):
        scores = [per_row(budget, reference(j), reference(j), get(j)) for j in gated]
        return Gate(budget, np.concatenate(scores) if scores else np.zeros(0))
    _verify(c, reference, get, [], budget, gated)
    assert c.gate is not None
    return c.gate


def _calibrated(c: Candidate) -> bool:
    return table.backend(c.base).calibrated


def _calibration_batches(plan: Plan, measured: Sequence[int]) -> list[int]:
    """Batches of the plan set aside for int8 calibration: none the gate measures, spread over the lengths
    (every other unmeasured batch, from the longest), up to CALIBRATION_ROWS rows."""
    free = [j for j in range(plan.count) if j not in measured]
    picked: list[int] = []
    rows = 0
    for j in free[::2] + free[1::2]:
        if rows >= CALIBRATION_ROWS:
            break
        picked.append(j)
        rows += plan.batch_rows(j)
    return sorted(picked)


def _time(
    candidates: list[Candidate],
    reference: Callable[[int], Any],
    kept: dict[int, tuple[Any, float]],
    get: Callable[[int], Inputs],
    batches: list[int],
) -> None:
    """Each candidate runs each timing batch once, interleaved batch by batch (rotating who goes first)
    so a busy machine slows them alike; ``ms`` is the total. On a batch nobody ran yet, eager fp32's run
    is the reference, kept as the run's output: timing it costs nothing extra."""
    for c in candidates:
        c.ms = 0.0
    for k, j in enumerate(batches):
        order = candidates[k % len(candidates) :] + candidates[: k % len(candidates)]
        for c in order:
            if c.mode == "eager" and c.dtype == "fp32" and j not in kept:
                reference(j)
                ms = kept[j][1]
            else:
                _, ms = _run_timed(c.built, get(j).clone())  # type: ignore[arg-type]
            c.ms += ms  # type: ignore[operator]
