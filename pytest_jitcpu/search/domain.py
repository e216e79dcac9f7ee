"""The input domain of one check: which dims of which inputs may vary, decided once, used by everything.

A verdict means "matches eager on every input of the domain that eager accepts", so the search and the
artifacts must agree on what the domain is. One :class:`Domain` per check: the exporting backends
(``export``, ``onnx``, ``aoti``) declare exactly its dims dynamic, the divergence search generates only
inside it (other sizes of its dims, other values), and the record states it.

Defaults by the role of a dim, wide on purpose (a false pass is the failure this tool exists to prevent):

* batch: dim 0, when every tensor input shares its size (or holds a whole number of rows per example:
  a vision tower's flattened patches, ``rows of pixel_values``);
* sequence: the dims of integer tensors (token ids, masks, token types) after the batch, except a short
  last dim of a 3+-d one (coordinates, e.g. a bounding box's 4);
  dim 1 of a float ``[batch, seq, features]`` input;
* time: dim 1 of a float ``[batch, samples]`` audio input (named like ``input_values``, ``audio``, ...;
  any other 2-d float input is ``[batch, features]``);
* height and width: dims 2-3 of a float ``[batch, channels, h, w]`` image, 3-4 of a ``[batch, frames,
  channels, h, w]`` video;
* fixed: features, channels, frames, coordinates.

A candidate dim varies only where eager accepts other sizes (:func:`pytest_jitcpu.strategies.settle`);
the rest stay fixed, and the record says so. ``dynamic=`` (on ``check``, the marker, a module's
``pytestmark``) replaces the defaults of the inputs it names, in torch.export's style:
``dynamic={"pixel_values": {0: "batch"}}`` for a classifier that only ever sees one image size;
``dynamic=False`` keeps every shape fixed (only values vary); a dim's name ties dims that share a size.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..settings import UsageError

# Roles: what a dim means (said in notes and divergences), in the order they are described.
ROLES: dict[str, str] = {
    "batch": "batch",
    "sequence": "sequence length",
    "time": "audio length",
    "height": "image height",
    "width": "image width",
    "declared": "declared dynamic",
}
_AUDIO_NAMES = ("input_values", "audio", "wave", "speech", "samples")
COORDINATES_MAX = 4  # a last dim this short of an integer 3+-d tensor is coordinates (bbox: 4), not a sequence


@dataclass(frozen=True)
class Dim:
    """One dim of one input that the domain lets vary."""

    key: Any  # the keyword, or the positional index
    axis: int
    name: str  # dims with one name share their size ("batch", "seq", "height", ...)
    role: str  # a key of ROLES


@dataclass(frozen=True)
class Domain:
    """The dims that may vary and, once settled against eager, the sizes each name takes.

    ``ranges``: name -> (low, high) for the names eager accepts other sizes of; ``fixed``: name -> the
    example's size, for candidate dims eager rejected both one larger and one smaller."""

    dims: tuple[Dim, ...] = ()
    declared: bool = False  # the user gave dynamic=
    ranges: dict[str, tuple[int, int]] = field(default_factory=dict)
    fixed: dict[str, int] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)  # the example's size of each name

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(d.name for d in self.dims))

    @property
    def varying(self) -> tuple[str, ...]:
        """The names whose size may differ from the example's (all candidates until settled)."""
        if not self.ranges and not self.fixed:
            return self.names
        return tuple(n for n in self.names if n in self.ranges)

    def role(self, name: str) -> str:
        return next((d.role for d in self.dims if d.name == name), "declared")

    def axes(self, key: Any) -> dict[int, str]:
        """{axis: name} of one input's dims in the domain."""
        return {d.axis: d.name for d in self.dims if d.key == key}

    def sizes_of(self, inputs: Any) -> dict[str, int]:
        """The size each of the domain's names has in ``inputs`` (names whose input is missing are left out)."""
        values = inputs.kwargs if inputs.kwargs is not None else dict(enumerate(inputs.args))
        sizes: dict[str, int] = {}
        for d in self.dims:
            shape = getattr(values.get(d.key), "shape", None)
            if shape is not None and len(shape) > d.axis:
                sizes.setdefault(d.name, int(shape[d.axis]))
        return sizes

    def contains(self, example: Any, inputs: Any) -> bool:
        """Whether ``inputs`` differs from ``example`` only in values and in the sizes of varying dims."""
        varying = {(d.key, d.axis) for d in self.dims if d.name in set(self.varying)}
        given = example.kwargs if example.kwargs is not None else dict(enumerate(example.args))
        other = inputs.kwargs if inputs.kwargs is not None else dict(enumerate(inputs.args))
        if set(given) != set(other):
            return False
        for key, value in given.items():
            a, b = getattr(value, "shape", None), getattr(other[key], "shape", None)
            if a is None or b is None:
                continue  # nested values keep their structure (the variations never resize them alone)
            if len(a) != len(b):
                return False
            if any(x != y and (key, axis) not in varying for axis, (x, y) in enumerate(zip(a, b, strict=True))):
                return False
        return True

    def dynamic_dims(self) -> dict[Any, dict[int, str]]:
        """{input key: {axis: name}} of the dims an artifact must keep dynamic: those that vary."""
        varying = set(self.varying)
        dims: dict[Any, dict[int, str]] = {}
        for d in self.dims:
            if d.name in varying:
                dims.setdefault(d.key, {})[d.axis] = d.name
        return dims

    def settled(self, ranges: Mapping[str, tuple[int, int]]) -> Domain:
        """This domain after asking eager: ``ranges`` for every name, low == high where it stays fixed."""
        varying = {n: r for n, r in ranges.items() if r[1] > r[0]}
        fixed = {n: self.sizes.get(n, r[0]) for n, r in ranges.items() if r[1] <= r[0]}
        return Domain(self.dims, self.declared, varying, fixed, dict(self.sizes))

    def to_json(self) -> dict[str, Any]:
        """What the record states: the dims per input, the ranges searched, the names eager kept fixed."""
        inputs: dict[str, dict[str, str]] = {}
        for d in self.dims:
            inputs.setdefault(_key(d.key), {})[str(d.axis)] = d.name
        return {
            "inputs": inputs,
            "ranges": {n: list(r) for n, r in self.ranges.items()},
            "fixed": dict(self.fixed),
            "declared": self.declared,
        }


