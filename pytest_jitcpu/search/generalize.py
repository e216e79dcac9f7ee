"""Does a trace that matched on the example inputs also match eager on other inputs? (status ``diverges``)

Tracing records one execution: Python control flow, ``.item()``, ``int(x.shape[i])``/``len(x)`` and
tensor-to-bool conversions become constants. After a trace mode passed on the example inputs,
:func:`check` searches with Hypothesis for generated inputs (see :mod:`pytest_jitcpu.strategies`: same
structure, dtypes and value domains, other values and other batch/sequence sizes) on which the traced
module and eager disagree, and shrinks a failure to a small counterexample. Before that it tries the
variations of the example itself (:mod:`pytest_jitcpu.variations`: its rows resampled, permuted,
padding shifted, values changed), which stay valid where free generation cannot (coupled multimodal
inputs). ``rec.generalization`` says what the verdict rests on: a pass that no other valid input was
tried on is *untested* (:attr:`Record.untested`), never a plain pass.

Rules that keep the verdict fair:

* Eager must accept a generated input first; if eager raises (a fixed position-embedding length, an
  image size the model does not take), the input is rejected, never blamed on the trace.
* The eager reference on a generated input is fp32, as on the example; a bf16 trace is compared with it
  using the same Tolerance. A bf16 difference counts only if eager under bf16 autocast stays within that
  tolerance on the same input (otherwise the input is rejected: the tolerance, not the trace, is off).
* A traced module that raises on an input eager accepts (a shape baked in) diverges too.
* Derandomized by default (``settings.derandomize``), no example database: the same run gives the same
  statuses and counterexamples. Shrinking stops after :data:`SHRINK_BUDGET` new model evaluations.

The trace modes and ``export`` are searched (an exported program can still be specialized to the
example's shapes, or raise on sizes eager accepts). ``compile`` is not: torch.compile guards on shapes
and values and recompiles when a guard fails, so it cannot silently freeze a wrong branch, and each
recompile costs seconds; its records say so in their notes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import hypothesis
import torch
from hypothesis import HealthCheck, Phase, Verbosity
from hypothesis.errors import HypothesisException, Unsatisfiable

from .. import backends, state
from ..backends.base import Built, captured_warnings, first_line, precision
from ..backends.table import SEARCHED_MODES, backend
from ..compare import Comparison, Tolerance, compare, leaves
from ..context import CheckContext
from ..inputs import Inputs
from ..record import Record
from ..settings import Settings, UsageError
from . import replay, strategies, variations
from .domain import ROLES, declared

# Generated inputs drawn once per check before the Hypothesis search: when eager rejects them all
# (coupled multimodal inputs), the search is skipped instead of drawing hundreds more.
PROBES = 20
SHRINK_BUDGET = 100  # new (uncached) model evaluations allowed once a divergence was found
# Eager outputs kept per check: the same generated inputs recur for every mode and dtype of a check.
EAGER_CACHE = 128
EAGER_CACHE_BYTES = 256 * 2**20


@dataclass
class Divergence:
    """The smallest failing input found, and how it fails."""

    inputs: Inputs
    reason: str
    comparison: Comparison | None = None
    kind: str = "generated"  # the kind of input that showed it (variations.KINDS, "generated", "generate=")


class _Diverged(Exception):
    def __init__(self, divergence: Divergence) -> None:
        super().__init__(divergence.reason)
        self.divergence = divergence


_REJECT = object()  # eager itself cannot run this input


class Oracle:
    """Eager fp32 on inputs other than the example, cached for one check: every mode and dtype of a
    check asks for the same inputs (the domain's probes, the variations, the generated inputs)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.eager: dict[str, Any] = {}
        self.eager_sizes: dict[str, int] = {}
        self.eager_bytes = 0

    def accepts(self, inputs: Inputs) -> bool:
        return self.reference(inputs, strategies.digest(inputs)) is not _REJECT

    def reference(self, inputs: Inputs, key: str) -> Any:
        """The eager fp32 output for these inputs, or _REJECT if eager raises."""
        if key in self.eager:
            return self.eager[key]
        try:
            # as_given: a model that changes itself on one input (Swin's window) or while traced must
            # not be judged on the next input as it left itself
            with torch.no_grad(), captured_warnings([], keep=lambda w: False), state.as_given(self.model):
                out = inputs.clone().call(self.model)
        except Exception:  # noqa: BLE001
            out = _REJECT
        size = 0 if out is _REJECT else sum(t.numel() * t.element_size() for t in leaves(out))
        while self.eager and (len(self.eager) >= EAGER_CACHE or self.eager_bytes + size > EAGER_CACHE_BYTES):
            oldest = next(iter(self.eager))  # first in, first out
            self.eager_bytes -= self.eager_sizes.pop(oldest)
            del self.eager[oldest]
        self.eager[key], self.eager_sizes[key] = out, size
        self.eager_bytes += size
        return out


def decide(ctx: CheckContext, undecided: str | None = None) -> None:
    """The check's input domain, decided once after the eager reference: the user's ``dynamic=`` or the
    defaults by role, each candidate dim kept varying only where eager accepts other sizes (one larger or
    one smaller). Sets ``ctx.oracle``, ``ctx.domain``, ``ctx.plan`` (or ``ctx.why_no_plan``).
    ``undecided``: why eager could not be asked (it killed an earlier process on another size)."""
    ctx.oracle = Oracle(ctx.model)
    domain = declared(ctx.batch, ctx.settings.dynamic)  # a name that is no input is a UsageError
    if undecided is not None:
        ctx.domain = domain
        ctx.why_no_plan = f"eager {undecided.split(':', 1)[0]} the process on an input of another size"
        ctx.notes.append(f"input domain not settled: the process {undecided}; searched with variations only")
        return
    try:
        plan = strategies.plan_for(ctx.batch, ctx.model, domain)
        plan = strategies.settle(plan, ctx.oracle.accepts)
    except UsageError:
        raise
    except Exception as exc:  # noqa: BLE001 - the variations still run; the domain stays as declared
        ctx.domain, ctx.why_no_plan = domain, f"could not derive inputs from the example: {first_line(exc)}"
        return
    ranges = {a.name: (a.low, a.high) for a in plan.axes}
    size = domain.sizes.get("batch")
    if size and ranges.get("batch", (0, 0))[1] <= size and _rows_accepted(ctx, size):
        # Generation cannot resize a nested input (a cache) or coupled rows (patches per image); the row
        # variations can, and eager took one row: the batch (and every input's rows) varies.
        for name in domain.names:
            if domain.role(name) == "batch":
                rows = domain.sizes[name] // size
                ranges[name] = (rows, (size + strategies.BATCH_EXTRA) * rows)
    for name in domain.names:  # a dim pinned by an input kept as it is does not vary
        ranges.setdefault(name, (domain.sizes.get(name, 0), domain.sizes.get(name, 0)))
    ctx.domain, ctx.plan = domain.settled(ranges), plan


def _rows_accepted(ctx: CheckContext, size: int) -> bool:
    """Does eager take the example's first row alone (every tensor's, nested ones included)?"""
    if size < 2:
        return False
    try:
        return ctx.oracle.accepts(variations.take_rows(ctx.batch, [0], size))
    except Exception:  # noqa: BLE001 - an input whose rows cannot be taken keeps its batch
        return False


class Search:
    """Everything shared by the searches of one ``check`` call: the inputs to try (variations of the
    example, inputs generated over the domain, or the user's ``generate=``)."""

    def __init__(self, ctx: CheckContext) -> None:
        self.oracle: Oracle = ctx.oracle
        self.model = ctx.model
        self.variations: list[variations.Variation] = []
        self.resized: list[variations.Variation] = []
        self.drawn: list[Inputs] | None = None  # the inputs a first, derandomized search ran without a divergence
        self.rejected = 0  # variations eager rejected (each is tried once per check, not per mode)
        self.rejected_generated = 0  # generated inputs eager rejected before any search (the probes)
        self.factory: strategies.SizedFactory | None = None
        self.strategy: Any = None
        self.why_no_strategy: str | None = None
        self.why_no_variations: str | None = None
        generate, batch = ctx.generate, ctx.batch
        if generate is not None:  # the user's inputs replace ours: they know what is valid
            names = strategies.size_parameters(generate) if callable(generate) else []
            if names:
                self.factory = strategies.SizedFactory(generate, names, batch)
                self.strategy = self.factory.strategy()
                self.note = f"from generate=({', '.join(f'{n}=...' for n in names)})"
            else:
                self.strategy = strategies.user_strategy(generate, ctx.settings.examples)
                self.note = "from generate="
            return
        seen = {strategies.digest(batch)}
        try:
            made = variations.variations(batch, self.oracle.accepts)
            if ctx.domain is not None:  # nothing outside the domain: no other batch where it is fixed
                made = [v for v in made if ctx.domain.contains(batch, v.inputs)]
        except Exception as exc:  # noqa: BLE001 - an input these cannot vary; free generation still runs
            made = []
            self.why_no_variations = f"could not vary the example: {first_line(exc)}"
        self.variations = self._valid(made, seen)
        # After the free search (whose counterexamples shrink): each dim of the domain one larger and one
        # smaller, so an artifact or a trace that keeps a dim static is caught even if no draw hit it.
        self.resized = self._valid(strategies.resized(ctx.plan), seen) if ctx.plan is not None else []
        plan = ctx.plan
        if plan is None:
            self.why_no_strategy = ctx.why_no_plan
            self.note = "no generated inputs"
            return
        if not strategies.probe(plan, self.oracle.accepts, PROBES):
            self.rejected_generated = PROBES
            self.why_no_strategy = f"eager rejected all {PROBES} generated inputs probed"
            self.note = "no generated inputs"
            return
        self.strategy = strategies.strategy(plan)
        varying = ", ".join(f"{a.name} {a.low}..{a.high}" for a in plan.varying)
        self.note = f"generated inputs vary {varying}" if varying else "generated inputs vary values only"

    def _valid(self, made: list[variations.Variation], seen: set[str]) -> list[variations.Variation]:
        """The new inputs eager accepts (counting those it rejects)."""
        valid = []
        for v in made:
            key = strategies.digest(v.inputs)
            if key in seen:
                continue  # a permutation of one row, a mask without padding to remove...
            seen.add(key)
            if self.oracle.accepts(v.inputs):
                valid.append(v)
            else:
                self.rejected += 1
        return valid

    def reference(self, inputs: Inputs, key: str) -> Any:
        return self.oracle.reference(inputs, key)


class _Evaluator:
    """Runs eager and the built module on one input; caches outcomes so Hypothesis' final replay of the
    shrunk example sees the same result even after the shrink budget ran out. Counts what it ran."""

    def __init__(self, ctx: CheckContext, search: Search, built: Built, tolerance: Tolerance) -> None:
        self.ctx = ctx
        self.search = search
        self.built = built
        self.tolerance = tolerance
        self.example_shapes = _shapes(ctx.batch)
        self.reshaped = 0  # matched inputs whose shapes differ from the example's
        self.held: dict[str, list[int]] = {}  # domain name -> the other sizes of it that matched
        self.outcomes: dict[str, Any] = {}
        self.compared = 0  # inputs eager accepted, run through the built module
        self.matched = 0
        self.rejected = 0  # generated inputs eager rejected
        self.kinds: list[str] = []  # the kinds of input that matched (variations.KINDS, "generated")
        self.found = False
        self.shrink_runs = 0

    def __call__(self, inputs: Inputs, kind: str = "generated", detail: str = "") -> Any:
        key = strategies.digest(inputs)
        if key in self.outcomes:
            return self.outcomes[key]
        if self.found:
            if self.shrink_runs >= SHRINK_BUDGET:
                return None  # not evaluated (and not cached): shrinking stops improving here
            self.shrink_runs += 1
        where = f"a variation of the example ({detail})" if detail else "a generated input"
        outcome = self._evaluate(inputs, key, where)
        self.outcomes[key] = outcome
        if outcome is _REJECT:
            self.rejected += 1
        elif outcome is None:
            self.matched += 1
            self._held(inputs)
            if kind not in self.kinds:
                self.kinds.append(kind)
        if isinstance(outcome, Divergence):
            self.found = True
        return outcome

    def _held(self, inputs: Inputs) -> None:
        if _shapes(inputs) != self.example_shapes:
            self.reshaped += 1
        domain = self.ctx.domain
        if domain is None:
            return
        for name, size in domain.sizes_of(inputs).items():
            if size != domain.sizes.get(name) and size not in self.held.setdefault(name, []):
                self.held[name].append(size)

    def _evaluate(self, inputs: Inputs, key: str, where: str) -> Any:
        reference = self.search.reference(inputs, key)
        if reference is _REJECT:
            return _REJECT
        self.compared += 1
        # Said before it runs: if it kills the process, the isolating parent makes this input the
        # counterexample of a divergence (eager accepted it just now).
        self.ctx.trying(self.built.mode, self.built.dtype, inputs, where)
        try:
            with captured_warnings([], keep=lambda w: False):
                out = self.built.run(inputs.clone())
        except Exception as exc:  # noqa: BLE001
            what = backend(self.built.mode).program
            return Divergence(inputs, f"{what} failed on {where} that eager accepts: {_error(exc)}")
        dtype_change = self.built.dtype != "fp32"
        result = compare(reference, out, self.tolerance, allow_float_dtype_change=dtype_change)
        if result.ok:
            return None
        if dtype_change and result.reason and not result.reason.startswith("structure differs"):
            if not self._eager_within_tolerance(inputs, reference):
                return _REJECT  # eager in the same precision misses too: the tolerance does not fit this input
        return Divergence(inputs, f"differs from eager on {where}: {result.reason}", result)

    def _eager_within_tolerance(self, inputs: Inputs, reference: Any) -> bool:
        try:
            with (
                torch.no_grad(),
                precision(self.built.dtype),
                captured_warnings([], keep=lambda w: False),
                state.as_given(self.search.model),
            ):
                low = inputs.clone().call(self.search.model)
        except Exception:  # noqa: BLE001
            return False
        return compare(reference, low, self.tolerance, allow_float_dtype_change=True).ok


def _error(exc: BaseException) -> str:
    """The error itself: the TorchScript interpreter puts it last, after a long traceback."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if len(lines) > 1 and "TorchScript interpreter" in lines[0]:
        last = lines[-1]
        return last if ":" in last.split(" ", 1)[0] else f"{type(exc).__name__}: {last}"
    return first_line(exc)


def _hypothesis_settings(settings: Settings) -> hypothesis.settings:
    return hypothesis.settings(
        max_examples=settings.examples,
        derandomize=settings.derandomize,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.generate, Phase.shrink],
        verbosity=Verbosity.quiet,
        report_multiple_bugs=False,
        print_blob=False,
    )


def search(strategy: Any, evaluate: Any, settings: Settings) -> Divergence | None:
    """Run the Hypothesis search; the shrunk divergence, or None when every compared input matched."""

    @_hypothesis_settings(settings)
    @hypothesis.given(strategy)
    def generalizes(inputs: Inputs) -> None:
        outcome = evaluate(inputs)
        if outcome is _REJECT:
            hypothesis.reject()
        if isinstance(outcome, Divergence):
            raise _Diverged(outcome)

    if settings.seed is not None and not settings.derandomize:
        generalizes = hypothesis.seed(settings.seed)(generalizes)  # --hypothesis-seed (profiles.py)
    try:
        generalizes()
    except _Diverged as exc:
        return exc.divergence
    return None


def check(ctx: CheckContext, built: Built, rec: Record, tolerance: Tolerance) -> None:
    """Search the check's input domain for an input on which ``built`` and eager disagree; on one,
    ``rec`` becomes ``diverges``. ``rec.generalization`` says what the verdict rests on (:func:`_summary`)."""
    settings = ctx.settings
    if settings.examples <= 0:
        rec.generalization = summary("off", why_none="turned off (examples=0)")
        return
    if rec.mode not in SEARCHED_MODES:
        why = backend(rec.mode).not_searched
        if why:
            rec.notes.append(f"generalization not searched: {why}")
            rec.generalization = summary("not searched", why_none=why)
        return
    if ctx.search is None:
        ctx.search = Search(ctx)  # a bad generate= raises UsageError
    found: Search = ctx.search
    evaluator = _Evaluator(ctx, found, built, tolerance)
    divergence = _try_variations(found.variations, evaluator)
    why = None
    if divergence is None:
        divergence, why = _free(found, evaluator, settings, ctx.generate)
    if divergence is None:
        divergence = _try_variations(found.resized, evaluator)
    same_shapes = _same_shapes_only(ctx, evaluator, divergence)
    tested = evaluator.compared and not same_shapes
    rec.examples = evaluator.compared
    rec.generalization = summary(
        "tested" if tested else "untested",
        tried=evaluator.compared
        + evaluator.rejected
        + found.rejected
        + found.rejected_generated
        + _factory_rejected(found),
        matched=evaluator.matched,
        rejected_by_eager=evaluator.rejected + found.rejected + found.rejected_generated,
        kinds=list(evaluator.kinds),
        why_none=None if tested else (same_shapes or _why_none(found, evaluator, why)),
        diverged_on=None if divergence is None else divergence.kind,
        held={name: sorted(sizes) for name, sizes in evaluator.held.items()},
    )
    if not tested:
        rec.notes.append(f"generalization not checked: {rec.generalization['why_none']}")
    elif why is not None:
        rec.notes.append(f"generalization: {why}")
    if divergence is None:
        if evaluator.matched:
            kinds = ", ".join(evaluator.kinds)
            rec.notes.append(f"{evaluator.matched} other inputs matched eager ({kinds}; {found.note})")
        return
    rec.status = "diverges"
    rec.counterexample = strategies.summarize(divergence.inputs)
    axes = _culprits(ctx, evaluator, _diverged_axes(ctx, divergence))
    rec.generalization["diverged_axes"] = list(axes)
    rec.reason = _on_axes(ctx, axes, evaluator.held, divergence) + divergence.reason + _explained_by(rec.warnings)
    narrow = _narrowed(ctx, axes)
    if narrow is not None:
        rec.generalization["narrow"] = narrow
    rec.replay = _replay(ctx, built, rec, tolerance, divergence)
    result = divergence.comparison
    if result is not None:
        rec.max_abs_diff, rec.max_rel_diff, rec.worst = result.max_abs_diff, result.max_rel_diff, result.worst
        rec.atol, rec.rtol = result.atol, result.rtol


def _shapes(inputs: Inputs) -> tuple[tuple[int, ...], ...]:
    from .. import nested

    return tuple(tuple(t.shape) for t in nested.tensors(inputs.values()))


def _same_shapes_only(ctx: CheckContext, evaluator: _Evaluator, divergence: Divergence | None) -> str | None:
    """Why a pass is untested although other inputs matched: every one had the example's shapes, while
    the domain has dims that may vary. None when another shape matched, or the domain is static."""
    domain = ctx.domain
    if divergence is not None or not evaluator.matched or evaluator.reshaped or domain is None or not domain.dims:
        return None
    fixed = [n for n in domain.names if n not in domain.ranges]
    if fixed and len(fixed) == len(domain.names):
        tried = f"eager rejects every other size of {', '.join(fixed)} (one larger and one smaller were tried)"
    else:
        tried = "eager rejected every input of another shape the search tried"
    return (
        f"same shapes only: the {evaluator.matched} inputs that matched all had the example's shapes; {tried}. "
        "Hand inputs of other sizes over with generate=, or declare the shapes fixed with dynamic=False"
    )


def _diverged_axes(ctx: CheckContext, divergence: Divergence) -> dict[str, int]:
    """The domain's names whose size in the counterexample differs from the example's, when the
    divergence is one of shape: the built module raised, or its output has other shapes than eager's. A
    difference in values on an input of another size may come from its values (a branch): no axis then."""
    domain, inputs, result = ctx.domain, divergence.inputs, divergence.comparison
    if domain is None or (result is not None and not (result.reason or "").startswith("structure differs")):
        return {}
    return {n: size for n, size in domain.sizes_of(inputs).items() if size != domain.sizes.get(n)}


def _culprits(ctx: CheckContext, evaluator: _Evaluator, axes: dict[str, int]) -> dict[str, int]:
    """Of several dims a counterexample changed, those that diverge alone (the example resized on that
    dim only, values drawn as for the resized variations); all of them when none does alone."""
    if len(axes) < 2 or ctx.plan is None:
        return axes
    sizes = {a.name: a.size for a in ctx.plan.axes}
    alone = {}
    for name, size in axes.items():
        if name not in sizes:
            continue
        inputs = strategies.materialize(ctx.plan, {**sizes, name: size}, strategies.fixed_draws())
        if isinstance(evaluator(inputs, "resized", f"{name} {size} alone"), Divergence):
            alone[name] = size
    return alone or axes


def _phrase(ctx: CheckContext, sizes: dict[str, int], example: bool = False) -> str:
    """ "image size 13x13 (the example's 8x8)", "sequence length 3", "batch 1"."""
    domain = ctx.domain
    assert domain is not None
    parts = []
    rest = dict(sizes)
    if "height" in rest and "width" in rest:
        h, w = rest.pop("height"), rest.pop("width")
        parts.append(
            f"image size {h}x{w}"
            + (f" (the example's {domain.sizes['height']}x{domain.sizes['width']})" if example else "")
        )
    for name, size in rest.items():
        # A default name says its role ("sequence length"); a declared or second one is shown as it is.
        what = ROLES[domain.role(name)] if name in ("batch", "seq", "time", "height", "width") else name
        parts.append(f"{what} {size}" + (f" (the example's {domain.sizes.get(name)})" if example else ""))
    return " and ".join(parts)


def _on_axes(ctx: CheckContext, axes: dict[str, int], held: dict[str, list[int]], divergence: Divergence) -> str:
    """ "diverges on image size 13x13 (the example's 8x8): it raises; batch holds (1, 3). " when the
    counterexample changed dims of the domain, else nothing (a divergence on values alone)."""
    if not axes or ctx.domain is None:
        return ""
    how = "it differs" if divergence.comparison is not None else "it raises"
    holding = [
        f"{name} holds ({', '.join(map(str, sorted(sizes)))})"
        for name, sizes in held.items()
        if sizes and name not in axes
    ]
    return f"diverges on {_phrase(ctx, axes, example=True)}: {how}" + "".join(f"; {h}" for h in holding) + ". "


def _narrowed(ctx: CheckContext, axes: dict[str, int]) -> str | None:
    """The ``dynamic=`` that leaves the diverging dims out of the domain (for a user whose model never
    sees other sizes of them), or None when the divergence is not on a shape."""
    domain = ctx.domain
    if not axes or domain is None:
        return None
    drop = set(axes)
    if any(domain.role(n) in ("height", "width") for n in axes):  # an image's size, not one of its sides
        drop |= {n for n in domain.names if domain.role(n) in ("height", "width")}
    spec: dict[str, Any] = {}
    for key in dict.fromkeys(d.key for d in domain.dims):
        keep = {d.axis: d.name for d in domain.dims if d.key == key and d.name not in drop}
        spec[key] = keep or None
    return f"dynamic={spec!r}"


def _replay(ctx: CheckContext, built: Built, rec: Record, tolerance: Tolerance, divergence: Divergence) -> str | None:
    """The divergence as a snippet, checked to reproduce: the mode built on the snippet's example (the
    same build when the example is written out exactly) must differ from eager on its counterexample."""
    batch, model, settings = ctx.batch, ctx.model, ctx.settings
    example_key = strategies.digest(batch)

    def reproduces(example: Inputs, counterexample: Inputs) -> bool:
        if strategies.digest(example) == example_key:
            module = built
        else:
            with state.as_given(model):  # built from the model as given, like the mode itself
                module = backends.build(rec.mode, model, example, rec.dtype, ctx.domain)
        key = strategies.digest(counterexample)
        quiet = CheckContext(model, batch, settings, ctx.nodeid, ctx.label, domain=ctx.domain)
        outcome = _Evaluator(quiet, ctx.search, module, tolerance)._evaluate(counterexample, key, "the counterexample")
        return isinstance(outcome, Divergence)

    tolerances = {k: v for k, v in (("atol", settings.atol), ("rtol", settings.rtol)) if v is not None}
    try:
        return replay.snippet(
            batch,
            divergence.inputs,
            model=rec.model,
            mode=rec.mode,
            dtype=rec.dtype,
            tolerances=tolerances,
            reproduces=reproduces,
        )
    except Exception as exc:  # noqa: BLE001 - inputs a snippet cannot hold (a custom object) keep the summary only
        rec.notes.append(f"no replay snippet: {first_line(exc)}")
        return None


def summary(verdict: str, **fields: Any) -> dict[str, Any]:
    """``verdict``: ``tested`` (other valid inputs ran), ``untested`` (the search ran but no other valid
    input could be tried: a pass rests on the example alone), ``off`` (examples=0) or ``not searched``
    (a mode the search does not apply to, e.g. torch.compile). ``tried`` inputs, of which ``matched``
    matched eager and ``rejected_by_eager`` were invalid; ``kinds`` of input that matched
    (:data:`pytest_jitcpu.variations.KINDS`, ``generated``, ``generate=``); ``why_none`` when none ran;
    ``diverged_on``: the kind of input that showed a divergence."""
    made: dict[str, Any] = {
        "verdict": verdict,
        "tried": 0,
        "matched": 0,
        "rejected_by_eager": 0,
        "kinds": [],
        "why_none": None,
        "diverged_on": None,
    }
    made.update(fields)
    return made


def _factory_rejected(found: Search) -> int:
    return 0 if found.factory is None else found.factory.rejected


def _why_none(found: Search, evaluator: _Evaluator, why: str | None) -> str:
    """Why no other valid input could be tried, in the user's terms."""
    if found.factory is not None and found.factory.error and not found.factory.built:
        return f"generate= could build no input: {found.factory.error}"
    parts = []
    if found.variations or found.rejected:
        parts.append(f"{found.rejected} variations of the example")
    if evaluator.rejected or found.rejected_generated:
        parts.append(f"{evaluator.rejected + found.rejected_generated} generated inputs")
    rejected = f"eager rejected every input tried ({' and '.join(parts)})" if parts else ""
    if why and why.startswith("eager rejected"):
        why = None  # said above, with the counts
    no_strategy = None if found.rejected_generated else found.why_no_strategy
    reasons = (rejected, why, found.why_no_variations, no_strategy)
    return "; ".join(x for x in reasons if x) or "no other input could be tried"


