"""Run a model in every selected mode and dtype, compare with the eager fp32 reference, make records.

Knows nothing about pytest: the plugin and the command line both call :func:`check`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any

import torch

from . import backends, hints, serialize, state
from .backends.attention import implementation
from .backends.base import Built, Fallback, Unavailable, first_line, timed_runs
from .backends.table import DYNAMIC_MODES, ROUND_TRIP_MODES, SEARCHED_MODES, backend
from .compare import Tolerance, compare
from .context import DECIDING, CheckContext, Watch
from .inputs import Inputs, normalize
from .record import CheckResult, Record
from .search import generalize, profiles
from .settings import DEFAULT_DTYPES, DEFAULT_MODES, Settings, UsageError

RUNS = 3  # runs per mode before comparing: TorchScript's profiling executor optimizes on later runs


_WATCH: ContextVar[Watch | None] = ContextVar("jitcpu_watch", default=None)


@contextlib.contextmanager
def watched(watch: Watch) -> Iterator[None]:
    """Follow the checks run inside (the isolating child's parent); see :class:`~.context.Watch`."""
    token = _WATCH.set(watch)
    try:
        yield
    finally:
        _WATCH.reset(token)


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module, notes: list[str]) -> Iterator[None]:
    """Check in eval mode (as inference runs); say so when the model was training, and restore it."""
    # Per submodule: a submodule left in training mode (dropout on) counts, and restoring with
    # model.train() would also flip submodules the user had put in eval mode on purpose.
    modes = {module: module.training for module in model.modules()}
    training = [name or "the model" for name, module in model.named_modules() if modes[module]]
    if training:
        where = "model" if model.training else f"submodule {training[0]!r} of the model"
        notes.append(f"{where} was in training mode; it was checked in eval mode (call model.eval())")
        model.eval()
    try:
        yield
    finally:
        for module, was_training in modes.items():
            module.training = was_training


def _refuse_off_cpu(model: torch.nn.Module) -> None:
    """Weights on the meta device have no data (a model built with device_map='meta' or under
    torch.device('meta')); weights on a GPU are not what a CPU check runs. Either is the user's to fix,
    said before torch raises from deep inside a comparison."""
    for kind, named in (("parameter", model.named_parameters()), ("buffer", model.named_buffers())):
        for name, tensor in named:
            if tensor.is_meta:
                raise UsageError(
                    f"model: {kind} {name!r} is on the meta device (no data); load the weights first "
                    "(from_pretrained without device_map='meta', or model.to_empty(device='cpu') and load_state_dict)"
                )
            if tensor.device.type != "cpu":
                raise UsageError(
                    f"model: {kind} {name!r} is on {tensor.device}; jitcpu checks on CPU: call model.cpu()"
                )


def _output_notes(reference: Any) -> list[str]:
    """What the comparisons can and cannot tell for this eager output (a pass must not hide it)."""
    from . import nested

    tensors = nested.tensors(reference)
    if not tensors:
        return [f"the eager output holds no tensor ({type(reference).__name__}): no mode's values were compared"]
    if all(t.numel() == 0 for t in tensors):
        return ["the eager output has no elements (empty tensors): only shapes and dtypes were compared"]
    if any(t.is_floating_point() and not bool(torch.isfinite(t).all()) for t in tensors):
        return [
            "the eager output has non-finite values (NaN/inf): those elements pass only where a mode gives the same"
        ]
    return []


def _model_name(model: Any) -> str:
    return type(model).__name__