def _key(key: Any) -> str:
    return f"args[{key}]" if isinstance(key, int) else str(key)


def _tensors(inputs: Any) -> list[tuple[Any, Any]]:
    """(key, tensor) of the top-level tensor inputs with at least one dim."""
    import torch

    items = inputs.kwargs.items() if inputs.kwargs is not None else enumerate(inputs.args)
    return [(k, v) for k, v in items if isinstance(v, torch.Tensor) and v.dim() >= 1]


def _candidates(key: Any, t: Any) -> list[tuple[int, str]]:
    """(axis, role) of one tensor's dims after the batch, by what the tensor looks like."""
    shape = tuple(t.shape)
    if t.is_complex():
        return []
    if not t.is_floating_point():  # ids, masks, token types, positions
        last = len(shape) - 1
        return [
            (axis, "sequence")
            for axis in range(1, len(shape))
            if not (len(shape) >= 3 and axis == last and shape[axis] <= COORDINATES_MAX)
        ]
    if len(shape) == 2:  # [batch, samples] audio; otherwise [batch, features]
        audio = isinstance(key, str) and any(n in key.lower() for n in _AUDIO_NAMES)
        return [(1, "time")] if audio else []
    if len(shape) == 3:
        return [(1, "sequence")]
    if len(shape) == 4:
        return [(2, "height"), (3, "width")]
    if len(shape) == 5:
        return [(3, "height"), (4, "width")]
    return []


