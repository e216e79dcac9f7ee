"""The model's Python state: snapshot it before a check, restore it after every run that may change it.

Some models change themselves inside ``forward()``: BigBird switches ``attention_type`` to
``"original_full"`` (and swaps its attention submodules) when a sequence is too short for block-sparse
attention, Swin shrinks ``window_size``/``shift_size`` on small images, a rotary embedding caches the
last sequence length and its table. Run eager on one input and the next mode traces a different model;
run the search on a small input and eager "rejects" every bigger one. So every mode must start from the
model as it was given: :func:`take` walks the model (every submodule's ``__dict__``: plain attributes,
the ``_modules``/``_parameters``/``_buffers`` tables, containers and the plain objects they hold, such
as a shared config), and :meth:`Snapshot.restore` puts back whatever changed, saying what it was.

Tensors: buffers and plain tensor attributes are copied (they are small: position ids, masks, caches)
and written back when their version counter moved (an in-place change); parameters are copied too when
they fit in :data:`PARAMETER_COPY_BYTES`, otherwise an in-place change is reported as not restorable.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import operator
import types
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import torch

PARAMETER_COPY_BYTES = 256 * 2**20  # copy parameters (to restore an in-place change) up to this size
MAX_OBJECTS = 50_000  # plain objects and containers walked per model: a bound for odd object graphs
MAX_DEPTH = 8  # plain objects below a module (config -> sub-config -> ...)
_MISSING = object()
_IMMUTABLE = (int, float, complex, str, bytes, bool, type(None), torch.dtype, torch.device, enum.Enum)
_OPAQUE = (
    type,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    types.ModuleType,
    functools.partial,
    torch.Generator,
)


@dataclass
class Change:
    """One attribute that was not as it was given."""

    path: str  # e.g. "encoder.layer.0.attention_type"
    before: str
    after: str

    def __str__(self) -> str:
        return f"{self.path} {self.before} -> {self.after}"


@dataclass
class _Tensor:
    path: str
    tensor: torch.Tensor
    version: int
    copy: torch.Tensor | None


@dataclass
class Snapshot:
    """The saved state of one model; :meth:`restore` may be called any number of times."""

    objects: list[tuple[str, Any, dict[str, Any]]] = field(default_factory=list)  # (path, object, __dict__ copy)
    containers: list[tuple[str, Any, Any]] = field(default_factory=list)  # (path, container, its shallow copy)
    tensors: list[_Tensor] = field(default_factory=list)
    seen: dict[str, Change] = field(default_factory=dict)  # every change restored so far, first one per path

    def restore(self) -> list[Change]:
        """Put the model back as it was taken; return what had changed (also kept in ``seen``)."""
        changes: list[Change] = []
        for path, obj, saved in self.objects:
            current = obj.__dict__
            if _same_dict(current, saved):
                continue  # the common case, checked at C speed: restore runs before every probe
            for key, value in saved.items():
                now = current.get(key, _MISSING)
                if now is not value:
                    if not _same_value(now, value):
                        changes.append(Change(_join(path, key), _show(value), _show(now)))
                    current[key] = value
            for key in [k for k in current if k not in saved]:
                changes.append(Change(_join(path, key), "(absent)", _show(current[key])))
                del current[key]
        for path, container, saved in self.containers:
            if not _same_container(container, saved):
                changes.extend(_container_changes(path, container, saved))
                _refill(container, saved)
        for t in self.tensors:
            version = t.tensor._version
            if version == t.version:
                continue
            if t.copy is None:
                changes.append(Change(t.path, "as given", "changed in place (too large to copy; not restored)"))
                t.version = version
                continue
            changes.append(Change(t.path, "as given", "changed in place"))
            with torch.no_grad():
                if t.tensor.shape == t.copy.shape:
                    t.tensor.copy_(t.copy)
                else:
                    t.tensor.data = t.copy.clone()
            t.version = t.tensor._version
        for change in changes:
            self.seen.setdefault(change.path, change)
        return changes

    def note(self) -> str | None:
        """The record's note when forward() changed the model, else None."""
        if not self.seen:
            return None
        changes = list(self.seen.values())
        shown = "; ".join(str(c) for c in changes[:5])
        more = f"; and {len(changes) - 5} more" if len(changes) > 5 else ""
        return (
            f"forward() changed model attributes: {shown}{more}; a trace bakes in the value it saw "
            "(restored before every mode, so each mode checked the model as given)"
        )


def take(model: torch.nn.Module) -> Snapshot:
    """Snapshot ``model``'s Python state (and its tensors' values) as it is now."""
    snap = Snapshot()
    memo: set[int] = set()
    params = [p for p in model.parameters()]
    copy_params = sum(p.numel() * p.element_size() for p in params) <= PARAMETER_COPY_BYTES
    _walk(model, "", snap, memo, 0, copy_params)
    return snap


