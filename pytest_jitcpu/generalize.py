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

import contextlib
import os
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import hypothesis
import torch
from hypothesis import HealthCheck, Phase, Verbosity
from hypothesis.errors import HypothesisException, Unsatisfiable

from . import backends, replay, state, strategies, variations
from .backends.base import Built, captured_warnings, first_line, precision
from .backends.table import SEARCHED_MODES, backend
from .compare import Comparison, Tolerance, compare, leaves
from .inputs import Inputs
from .record import Record
from .settings import Settings, UsageError

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


class Search:
    """Everything shared by the searches of one ``check`` call: the inputs to try and eager's outputs."""

    def __init__(self, model: torch.nn.Module, batch: Inputs, generate: Any, examples: int) -> None:
        self.model = model
        self.eager: dict[str, Any] = {}
        self.eager_sizes: dict[str, int] = {}
        self.eager_bytes = 0
        self.variations: list[variations.Variation] = []
        self.rejected = 0  # variations eager rejected (each is tried once per check, not per mode)
        self.rejected_generated = 0  # generated inputs eager rejected before any search (the probes)
        self.factory: strategies.SizedFactory | None = None
        self.strategy: Any = None
        self.why_no_strategy: str | None = None
        self.why_no_variations: str | None = None
        if generate is not None:  # the user's inputs replace ours: they know what is valid
            names = strategies.size_parameters(generate) if callable(generate) else []
            if names:
                self.factory = strategies.SizedFactory(generate, names, batch)
                self.strategy = self.factory.strategy()
                self.note = f"from generate=({', '.join(f'{n}=...' for n in names)})"
            else:
                self.strategy = strategies.user_strategy(generate, examples)
                self.note = "from generate="
            return
        seen = {strategies.digest(batch)}
        try:
            made = variations.variations(batch, self._accepts)
        except Exception as exc:  # noqa: BLE001 - an input these cannot vary; free generation still runs
            made = []
            self.why_no_variations = f"could not vary the example: {first_line(exc)}"
        for v in made:
            key = strategies.digest(v.inputs)
            if key in seen:
                continue  # a permutation of one row, a mask without padding to remove...
            seen.add(key)
            if self._accepts(v.inputs):
                self.variations.append(v)
            else:
                self.rejected += 1
        try:
            plan = strategies.plan_for(batch, model)
            plan = strategies.settle(plan, self._accepts)
        except UsageError:
            raise
        except Exception as exc:  # noqa: BLE001 - the variations above still run
            self.why_no_strategy = f"could not derive inputs from the example: {first_line(exc)}"
            self.note = "no generated inputs"
            return
        if not strategies.probe(plan, self._accepts, PROBES):
            self.rejected_generated = PROBES
            self.why_no_strategy = f"eager rejected all {PROBES} generated inputs probed"
            self.note = "no generated inputs"
            return
        self.strategy = strategies.strategy(plan)
        varying = ", ".join(f"{a.name} {a.low}..{a.high}" for a in plan.varying)
        self.note = f"generated inputs vary {varying}" if varying else "generated inputs vary values only"

    def _accepts(self, inputs: Inputs) -> bool:
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


# One Search per check call, shared by that call's (mode, dtype) records: the engine opens ``searches()``
# around a check, so nothing (eager outputs, the model) outlives it.
_SEARCHES: ContextVar[dict[tuple[int, int, int], Search] | None] = ContextVar("jitcpu_searches", default=None)


@contextlib.contextmanager
def searches() -> Iterator[None]:
    """Share the generated inputs and eager outputs between the records of one check."""
    token = _SEARCHES.set({})
    try:
        yield
    finally:
        _SEARCHES.reset(token)


def _search_for(model: torch.nn.Module, batch: Inputs, generate: Any, examples: int) -> Search:
    shared = _SEARCHES.get()
    key = (id(model), id(batch), id(generate))
    search = shared.get(key) if shared is not None else None
    if search is None:
        search = Search(model, batch, generate, examples)
        if shared is not None:
            shared[key] = search
    return search


class _Evaluator:
    """Runs eager and the built module on one input; caches outcomes so Hypothesis' final replay of the
    shrunk example sees the same result even after the shrink budget ran out. Counts what it ran."""

    def __init__(self, search: Search, built: Built, tolerance: Tolerance) -> None:
        self.search = search
        self.built = built
        self.tolerance = tolerance
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
            if kind not in self.kinds:
                self.kinds.append(kind)
        if isinstance(outcome, Divergence):
            self.found = True
        return outcome

    def _evaluate(self, inputs: Inputs, key: str, where: str) -> Any:
        reference = self.search.reference(inputs, key)
        if reference is _REJECT:
            return _REJECT
        self.compared += 1
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