def by_roles(inputs: Any) -> Domain:
    """The default domain of an example batch (:class:`pytest_jitcpu.inputs.Inputs`), before eager is asked."""
    tensors = _tensors(inputs)
    dims: list[Dim] = []
    sizes: dict[str, int] = {}
    batch_sizes = {int(t.shape[0]) for _, t in tensors} | _nested_batch_sizes(inputs)
    batch = min(batch_sizes) if batch_sizes else 0
    # The batch is dim 0 of every tensor; a tensor whose dim 0 is a multiple k of it holds k rows per
    # example (a vision tower's flattened patches): its dim 0 is the batch's rows, resized with it.
    if batch >= 1 and all(n % batch == 0 for n in batch_sizes):
        for key, t in tensors:
            name = "batch" if t.shape[0] == batch else f"rows of {_key(key)}"
            dims.append(Dim(key, 0, name, "batch"))
            sizes[name] = int(t.shape[0])
    # One name per (family, size): ids and their mask share "seq"; an image's height and a token
    # sequence of the same size do not.
    names: dict[tuple[str, int], str] = {}
    for key, t in tensors:
        for axis, role in _candidates(key, t):
            size = int(t.shape[axis])
            if size <= 1:
                continue  # size-1 dims broadcast (a [b, 1, s, s] mask's head dim)
            family = "image" if role in ("height", "width") else "sequence"
            name = names.get((family if family == "sequence" else role, size))
            if name is None:
                name = _new_name(role, key, names)
                names[(family if family == "sequence" else role, size)] = name
            dims.append(Dim(key, axis, name, role))
            sizes[name] = size
    return Domain(tuple(dims), False, sizes=sizes)


def _nested_batch_sizes(inputs: Any) -> set[int]:
    """Dim 0 of the tensors nested in an input (a cache's pairs): the batch is shared by them too."""
    import torch

    from .. import nested

    sizes: set[int] = set()
    for value in inputs.values():
        if not isinstance(value, torch.Tensor):
            sizes |= {int(t.shape[0]) if t.dim() else -1 for t in nested.tensors(value)}
    return sizes


def _new_name(role: str, key: Any, names: dict[tuple[str, int], str]) -> str:
    base = {"sequence": "seq", "time": "time", "height": "height", "width": "width"}[role]
    taken = set(names.values())
    if base not in taken:
        return base
    return f"{base} of {_key(key)}"


def declared(inputs: Any, dynamic: Any, source: str = "dynamic") -> Domain:
    """The domain for an example batch and a user's ``dynamic=`` (already through :func:`parse_dynamic`):
    the defaults for inputs it does not name, exactly its dims for those it names."""
    default = by_roles(inputs)
    if dynamic is None:
        return default
    if dynamic is False:
        return Domain((), True)
    keys = list(inputs.kwargs) if inputs.kwargs is not None else list(range(len(inputs.args)))
    shapes = {k: tuple(getattr(v, "shape", ())) for k, v in zip(keys, inputs.values(), strict=True)}
    dims = [d for d in default.dims if d.key not in dynamic]
    sizes = {d.name: default.sizes[d.name] for d in dims}
    for key, axes in dynamic.items():
        if key not in shapes:
            have = ", ".join(_key(k) for k in keys)
            raise UsageError(f"{source}: no input {_key(key)!r}; the inputs are {have}")
        for given, name in (axes or {}).items():
            rank = len(shapes[key])
            if not -rank <= given < rank:
                raise UsageError(f"{source}: {_key(key)} has {rank} dims; dim {given} does not exist")
            axis = given % rank
            size = int(shapes[key][axis])
            if sizes.setdefault(name, size) != size:
                raise UsageError(
                    f"{source}: {name!r} names dims of sizes {sizes[name]} and {size} ({_key(key)} dim {axis}); "
                    "dims with one name share their size: give them different names"
                )
            role = "batch" if name == "batch" else "declared"
            dims.append(Dim(key, axis, name, role))
    return Domain(tuple(dims), True, sizes=sizes)
