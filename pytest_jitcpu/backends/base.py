"""What every backend shares: the built model, the two ways a build ends without one, precision,
captured warnings, error reasons, and the one traced-build skeleton (inputs -> trace -> freeze).

A backend module imports this (and the leaf modules ``inputs``/``environment``), never another backend.
``build(model, inputs, dtype)`` returns a :class:`Built` whose ``run(inputs)`` executes one batch in that
mode and precision. A mode that cannot be built raises :class:`Fallback` (tracing failed: eager would be
used) or :class:`Unavailable` (this machine cannot run it), each with a one-line reason.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..inputs import Inputs, NotTraceable


class Fallback(Exception):
    """The mode could not be built; the message is the reason, eager would be used instead."""

    def __init__(self, reason: str, warnings: list[str] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.warnings = list(warnings or [])


class Unavailable(Exception):
    """This machine or environment cannot run the mode; the message says why."""


# Native thread pools a backend started in this process that a fork does not copy (the rows'
# ``fork_unsafe_pool``, added by ``backends.build``): a child forked after one started can deadlock, so
# isolation.py runs checks in-process from then on (and says so).
FORK_UNSAFE_POOLS: set[str] = set()


def require(dtype: str, missing: Callable[[], str | None], bf16_refused: Callable[[], str | None]) -> None:
    """Raise Unavailable when a runtime backend's package is missing, or bf16 is asked where it cannot run."""
    why = missing() or (bf16_refused() if dtype == "bf16" else None)
    if why is not None:
        raise Unavailable(why)


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
    # A program that runs without torch (ONNX, OpenVINO IR): what the round trip saves and reloads.
    portable: Portable | None = None
    # The transformers attention implementation the program runs ("sdpa", "eager", ...; None: not a
    # transformers model): a trace of an sdpa model and of an eager-attention model are different programs.
    attn_implementation: str | None = None


@dataclass
class Portable:
    """How a built program is saved and run by its runtime in a process that has no torch.

    ``save(folder)`` writes it and returns the file the runtime loads; ``feed(batch)`` gives the runtime's
    inputs, (name, array) in the order of the program's inputs; ``outputs(arrays)`` puts the runtime's
    outputs back into eager's structure (the same function the in-process run uses, so both compare alike).
    """

    runtime: str  # "onnxruntime", "openvino" or "aoti": what the child process loads it with
    save: Callable[[Path], Path]
    feed: Callable[[Inputs], list[tuple[str, Any]]]
    outputs: Callable[[list[Any]], Any]
    options: dict[str, Any] = field(default_factory=dict)  # how the runtime loads it (threads, precision)
    # A quantized program's fp32 original, saved the same way (``reference(folder) -> file``): a later run
    # without torch gates the int8 program's rows against it (None: the program is its own fp reference).
    reference: Callable[[Path], Path] | None = None


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


_USER_CALL = re.compile(r'File "([^"]+)", line (\d+), in (\w+)\s*\n\s*(.+)')


def reason(exc: BaseException) -> str:
    """``Type: first line of the message`` plus, when the message names it, the user's source line
    (torch.export/dynamo messages run to dozens of lines of hints; the first line and the place matter)."""
    text = str(exc).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    head = first_line(_OneLine(lines[0]) if lines else exc)
    head = head.replace(_OneLine.__name__, type(exc).__name__, 1)
    calls = [m for m in _USER_CALL.finditer(text) if "site-packages" not in m.group(1) and "/torch/" not in m.group(1)]
    if calls:
        path, line, func, code = calls[-1].groups()
        head += f" (at {path}:{line} in {func}: {code.strip()[:120]})"
    return head


class _OneLine(Exception):
    """Carries one line of another exception's message through ``first_line``."""


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


def from_user_code(w: warnings.WarningMessage) -> bool:
    """Keep warnings raised from the model's code, not torch's own deprecation chatter."""
    return not str(w.filename).startswith(_TORCH_DIR.rstrip(os.sep))


# Loggers that print whole graphs or symbolic-shape chatter while export/compile fail or specialize;
# the reason goes into the record instead.
_NOISY_LOGGERS = (
    "torch._dynamo",
    "torch._export",
    "torch.export",
    "torch.fx",
    "torch._inductor",
    "torch._functorch",
    "torch.onnx",
)


@contextlib.contextmanager
def quiet_torch_logs() -> Iterator[None]:
    saved = []
    for name in _NOISY_LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, logger.level))
        logger.setLevel(logging.ERROR + 10)
    try:
        yield
    finally:
        for logger, level in saved:
            logger.setLevel(level)


def freeze(traced: Any, built_notes: list[str], seen: list[str]) -> tuple[Any, bool]:
    """torch.jit.freeze as the Trainer did; a module that cannot be frozen runs unfrozen (noted)."""
    try:
        with captured_warnings(seen):
            return torch.jit.freeze(traced.eval()), True
    except Exception as exc:  # noqa: BLE001
        built_notes.append(f"torch.jit.freeze failed, ran unfrozen: {first_line(exc)}")
        return traced, False


def build_traced(
    mode: str,
    model: torch.nn.Module,
    inputs: Inputs,
    dtype: str,
    *,
    example: Callable[[Inputs], dict[str, Any] | tuple[Any, ...]],
    call: Callable[[Any, Any, Inputs], Any],
    target: Callable[[], torch.nn.Module] | None = None,
    scope: Callable[[], AbstractContextManager[Any]] = contextlib.nullcontext,
    keep: Callable[[warnings.WarningMessage], bool] | None = None,
    failed: Callable[[Exception], None] | None = None,
    notes: list[str] | None = None,
    seen: list[str] | None = None,
    **built: Any,
) -> Built:
    """The one TorchScript build: example inputs -> ``torch.jit.trace`` under captured warnings ->
    ``Fallback`` with the reason -> ``torch.jit.freeze`` -> a runner under ``no_grad`` and the precision.

    ``example(copy)`` gives the kwargs dict or args tuple to trace with (``NotTraceable`` is a fallback);
    ``target()`` the module to trace (default ``model``; called after the example is made); ``scope()``
    a context entered around the trace, the freeze and every run; ``failed(exc)`` may turn a trace error
    into ``Unavailable`` before it becomes a fallback; ``call(module, example, batch)`` runs one batch.
    ``notes``/``seen`` (the record's notes and warnings) may already hold what the backend found first.
    """
    seen = [] if seen is None else seen
    notes = [] if notes is None else notes
    try:
        # A copy: tracing runs forward(), and a model that changes its inputs in place must not
        # change the batch that every later run (and the user) starts from.
        given = example(inputs.clone())
    except NotTraceable as exc:
        raise Fallback(str(exc)) from None
    traced_model = target() if target is not None else model
    trace_args = {"example_kwarg_inputs": given} if isinstance(given, dict) else {"example_inputs": given}
    try:
        with scope(), torch.no_grad(), precision(dtype), captured_warnings(seen, keep):
            traced = torch.jit.trace(traced_model, strict=False, check_trace=False, **trace_args)
    except Exception as exc:  # noqa: BLE001 - every tracing failure is a fallback with its reason
        if failed is not None:
            failed(exc)
        raise Fallback(first_line(exc), seen) from None
    with scope():
        module, frozen = freeze(traced, notes, seen)

    def run(batch: Inputs) -> Any:
        with scope(), torch.no_grad(), precision(dtype):
            return call(module, given, batch)

    return Built(mode, dtype, run, module, frozen, seen, notes, **built)


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