def check(
    model: torch.nn.Module,
    batch: Inputs,
    built: Built,
    rec: Record,
    tolerance: Tolerance,
    settings: Settings,
    generate: Any = None,
) -> None:
    """Search for an input on which ``built`` and eager disagree; on one, ``rec`` becomes ``diverges``.

    ``rec.generalization`` says what the verdict rests on (see :func:`_summary`)."""
    if settings.examples <= 0:
        rec.generalization = _summary("off", why_none="turned off (examples=0)")
        return
    if rec.mode not in SEARCHED_MODES:
        why = backend(rec.mode).not_searched
        if why:
            rec.notes.append(f"generalization not searched: {why}")
            rec.generalization = _summary("not searched", why_none=why)
        return
    found = _search_for(model, batch, generate, settings.examples)  # a bad generate= raises UsageError
    evaluator = _Evaluator(found, built, tolerance)
    divergence = _try_variations(found, evaluator)
    why = None
    if divergence is None:
        divergence, why = _free(found, evaluator, settings, generate)
    rec.examples = evaluator.compared
    rec.generalization = _summary(
        "tested" if evaluator.compared else "untested",
        tried=evaluator.compared
        + evaluator.rejected
        + found.rejected
        + found.rejected_generated
        + _factory_rejected(found),
        matched=evaluator.matched,
        rejected_by_eager=evaluator.rejected + found.rejected + found.rejected_generated,
        kinds=list(evaluator.kinds),
        why_none=None if evaluator.compared else _why_none(found, evaluator, why),
        diverged_on=None if divergence is None else divergence.kind,
    )
    if not evaluator.compared:
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
    rec.reason = divergence.reason + _explained_by(rec.warnings)
    rec.replay = _replay(model, batch, built, rec, tolerance, settings, found, divergence)
    result = divergence.comparison
    if result is not None:
        rec.max_abs_diff, rec.max_rel_diff, rec.worst = result.max_abs_diff, result.max_rel_diff, result.worst
        rec.atol, rec.rtol = result.atol, result.rtol


def _replay(
    model: torch.nn.Module,
    batch: Inputs,
    built: Built,
    rec: Record,
    tolerance: Tolerance,
    settings: Settings,
    found: Search,
    divergence: Divergence,
) -> str | None:
    """The divergence as a snippet, checked to reproduce: the mode built on the snippet's example (the
    same build when the example is written out exactly) must differ from eager on its counterexample."""
    example_key = strategies.digest(batch)

    def reproduces(example: Inputs, counterexample: Inputs) -> bool:
        if strategies.digest(example) == example_key:
            module = built
        else:
            with state.as_given(model):  # built from the model as given, like the mode itself
                module = backends.build(rec.mode, model, example, rec.dtype)
        key = strategies.digest(counterexample)
        outcome = _Evaluator(found, module, tolerance)._evaluate(counterexample, key, "the counterexample")
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


def _summary(verdict: str, **fields: Any) -> dict[str, Any]:
    """``verdict``: ``tested`` (other valid inputs ran), ``untested`` (the search ran but no other valid
    input could be tried: a pass rests on the example alone), ``off`` (examples=0) or ``not searched``
    (a mode the search does not apply to, e.g. torch.compile). ``tried`` inputs, of which ``matched``
    matched eager and ``rejected_by_eager`` were invalid; ``kinds`` of input that matched
    (:data:`pytest_jitcpu.variations.KINDS`, ``generated``, ``generate=``); ``why_none`` when none ran;
    ``diverged_on``: the kind of input that showed a divergence."""
    summary: dict[str, Any] = {
        "verdict": verdict,
        "tried": 0,
        "matched": 0,
        "rejected_by_eager": 0,
        "kinds": [],
        "why_none": None,
        "diverged_on": None,
    }
    summary.update(fields)
    return summary


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


def _try_variations(found: Search, evaluator: _Evaluator) -> Divergence | None:
    """The structure-keeping variations of the example, in order; the first divergence ends the search."""
    for v in found.variations:
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
    try:
        divergence = search(found.strategy, lambda inputs: evaluator(inputs, kind), settings)
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
