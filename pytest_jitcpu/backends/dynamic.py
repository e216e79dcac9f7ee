"""The input domain's dims as ``torch.export`` dynamic shapes, shared by the backends that export
(``export``, ``onnx``, ``aoti``): which dims to make dynamic (:class:`pytest_jitcpu.search.domain.Domain`), the
export itself with a static retry, and the note saying what stayed dynamic and what was specialized (the
artifact's shape contract). Not a backend: it has no row in the table.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from typing import Any

import torch

from .. import nested
from ..inputs import Inputs
from ..search.domain import Domain, by_roles
from .base import reason


def _tensors(inputs: Inputs) -> list[tuple[Any, torch.Tensor]]:
    """(key, tensor) for the top-level tensor inputs: key is the kwarg name or the positional index."""
    if inputs.kwargs is not None:
        return [(k, v) for k, v in inputs.kwargs.items() if isinstance(v, torch.Tensor)]
    return [(i, v) for i, v in enumerate(inputs.args) if isinstance(v, torch.Tensor)]


def dynamic_dims(inputs: Inputs, domain: Domain | None = None) -> dict[Any, dict[int, str]]:
    """Which dims to export as dynamic: the varying dims of the check's input domain (the defaults by
    role when none is given: batch, sequence, audio length, image size). Only sizes > 1: torch.export
    specializes sizes 0 and 1. Returns {input key: {axis: name}}; keys without dynamic dims are left out."""
    wanted = (domain if domain is not None else by_roles(inputs)).dynamic_dims()
    values = dict(_tensors(inputs))
    dims: dict[Any, dict[int, str]] = {}
    for key, axes in wanted.items():
        t = values.get(key)
        for axis, name in axes.items():
            if t is not None and t.dim() > axis and t.shape[axis] > 1:
                dims.setdefault(key, {})[axis] = name
    return dims


def shapes_arg(inputs: Inputs, dims: dict[Any, dict[int, str]]) -> Any:
    """dynamic_shapes in the structure torch.export wants (a dict for kwargs, a tuple for args), with
    Dim.AUTO: export keeps a dim dynamic where the model allows it and specializes it where it must
    (e.g. a fixed image size) instead of failing; its range (e.g. seq <= 512) comes from the model."""
    from torch.export import Dim

    def spec(key: Any) -> Any:
        return {axis: Dim.AUTO for axis in dims[key]} if key in dims else None

    if inputs.kwargs is not None:
        return {k: spec(k) for k in inputs.kwargs}
    return tuple(spec(i) for i in range(len(inputs.args)))


def _is_constraint_violation(exc: BaseException) -> bool:
    text = str(exc)
    return "Constraints violated" in text or "ConstraintViolation" in type(exc).__name__


def _export(model: torch.nn.Module, inputs: Inputs, dynamic_shapes: Any) -> Any:
    from torch.export import export

    args = inputs.args if inputs.args is not None else ()
    kwargs = inputs.kwargs if inputs.kwargs is not None else {}
    # On failure torch.export prints the partial graph to sys.stderr; the reason goes into the record.
    with contextlib.redirect_stderr(io.StringIO()):
        return export(model, args=tuple(args), kwargs=dict(kwargs), dynamic_shapes=dynamic_shapes)


def export_program(
    model: torch.nn.Module, inputs: Inputs, notes: list[str], label: str = "export", domain: Domain | None = None
) -> Any:
    """torch.export with the input domain's varying dims dynamic; on a constraint violation export static
    and say so in ``notes`` (each note starts with ``label``, the mode that exported)."""
    dims = dynamic_dims(inputs, domain)
    if not dims:
        notes.append(f"{label}: no dim of the input domain varies with a size > 1; exported with static shapes")
        return _export(model, inputs, None)
    try:
        exported = _export(model, inputs, shapes_arg(inputs, dims))
    except Exception as exc:  # noqa: BLE001 - retried static; a model that cannot export at all fails there
        # A constraint violation, or a spec torch rejects for an unusual forward() (e.g. **kwargs): a static
        # export may still work. If it fails too, its error is the model's real problem.
        exported = _export(model, inputs, None)
        what = "violated a constraint" if _is_constraint_violation(exc) else "failed"
        notes.append(f"{label}: with dynamic {_names(dims)} it {what}, exported with static shapes: {reason(exc)}")
        return exported
    notes.append(_dynamism(exported, inputs, dims, label))
    return exported


def _names(dims: dict[Any, dict[int, str]]) -> str:
    return ", ".join(dict.fromkeys(name for axes in dims.values() for name in axes.values()))


def _dynamism(exported: Any, inputs: Inputs, dims: dict[Any, dict[int, str]], label: str) -> str:
    """Which of the requested dims export kept dynamic (with their range) and which it specialized."""
    shapes: dict[Any, Any] = {}
    try:
        user = list(exported.graph_signature.user_inputs)
        vals = {n.name: n.meta.get("val") for n in exported.graph.nodes if n.op == "placeholder"}
        tensor_keys = [k for k, _ in _tensors(inputs)]
        for i, name in enumerate(user):
            key = name if inputs.kwargs is not None else (tensor_keys[i] if i < len(tensor_keys) else None)
            if key in dims and getattr(vals.get(name), "shape", None) is not None:
                shapes[key] = vals[name].shape
    except (AttributeError, KeyError, TypeError):
        return f"{label}: dynamic {_names(dims)} requested"
    dynamic: dict[str, str] = {}
    static: dict[str, int] = {}
    for key, axes in dims.items():
        if key not in shapes:
            continue
        for axis, name in axes.items():
            size = shapes[key][axis]
            # A SymInt whose expression is a number was specialized (e.g. by a guard size == 2).
            if isinstance(size, torch.SymInt) and not getattr(size.node.expr, "is_number", False):
                dynamic.setdefault(name, _range(exported, size))
            else:
                static.setdefault(name, int(size.node.expr) if isinstance(size, torch.SymInt) else int(size))
    parts = ["dynamic " + ", ".join(f"{name}{rng}" for name, rng in dynamic.items())] if dynamic else []
    # The artifact's shape contract is narrower than the domain here: the search tries those sizes.
    parts += [
        f"{name} static at {size} (the export specialized it: other sizes of the domain will not run)"
        for name, size in static.items()
        if name not in dynamic
    ]
    if not any("batch" in axes.values() for axes in dims.values()):
        parts.append("batch static (the inputs share no batch size > 1)")
    return f"{label}: " + "; ".join(parts) if parts else f"{label}: static shapes"


def _range(exported: Any, size: torch.SymInt) -> str:
    try:
        rng = exported.range_constraints[size.node.expr]
        upper = int(rng.upper) if rng.upper.is_finite else None
    except (AttributeError, KeyError, TypeError, ValueError):
        return ""
    return f" (<= {upper})" if upper is not None else ""


def input_names(exported: Any) -> Callable[[Inputs], dict[str, Any]]:
    """A function from a batch to {the exported program's input name: value}: the batch's (args, kwargs)
    flattened the way torch.export flattened the example (kwargs in the example's order), so a runtime that
    names its inputs after the program's placeholders (ONNX) gets each value under its own name."""
    names = list(exported.graph_signature.user_inputs)
    spec = exported.call_spec.in_spec
    kwarg_keys = list(spec.children()[1].context) if spec.num_children == 2 else []

    def named(batch: Inputs) -> dict[str, Any]:
        args = tuple(batch.args) if batch.args is not None else ()
        given = batch.kwargs if batch.kwargs is not None else {}
        kwargs = {k: given[k] for k in kwarg_keys if k in given}
        leaves, got = nested.flatten((args, kwargs))
        if got != spec:
            raise ValueError(f"the inputs ({batch.describe()}) are not structured like the exported example")
        return dict(zip(names, leaves, strict=True))

    return named
