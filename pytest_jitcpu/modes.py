"""How a model is run in each mode: build once (trace, freeze, optimize), then run batches.

``build(mode, model, inputs, dtype)`` returns a :class:`Built` whose ``run(inputs)`` executes one batch
in that mode and precision. A mode that cannot be built raises :class:`Fallback` (tracing failed:
eager would be used) or :class:`Unavailable` (this machine cannot run it), each with a one-line reason.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from .inputs import Inputs, NotTraceable, as_keywords, as_positional, positional_order


class Fallback(Exception):
    """The mode could not be built; the message is the reason, eager would be used instead."""

    def __init__(self, reason: str, warnings: list[str] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.warnings = list(warnings or [])


class Unavailable(Exception):
    """This machine or environment cannot run the mode; the message says why."""


@dataclass
class Built:
    """A model prepared for one mode and dtype."""

    mode: str
    dtype: str
    run: Callable[[Inputs], Any]
    module: Any = None  # the traced/frozen ScriptModule, exported program or compiled module
    frozen: bool | None = None
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    fused_ops: list[str] | None = None
    compile_time_ms: float | None = None
    build_ms: float | None = None
    # Called after the warm-up runs (IPEX fusions only show in the optimized graph after 2-3 runs).
    probe_fused_ops: Callable[[], list[str]] | None = None


def _collapse_tensors(text: str) -> str:
    """Replace each ``tensor(...)`` repr (often thousands of characters) by ``tensor(...)``."""
    out, i = [], 0
    while True:
        j = text.find("tensor(", i)
        if j < 0:
            out.append(text[i:])
            return "".join(out)
        out.append(text[i:j] + "tensor(...)")
        depth, k = 0, j + len("tensor")
        while k < len(text):
            depth += {"(": 1, ")": -1}.get(text[k], 0)
            k += 1
            if depth == 0:
                break
        i = k


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def first_line(exc: BaseException, limit: int = 400) -> str:
    """``TypeName: message`` on one line, tensor reprs collapsed (tracebacks stay out of reports)."""
    message = " ".join(_collapse_tensors(str(exc)).split())
    # "<object object at 0x7f...>" -> "<object object>": the same failure reads the same in every run
    # (and on every xdist worker), so reports and baselines compare equal.
    message = _ADDRESS.sub("", message)
    if len(message) > limit:
        message = message[: limit - 3] + "..."
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


@contextlib.contextmanager
def precision(dtype: str) -> Iterator[None]:
    """fp32: as is; bf16: CPU autocast (cache off, as tracing under autocast requires)."""
    if dtype == "bf16":
        with torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False):
            yield
    else:
        yield


_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep


def _outside_torch(filename: str, lineno: int) -> tuple[str, int]:
    """Where a TracerWarning raised in torch's own Python code (``F.embedding``, ...) points: the first
    caller outside torch, i.e. the line of the model's code that explains it."""
    if not filename.startswith(_TORCH_DIR):
        return filename, lineno
    frame = sys._getframe(1)
    while frame is not None and (frame.f_code.co_filename, frame.f_lineno) != (filename, lineno):
        frame = frame.f_back  # up to the warning's own frame
    while frame is not None and frame.f_code.co_filename.startswith(_TORCH_DIR):
        frame = frame.f_back
    return (frame.f_code.co_filename, frame.f_lineno) if frame is not None else (filename, lineno)


@contextlib.contextmanager
def captured_warnings(into: list[str], keep: Callable[[warnings.WarningMessage], bool] | None = None) -> Iterator[None]:
    """Record warnings instead of showing them (a user's ``filterwarnings = error`` must not turn the
    tracer's own warnings into failures); keep the TracerWarnings, deduplicated, with file:line."""
    seen: list[warnings.WarningMessage] = []

    def record(
        message: Any, category: type[Warning], filename: str, lineno: int, file: Any = None, line: Any = None
    ) -> None:
        if category.__name__ == "TracerWarning":
            filename, lineno = _outside_torch(filename, lineno)
        seen.append(warnings.WarningMessage(message, category, filename, lineno, file, line))

    with warnings.catch_warnings():  # restores showwarning and the filters on exit
        warnings.simplefilter("always")
        warnings.showwarning = record  # called while the warning's stack is live (catch_warnings' log is not)
        yield
    for w in seen:
        if keep is None and w.category.__name__ != "TracerWarning":
            continue
        if keep is not None and not keep(w):
            continue
        message = str(w.message).strip().splitlines()[0] if str(w.message).strip() else ""
        line = f"{w.category.__name__}: {message[:200]} ({w.filename}:{w.lineno})"
        if line not in into:
            into.append(line)


def _runner(module: Any, call: Callable[[Any, Inputs], Any], dtype: str) -> Callable[[Inputs], Any]:
    def run(inputs: Inputs) -> Any:
        with torch.no_grad(), precision(dtype):
            return call(module, inputs)

    return run