def check(
    model: torch.nn.Module,
    inputs: Any,
    *,
    modes: Any = DEFAULT_MODES,
    dtypes: Any = DEFAULT_DTYPES,
    atol: float | None = None,
    rtol: float | None = None,
    dynamic: Any = None,
    settings: Settings | None = None,
    nodeid: str = "",
    name: str | None = None,
    generate: Any = None,
    on_built: Callable[[Built], None] | None = None,
) -> CheckResult:
    """Check ``model`` on ``inputs`` (a dict of keyword arguments or a tuple of positional ones) in this
    process: every selected mode and dtype, against the eager fp32 reference, over the input domain.

    ``settings`` (from the plugin) wins over ``modes``/``dtypes``/``atol``/``rtol``/``dynamic``. Returns the
    records for every (mode, dtype); never raises for a model that cannot be traced (that is a
    ``fallback``). Crash isolation is :func:`pytest_jitcpu.isolation.check`'s, which runs this in a child.
    """
    if settings is None:
        settings = Settings().updated(modes=modes, dtypes=dtypes, atol=atol, rtol=rtol, dynamic=dynamic)
    if isinstance(model, type) and issubclass(model, torch.nn.Module):
        raise UsageError(
            f"model: got the class {model.__name__}, not a model; pass an instance ({model.__name__}(...))"
        )
    if not isinstance(model, torch.nn.Module):
        got = "None" if model is None else type(model).__name__
        raise UsageError(f"model: expected a torch.nn.Module, got {got}; wrap a function in a Module")
    _refuse_off_cpu(model)
    batch = normalize(inputs)
    ctx = CheckContext(
        model, batch, settings, nodeid, name or _model_name(model), generate, on_built=on_built, watch=_WATCH.get()
    )
    # state.kept: every mode starts from the model as given, and the model is left as found;
    # serialize.batched: every round trip of this check runs in one subprocess, at the end.
    with eval_mode(model, ctx.notes), state.kept(model) as ctx.snapshot, serialize.batched():
        records, reference = _check(ctx)
    return CheckResult(model=ctx.label, records=records, reference=reference)


def _record(ctx: CheckContext, mode: str, dtype: str, status: str, **fields: Any) -> Record:
    return Record(nodeid=ctx.nodeid, model=ctx.label, mode=mode, dtype=dtype, status=status, **fields)


# Modes whose build or search reads the input domain: deciding it costs a few eager runs, paid only then.
_DOMAIN_MODES = frozenset(SEARCHED_MODES) | frozenset(DYNAMIC_MODES)


def _check(ctx: CheckContext) -> tuple[list[Record], Any]:
    records: list[Record] = []
    settings = ctx.settings
    skip = ctx.watch.skip if ctx.watch is not None else frozenset()

    given = implementation(ctx.model)  # the attention every mode but the attention ones runs (they set their own)

    def made(rec: Record) -> None:
        if rec.attn_implementation is None and backend(rec.mode).attention is None:
            rec.attn_implementation = given  # each record says which attention its mode ran
        records.append(rec)
        if ctx.watch is not None:
            ctx.watch.record(rec)

    ctx.phase("eager", "fp32", "running the eager reference")
    eager = backends.build("eager", ctx.model, ctx.batch, "fp32")
    reference, error, eager_fields = _reference(eager, ctx.batch)
    ctx.snapshot.restore()
    if error is not None:
        for dtype in settings.dtypes:
            for mode in settings.modes:
                if (mode, dtype) not in skip:
                    reason = error if mode == "eager" else f"not run: the eager reference failed ({error})"
                    made(_record(ctx, mode, dtype, "error", reason=reason, notes=list(ctx.notes)))
        return records, None
    ctx.notes.extend(_output_notes(reference))
    if _DOMAIN_MODES & set(settings.modes):
        ctx.phase("eager", "fp32", DECIDING)
        undecided = ctx.watch.undecided if ctx.watch is not None else None
        generalize.decide(ctx, undecided)  # a dynamic= naming no input raises UsageError
        ctx.snapshot.restore()
    domain = ctx.domain.to_json() if ctx.domain is not None else None

    for dtype in settings.dtypes:
        tolerance = Tolerance(dtype, settings.atol, settings.rtol)
        for mode in settings.modes:
            if (mode, dtype) in skip:
                continue
            if mode == "eager" and dtype == "fp32":
                made(_record(ctx, "eager", "fp32", "pass", notes=list(ctx.notes), domain=domain, **eager_fields))
                continue
            rec = _check_mode(ctx, mode, dtype, reference, tolerance)
            rec.domain = domain
            made(rec)
            ctx.snapshot.restore()  # the next mode traces the model as given, not as this one left it
    ctx.phase("", "", "the serialization round trips")
    changed = ctx.snapshot.note()
    if changed:
        for rec in records:
            rec.notes.append(changed)
    hints.explain(records)  # reasons end with the fix where the cause is known
    searched = profiles.note(settings)
    if searched:
        for rec in records:
            if rec.examples is not None:
                rec.notes.append(searched)
    return records, reference