def _walk(obj: Any, path: str, snap: Snapshot, memo: set[int], depth: int, copy_params: bool) -> None:
    if id(obj) in memo or len(memo) >= MAX_OBJECTS:
        return
    memo.add(id(obj))
    if isinstance(obj, torch.Tensor):
        if isinstance(obj, torch.nn.Parameter) and not copy_params:
            copy = None
        else:
            copy = obj.detach().clone()
        with contextlib.suppress(RuntimeError):  # inference tensors have no version counter
            snap.tensors.append(_Tensor(path, obj, obj._version, copy))
        return
    if isinstance(obj, _IMMUTABLE) or isinstance(obj, _OPAQUE):
        return
    if isinstance(obj, (dict, list, set)):
        snap.containers.append((path, obj, _shallow(obj)))
        items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
        for key, value in items:
            _walk(value, _join(path, str(key)), snap, memo, depth, copy_params)
        return
    if isinstance(obj, tuple):
        for i, value in enumerate(obj):
            _walk(value, _join(path, str(i)), snap, memo, depth, copy_params)
        return
    if isinstance(obj, torch.jit.ScriptModule):
        # A scripted module keeps its state in C++ (its _parameters/_modules are views that are not
        # dicts): its tensors are what Python can see change and put back.
        for name, tensor in [*obj.named_parameters(), *obj.named_buffers()]:
            _walk(tensor, _join(path, name), snap, memo, depth, copy_params)
        return
    is_module = isinstance(obj, torch.nn.Module)
    if not is_module and depth >= MAX_DEPTH:
        return
    attrs = getattr(obj, "__dict__", None)
    if not isinstance(attrs, dict):
        return  # __slots__ or a C object: nothing we can put back
    snap.objects.append((path, obj, dict(attrs)))
    for key, value in attrs.items():
        if is_module and key in ("_modules", "_parameters", "_buffers"):
            # The tables themselves are containers; their entries are named like attributes.
            snap.containers.append((path, value, _shallow(value)))
            for name, child in value.items():
                if child is not None:
                    _walk(child, _join(path, name), snap, memo, 0, copy_params)
            continue
        _walk(value, _join(path, key), snap, memo, 0 if is_module else depth + 1, copy_params)


def _shallow(container: Any) -> Any:
    if isinstance(container, dict):
        return dict(container)
    return set(container) if isinstance(container, set) else list(container)


def _same_dict(current: dict[Any, Any], saved: dict[Any, Any]) -> bool:
    """Same keys in the same order, each bound to the very same object."""
    return current.keys() == saved.keys() and all(map(operator.is_, current.values(), saved.values()))


def _same_container(container: Any, saved: Any) -> bool:
    if isinstance(container, dict):
        return _same_dict(container, saved)
    if isinstance(container, set):
        return container == saved
    return len(container) == len(saved) and all(map(operator.is_, container, saved))


def _container_changes(path: str, container: Any, saved: Any) -> list[Change]:
    """Per key for a dict (a swapped submodule reads ``attention.self: A -> B``), else the whole container."""
    if not isinstance(container, dict):
        return [Change(path, _show(saved), _show(container))]
    before = saved
    changes = []
    for key in {**before, **container}:
        old, new = before.get(key, _MISSING), container.get(key, _MISSING)
        if old is not new and not _same_value(old, new):
            changes.append(Change(_join(path, str(key)), _show(old), _show(new)))
    return changes


def _refill(container: Any, saved: Any) -> None:
    if isinstance(container, dict):
        container.clear()
        container.update(saved)
    elif isinstance(container, set):
        container.clear()
        container.update(saved)
    else:
        container[:] = saved


def _same_value(a: Any, b: Any) -> bool:
    """Equal immutable values (an int recomputed to the same number is no change)."""
    if type(a) is not type(b) or not isinstance(a, _IMMUTABLE):
        return False
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - an odd __eq__ means "not known to be the same"
        return False


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _show(value: Any) -> str:
    if value is _MISSING:
        return "(absent)"
    if isinstance(value, torch.Tensor):
        if value.dim() == 0:
            return f"tensor({value.item():g})" if value.is_floating_point() else f"tensor({int(value.item())})"
        return f"tensor{list(value.shape)}"
    if isinstance(value, torch.nn.Module):
        return type(value).__name__
    if isinstance(value, (dict, list, set, tuple)) and not _small_immutable(value):
        return f"{type(value).__name__} of {len(value)}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _small_immutable(value: Any) -> bool:
    items = value.items() if isinstance(value, dict) else value
    flat = [x for pair in items for x in pair] if isinstance(value, dict) else list(items)
    return len(flat) <= 8 and all(isinstance(x, _IMMUTABLE) for x in flat)


# The snapshot of the model under check, so code that runs eager on other inputs (the divergence
# search) can put the model back after each run without being handed the snapshot.
_CURRENT: ContextVar[tuple[int, Snapshot] | None] = ContextVar("jitcpu_state", default=None)


@contextlib.contextmanager
def kept(model: torch.nn.Module) -> Iterator[Snapshot]:
    """Snapshot ``model``; restore it when the block ends (also on an exception)."""
    snap = take(model)
    token = _CURRENT.set((id(model), snap))
    try:
        yield snap
    finally:
        _CURRENT.reset(token)
        snap.restore()


@contextlib.contextmanager
def as_given(model: torch.nn.Module) -> Iterator[None]:
    """Run a block on ``model`` as :func:`kept` took it (a trace or an earlier input may have changed
    it); nothing to do outside a ``kept`` block, or for another model. Restores before the block only:
    the engine restores after every mode and at the end, and a probe costs one restore, not two."""
    current = _CURRENT.get()
    if current is not None and current[0] == id(model):
        current[1].restore()
    yield