def build_eager(model: torch.nn.Module, inputs: Inputs, dtype: str) -> Built:
    return Built("eager", dtype, _runner(model, lambda m, x: x.call(m), dtype), module=model)


def freeze(traced: Any, built_notes: list[str], seen: list[str]) -> tuple[Any, bool]:
    """torch.jit.freeze as the Trainer did; a module that cannot be frozen runs unfrozen (noted)."""
    try:
        with captured_warnings(seen):
            return torch.jit.freeze(traced.eval()), True
    except Exception as exc:  # noqa: BLE001
        built_notes.append(f"torch.jit.freeze failed, ran unfrozen: {first_line(exc)}")
        return traced, False


def _trace(model: torch.nn.Module, dtype: str, seen: list[str], **trace_args: Any) -> Any:
    with torch.no_grad(), precision(dtype), captured_warnings(seen):
        return torch.jit.trace(model, strict=False, check_trace=False, **trace_args)


def build_trace_dict(model: torch.nn.Module, inputs: Inputs, dtype: str) -> Built:
    seen: list[str] = []
    notes: list[str] = []
    try:
        # A copy: tracing runs forward(), and a model that changes its inputs in place must not
        # change the batch that every later run (and the user) starts from.
        kwargs = as_keywords(model, inputs.clone())
    except NotTraceable as exc:
        raise Fallback(str(exc)) from None
    try:
        traced = _trace(model, dtype, seen, example_kwarg_inputs=kwargs)
    except Exception as exc:  # noqa: BLE001
        raise Fallback(first_line(exc), seen) from None
    module, frozen = freeze(traced, notes, seen)
    names = list(kwargs)

    def call(m: Any, x: Inputs) -> Any:
        kw = as_keywords(model, x)
        return m(**{k: kw[k] for k in names if k in kw})

    return Built("trace-dict", dtype, _runner(module, call, dtype), module, frozen, seen, notes)


def build_trace_tuple(model: torch.nn.Module, inputs: Inputs, dtype: str) -> Built:
    seen: list[str] = []
    notes: list[str] = []
    try:
        args = as_positional(model, inputs.clone())  # a copy, as in build_trace_dict
        order = positional_order(model, list(inputs.kwargs)) if inputs.is_dict else None
    except NotTraceable as exc:
        raise Fallback(str(exc)) from None
    try:
        traced = _trace(model, dtype, seen, example_inputs=args)
    except Exception as exc:  # noqa: BLE001
        raise Fallback(first_line(exc), seen) from None
    module, frozen = freeze(traced, notes, seen)

    def call(m: Any, x: Inputs) -> Any:
        if order is None or not x.is_dict:
            return m(*as_positional(model, x))
        return m(*(x.kwargs[name] if filler is None else filler for name, filler in order))

    return Built("trace-tuple", dtype, _runner(module, call, dtype), module, frozen, seen, notes)


def build_ipex(model: torch.nn.Module, inputs: Inputs, dtype: str) -> Built:
    from . import ipex

    return ipex.build(model, inputs, dtype)


def build_export(model: torch.nn.Module, inputs: Inputs, dtype: str) -> Built:
    from . import successors

    return successors.build_export(model, inputs, dtype)


def build_compile(model: torch.nn.Module, inputs: Inputs, dtype: str) -> Built:
    from . import successors

    return successors.build_compile(model, inputs, dtype)


BUILDERS: dict[str, Callable[[torch.nn.Module, Inputs, str], Built]] = {
    "eager": build_eager,
    "trace-dict": build_trace_dict,
    "trace-tuple": build_trace_tuple,
    "ipex": build_ipex,
    "export": build_export,
    "compile": build_compile,
}


def build(mode: str, model: torch.nn.Module, inputs: Inputs, dtype: str) -> Built:
    """Prepare ``model`` for ``mode`` in ``dtype``; raises Fallback or Unavailable with the reason."""
    start = time.perf_counter()
    built = BUILDERS[mode](model, inputs, dtype)
    built.build_ms = (time.perf_counter() - start) * 1000
    return built


def timed_runs(built: Built, inputs: Inputs, runs: int = 3, timed: int = 3) -> tuple[Any, float]:
    """Run ``runs`` warm-up times (TorchScript's profiling executor and IPEX optimize during the first
    2-3 runs), then ``timed`` more; return the last output and the median latency in ms of the timed
    runs, so the latency is the steady state, not the optimizing run."""
    times: list[float] = []
    out: Any = None
    with captured_warnings(built.warnings):
        for i in range(max(runs, 1) + max(timed, 1)):
            batch = inputs.clone()
            start = time.perf_counter()
            out = built.run(batch)
            if i >= runs:
                times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return out, times[len(times) // 2]