def _reference(eager: Built, batch: Inputs) -> tuple[Any, str | None, dict[str, Any]]:
    """Run eager fp32 three times: the reference, a determinism check, a timing."""
    try:
        reference, latency = timed_runs(eager, batch, RUNS)
        first = eager.run(batch.clone())
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - sys.exit() in forward() is the model's error too
        return None, f"eager run failed: {first_line(exc)}", {}
    same = compare(reference, first, Tolerance("fp32", 0.0, 0.0))
    if not same.ok:
        detail = same.reason or f"max abs diff {same.max_abs_diff:.3g} at {same.worst}"
        return (
            None,
            f"eager reference is nondeterministic: two eager runs differ ({detail}); random ops or dropout?",
            {},
        )
    return reference, None, {"max_abs_diff": 0.0, "max_rel_diff": 0.0, "latency_ms": latency}


def _check_mode(ctx: CheckContext, mode: str, dtype: str, reference: Any, tolerance: Tolerance) -> Record:
    rec = _record(ctx, mode, dtype, "pass", notes=list(ctx.notes))
    ctx.phase(mode, dtype, f"building {mode}/{dtype}")
    try:
        built = backends.build(mode, ctx.model, ctx.batch, dtype, ctx.domain)
    except Unavailable as exc:
        rec.status, rec.reason = "unavailable", str(exc)
        return rec
    except Fallback as exc:
        rec.status, rec.reason, rec.warnings = "fallback", exc.reason, exc.warnings
        return rec
    except Exception as exc:  # noqa: BLE001
        rec.status, rec.reason = "fallback", first_line(exc)
        return rec
    rec.frozen, rec.warnings, rec.fused_ops = built.frozen, built.warnings, built.fused_ops
    rec.compile_time_ms, rec.attn_implementation = built.compile_time_ms, built.attn_implementation
    rec.notes.extend(built.notes)
    ctx.phase(mode, dtype, f"running {mode}/{dtype} on the example inputs")
    try:
        out, rec.latency_ms = timed_runs(built, ctx.batch, RUNS)
    except Exception as exc:  # noqa: BLE001
        rec.status, rec.reason = "fallback", f"{mode} module failed to run: {first_line(exc)}"
        return rec
    if built.probe_fused_ops is not None:
        rec.fused_ops = built.fused_ops = built.probe_fused_ops()
    result = compare(reference, out, tolerance, allow_float_dtype_change=dtype != "fp32")
    rec.max_abs_diff, rec.max_rel_diff, rec.worst = result.max_abs_diff, result.max_rel_diff, result.worst
    rec.atol, rec.rtol = result.atol, result.rtol
    if not result.ok:
        rec.status, rec.reason = "mismatch", result.reason
        return rec
    if ctx.on_built is not None:
        ctx.on_built(built)
    _after_pass(ctx, built, rec, tolerance)
    return rec


def _after_pass(ctx: CheckContext, built: Built, rec: Record, tolerance: Tolerance) -> None:
    """Checks that only make sense once a mode matched on the example inputs."""
    if rec.mode == "eager":
        return
    ctx.phase(rec.mode, rec.dtype, f"running {rec.mode}/{rec.dtype} on generated inputs (divergence search)")
    generalize.check(ctx, built, rec, tolerance)  # says "off" for examples=0
    if ctx.settings.serialize and rec.mode in ROUND_TRIP_MODES:
        ctx.phase(rec.mode, rec.dtype, f"saving {rec.mode}/{rec.dtype} for the serialization round trip")
        serialize.check(ctx.batch, built, rec, tolerance, ctx.model)
