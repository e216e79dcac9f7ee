"""Model inputs: a dict of keyword arguments or a tuple of positional ones, and conversions between them.

``trace-tuple`` needs the positional tuple a user of an old ``torch.jit.trace`` would have built: the
dict's values in ``forward()``'s parameter order. A parameter missing between two given ones is filled
with its default only when that default is a tensor (the only thing ``torch.jit.trace`` accepts);
otherwise the mode falls back with that reason rather than bind a tensor to the wrong parameter.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from . import nested
from .settings import UsageError


class NotTraceable(Exception):
    """The inputs cannot be given to this mode; the message is the fallback reason."""


@dataclass(frozen=True)
class Inputs:
    """One batch of model inputs: exactly one of ``kwargs`` / ``args`` is set."""

    kwargs: dict[str, Any] | None = None
    args: tuple[Any, ...] | None = None

    @property
    def is_dict(self) -> bool:
        return self.kwargs is not None

    def call(self, fn: Any) -> Any:
        return fn(**self.kwargs) if self.kwargs is not None else fn(*self.args)

    def clone(self) -> Inputs:
        """A copy whose tensors a model may modify in place without touching the original."""
        if self.kwargs is not None:
            return Inputs(kwargs={k: _clone(v) for k, v in self.kwargs.items()})
        return Inputs(args=tuple(_clone(v) for v in self.args))

    def values(self) -> list[Any]:
        return list(self.kwargs.values()) if self.kwargs is not None else list(self.args)

    def describe(self) -> str:
        """Shapes and dtypes, e.g. ``input_ids=int64[2, 7], attention_mask=int64[2, 7]``."""
        if self.kwargs is not None:
            return ", ".join(f"{k}={_describe(v)}" for k, v in self.kwargs.items())
        return ", ".join(_describe(v) for v in self.args)


def _clone(value: Any) -> Any:
    return nested.map_leaves(lambda x: x.clone() if isinstance(x, torch.Tensor) else x, value)


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"{str(value.dtype).replace('torch.', '')}{list(value.shape)}"
    items = nested.children(value)
    if items is not None and isinstance(value, (list, tuple)):
        return "(" + ", ".join(_describe(v) for _, v in items) + ")"
    return type(value).__name__


ACCEPTED = "pass a dict of keyword arguments ({'input_ids': ids, ...}) or a tuple of positional ones ((x,))"


def normalize(inputs: Any) -> Inputs:
    """Accept a dict (keyword arguments), a tuple (positional) or a single tensor; anything else is a usage
    error naming its type and the accepted forms (a list is refused too: a list of batches and a list of
    positional arguments look the same)."""
    if isinstance(inputs, Inputs):
        return inputs
    if isinstance(inputs, torch.Tensor):
        return Inputs(args=(inputs,))
    if isinstance(inputs, Mapping):
        bad = [k for k in inputs if not isinstance(k, str)]
        if bad:
            raise UsageError(f"inputs: dict keys must be forward()'s parameter names (str), got {bad[0]!r}")
        if not inputs:
            raise UsageError(f"inputs: the dict is empty; {ACCEPTED}")
        batch = Inputs(kwargs=dict(inputs))
    elif isinstance(inputs, tuple):
        if not inputs:
            raise UsageError(f"inputs: the tuple is empty; {ACCEPTED}")
        batch = Inputs(args=inputs)
    else:
        name = type(inputs).__name__
        got = "None" if inputs is None else f"{'an' if name[0] in 'aeiou' else 'a'} {name}"
        hint = " (tuple(inputs) if they are forward()'s positional arguments)" if isinstance(inputs, list) else ""
        raise UsageError(f"inputs: got {got}; {ACCEPTED}{hint}")
    if not any(_has_tensor(v) for v in batch.values()):
        hint = ""
        if any(type(v).__module__ == "numpy" for v in batch.values()):
            hint = "; convert with torch.from_numpy(array)"
        elif any(isinstance(v, (list, int, float)) for v in batch.values()):
            hint = "; convert with torch.tensor(values)"
        kinds = [("None" if v is None else type(v).__name__) for v in batch.values()]
        given = ", ".join(
            kinds if batch.kwargs is None else (f"{k}={t}" for k, t in zip(batch.kwargs, kinds, strict=True))
        )
        raise UsageError(f"inputs: no tensor in the inputs ({given}){hint}; a model is checked on tensors")
    named = (
        batch.kwargs.items() if batch.kwargs is not None else ((f"argument {i}", v) for i, v in enumerate(batch.args))
    )
    for key, value in named:
        for tensor in nested.tensors(value):
            if tensor.is_meta:
                raise UsageError(f"inputs: {key} is on the meta device (no data); pass tensors on the CPU")
            if tensor.device.type != "cpu":
                raise UsageError(f"inputs: {key} is on {tensor.device}; jitcpu checks on CPU: pass tensor.cpu()")
    return batch


def _has_tensor(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return True
    if isinstance(value, Mapping):
        return any(_has_tensor(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_has_tensor(v) for v in value)
    return False


def forward_parameters(model: Any) -> list[inspect.Parameter]:
    fn = model.forward if isinstance(model, torch.nn.Module) else model
    try:
        return list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError) as exc:
        raise NotTraceable(f"cannot read forward()'s signature: {exc}") from None


_NAMED = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def positional_order(model: Any, keys: list[str]) -> list[tuple[str, Any]]:
    """The (name, filler) list that turns a dict with these keys into a positional tuple.

    ``filler`` is None for a given key, or the tensor default used for a gap parameter.
    Raises NotTraceable with the reason when no faithful tuple exists.
    """
    params = forward_parameters(model)
    positional = [p for p in params if p.kind in _NAMED]
    names = [p.name for p in positional]
    for key in keys:
        if key not in names:
            keyword_only = any(p.name == key and p.kind == inspect.Parameter.KEYWORD_ONLY for p in params)
            where = "a keyword-only parameter" if keyword_only else "not a positional parameter of forward()"
            raise NotTraceable(f"input {key!r} is {where}, so it cannot be passed in a positional tuple")
    if not keys:
        return []
    last = max(names.index(k) for k in keys)
    order: list[tuple[str, Any]] = []
    for param in positional[: last + 1]:
        if param.name in keys:
            order.append((param.name, None))
        elif isinstance(param.default, torch.Tensor):
            order.append((param.name, param.default))
        else:
            default = "no default" if param.default is inspect.Parameter.empty else f"default {param.default!r}"
            raise NotTraceable(
                f"parameter {param.name!r} (position {names.index(param.name)}) sits between given inputs and its "
                f"{default} cannot be passed to torch.jit.trace; add it to the inputs or use trace-dict"
            )
    return order


def as_positional(model: Any, inputs: Inputs) -> tuple[Any, ...]:
    """The positional tuple for these inputs (see ``positional_order``)."""
    if inputs.args is not None:
        return inputs.args
    order = positional_order(model, list(inputs.kwargs))
    return tuple(inputs.kwargs[name] if filler is None else filler for name, filler in order)


def as_keywords(model: Any, inputs: Inputs) -> dict[str, Any]:
    """The keyword dict for these inputs, binding positional ones to forward()'s parameter names."""
    if inputs.kwargs is not None:
        return inputs.kwargs
    params = forward_parameters(model)
    named = [p for p in params if p.kind in _NAMED]
    if len(inputs.args) > len(named):
        raise NotTraceable(
            f"{len(inputs.args)} positional inputs but forward() names only {len(named)} positional parameters"
        )
    for p in named[: len(inputs.args)]:
        if p.kind == inspect.Parameter.POSITIONAL_ONLY:
            raise NotTraceable(f"parameter {p.name!r} is positional-only, so it cannot be passed by keyword")
    return {p.name: v for p, v in zip(named, inputs.args, strict=False)}