def _try_variations(made: list[variations.Variation], evaluator: _Evaluator) -> Divergence | None:
    """Variations of the example, in order; the first divergence ends the search."""
    for v in made:
        outcome = evaluator(v.inputs, v.kind, f"{v.kind}: {v.detail}")
        if isinstance(outcome, Divergence):
            outcome.kind = v.kind
            return outcome
    return None


def _free(
    found: Search, evaluator: _Evaluator, settings: Settings, generate: Any
) -> tuple[Divergence | None, str | None]:
    """The Hypothesis search: the divergence, and why it gave no verdict when it gave none."""
    if found.strategy is None:
        return None, None
    kind = "generate=" if generate is not None else "generated"
    replayable = generate is None and settings.derandomize
    if replayable and found.drawn is not None:
        # A derandomized search draws the same inputs for every (mode, dtype) of a check while none
        # diverges: run the first search's inputs directly, and search (and shrink) only on a divergence.
        if not any(isinstance(evaluator(inputs, kind), Divergence) for inputs in found.drawn):
            return None, None
        evaluator.found = False  # the search below finds it again, and shrinks it
    drawn: list[Inputs] = []

    def evaluate(inputs: Inputs) -> Any:
        drawn.append(inputs)
        return evaluator(inputs, kind)

    try:
        divergence = search(found.strategy, evaluate, settings)
    except UsageError:
        raise  # e.g. generate= gave something that is not inputs
    except Unsatisfiable:
        return None, "eager rejected every generated input"
    except HypothesisException as exc:  # Flaky, a failed health check, ...
        return None, f"the search gave no verdict: {first_line(exc)}"
    except Exception as exc:  # a bug here must not end the session; a bug in generate= must show
        if generate is not None:
            raise UsageError(f"generate: failed while making inputs: {first_line(exc)}") from exc
        return None, f"the search failed: {first_line(exc)}"
    if divergence is not None:
        divergence.kind = kind
    elif replayable and found.drawn is None:
        found.drawn = drawn
    return divergence, None


def _explained_by(warnings: list[str]) -> str:
    """Point at the TracerWarnings' source lines, which usually say what the trace froze."""
    places = []
    for line in warnings:
        if line.endswith(")") and "(" in line:
            where = line[line.rfind("(") + 1 : -1]
            path, _, lineno = where.rpartition(":")
            short = f"{os.path.basename(path)}:{lineno}"
            if short not in places:
                places.append(short)
    if not places:
        return ""
    more = f" and {len(places) - 3} more" if len(places) > 3 else ""
    return f"; TracerWarnings at {', '.join(places[:3])}{more}"
