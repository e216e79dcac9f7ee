"""A divergence as a Python snippet a user can paste and run: the example the mode was built on, the
counterexample, and the ``jitcpu.check`` call that shows the divergence again.

Small tensors are written out; a larger one becomes the call that makes it (``torch.full`` for a
constant, a seeded ``torch.randint``/``torch.randn`` of its shape, dtype and range) when that still
reproduces the divergence, which :func:`snippet` verifies by running what the snippet builds; otherwise
every value is written out. The snippet's tensors are made by evaluating its own text, so what was
verified is what the user gets.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy
import torch

from ..inputs import Inputs

SMALL = 16  # elements written out in full in the compact form


def _number(value: Any, single: bool = False) -> str:
    """Python source for one value; ``single``: the shortest text that reads back as the same float32."""
    if isinstance(value, bool):
        return repr(value)
    if isinstance(value, float) and not math.isfinite(value):
        return f'float("{value}")'
    if isinstance(value, float) and single:
        return str(numpy.float32(value))
    return repr(value)


def _values(value: Any, single: bool) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_values(v, single) for v in value) + "]"
    return _number(value, single)


def _dtype(t: torch.Tensor) -> str:
    return str(t.dtype)  # "torch.float32"


def literal(t: torch.Tensor) -> str:
    """``torch.tensor([...], dtype=...)`` with every value (floats round-trip exactly through repr)."""
    values = t.detach().cpu()
    # float32 and narrower: every value is a float32, written as the shortest text that reads back as it
    single = values.is_floating_point() and values.dtype != torch.float64
    if values.dtype in (torch.bfloat16, torch.float16):
        values = values.float()
    if t.dim() == 0:
        return f"torch.tensor({_number(values.item(), single)}, dtype={_dtype(t)})"
    if t.numel() == 0:
        return f"torch.empty({list(t.shape)}, dtype={_dtype(t)})"
    return f"torch.tensor({_values(values.tolist(), single)}, dtype={_dtype(t)})"


def generated(t: torch.Tensor, seed: int) -> str:
    """The call that makes a tensor of this shape, dtype and range (not its values, unless constant)."""
    shape = tuple(t.shape)
    flat = t.detach().reshape(-1)
    if bool((flat == flat[0]).all()):
        return f"torch.full({shape}, {_number(flat[0].item())}, dtype={_dtype(t)})"
    gen = f"generator=torch.Generator().manual_seed({seed})"
    if t.dtype == torch.bool:
        return f"torch.randint(0, 2, {shape}, {gen}).bool()"
    if not t.is_floating_point():
        low, high = int(t.min()), int(t.max())
        return f"torch.randint({low}, {high + 1}, {shape}, {gen}, dtype={_dtype(t)})"
    f = t.detach().float()
    mean, std = float(f"{float(f.mean()):.3g}"), float(f"{float(f.std()):.3g}")
    return f"(torch.randn({shape}, {gen}) * {std!r} + {mean!r}).to({_dtype(t)})"


class _Writer:
    def __init__(self, compact: bool) -> None:
        self.compact = compact
        self.seed = 0

    def value(self, value: Any, indent: str) -> str:
        if isinstance(value, torch.Tensor):
            if self.compact and value.numel() > SMALL:
                self.seed += 1
                return generated(value, self.seed - 1)
            return literal(value)
        if isinstance(value, dict):
            inner = indent + "    "
            items = [f"{inner}{k!r}: {self.value(v, inner)},\n" for k, v in value.items()]
            return "{\n" + "".join(items) + indent + "}"
        if isinstance(value, (list, tuple)):
            parts = ", ".join(self.value(v, indent) for v in value)
            if isinstance(value, tuple):
                return f"({parts},)" if len(value) == 1 else f"({parts})"
            return f"[{parts}]"
        if value is None or isinstance(value, (bool, int, float, str)):
            return _number(value)
        raise TypeError(f"cannot write a {type(value).__name__} in a replay snippet")

    def inputs(self, inputs: Inputs) -> str:
        if inputs.kwargs is not None:
            return self.value(inputs.kwargs, "")
        return self.value(tuple(inputs.args), "")


def evaluate(code: str) -> Inputs:
    """The inputs an ``example = ...`` expression of a snippet builds."""
    value = eval(code, {"torch": torch, "float": float})  # our own generated text, nothing from outside
    return Inputs(kwargs=value) if isinstance(value, dict) else Inputs(args=tuple(value))


def snippet(
    example: Inputs,
    counterexample: Inputs,
    *,
    model: str,
    mode: str,
    dtype: str,
    tolerances: dict[str, float],
    reproduces: Callable[[Inputs, Inputs], bool],
    what: str = "differs from eager on `counterexample`",
    crashed: bool = False,
) -> str:
    """The shortest snippet (compact first, then every value written out) whose inputs ``reproduces``."""
    verified = False
    for compact in (True, False):
        writer = _Writer(compact)
        example_code, counter_code = writer.inputs(example), writer.inputs(counterexample)
        try:
            verified = reproduces(evaluate(example_code), evaluate(counter_code))
        except Exception:  # noqa: BLE001 - a snippet that cannot be checked is written out in full
            verified = False
        if verified:
            break
    options = f"modes=[{mode!r}], dtypes=[{dtype!r}]" + "".join(f", {k}={v!r}" for k, v in tolerances.items())
    head = f"# pytest-jitcpu replay: {model} {mode}/{dtype} {what}"
    if crashed:  # isolated, so that the crash is a record again and not the end of this process
        options += ", isolate=True"
        head += "\n# (written by the parent process after the crash: not re-run, it would crash again)"
    elif not verified:
        head += "\n# (not confirmed when written: the divergence did not repeat in a second run)"
    return "\n".join(
        [
            head,
            "# `model` is the model as checked; `jitcpu` the fixture, or: import pytest_jitcpu as jitcpu",
            "import torch",
            "",
            f"example = {example_code}  # the inputs {mode} is built on",
            f"counterexample = {counter_code}",
            f"result = jitcpu.check(model, example, {options}, generate=[counterexample])",
            f"assert result.status({mode!r}, {dtype!r}) == 'diverges', result.table()",
            "",
        ]
    )
