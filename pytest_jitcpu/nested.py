"""One walker over nested values (model inputs and outputs), built on torch's pytree.

torch's pytree already knows dict, list, tuple, namedtuple, OrderedDict, defaultdict, deque and every
Hugging Face ``ModelOutput`` (transformers registers its subclasses), and rebuilds each with its own type.
What pytree keeps as a leaf but a model's batch may still hold, a ``Mapping`` such as ``BatchEncoding``
or a list/tuple subclass it does not know, is walked here as a plain dict / list / tuple. Everything
else (tensors, numbers, strings, caches, custom objects) is a leaf.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch.utils import _pytree as pytree


def _plain(value: Any) -> Any:
    """A container pytree does not know, as the plain container it stands for; anything else unchanged."""
    if pytree.tree_is_leaf(value):
        if isinstance(value, Mapping):
            return dict(value)
        if isinstance(value, tuple):
            return tuple(value)
        if isinstance(value, list):
            return list(value)
    return value


def _is_unknown_container(value: Any) -> bool:
    return _plain(value) is not value


def map_leaves(fn: Callable[[Any], Any], value: Any) -> Any:
    """``value`` with every leaf replaced by ``fn(leaf)``; containers rebuilt (unknown ones as plain ones)."""

    def leaf(x: Any) -> Any:
        return map_leaves(fn, _plain(x)) if _is_unknown_container(x) else fn(x)

    return pytree.tree_map(leaf, value, is_leaf=_is_unknown_container)


def flatten(value: Any) -> tuple[list[Any], pytree.TreeSpec]:
    """The leaves in walk order (dicts in insertion order) and the structure that holds them."""
    return pytree.tree_flatten(map_leaves(lambda x: x, value))


def leaves(value: Any) -> list[Any]:
    return flatten(value)[0]


def tensors(value: Any) -> list[torch.Tensor]:
    """Every tensor in a nested value, in walk order."""
    return [x for x in leaves(value) if isinstance(x, torch.Tensor)]


def has_tensor(value: Any) -> bool:
    return any(isinstance(x, torch.Tensor) for x in leaves(value))


def children(value: Any) -> list[tuple[Any, Any]] | None:
    """One level: ``(key, child)`` pairs of a container (dict key, list index, field name), None for a leaf."""
    value = _plain(value)
    if pytree.tree_is_leaf(value):
        return None
    pairs, _ = pytree.tree_flatten_with_path(value, is_leaf=lambda x: x is not value)
    return [(_key(path[0]), child) for path, child in pairs]


def _key(entry: Any) -> Any:
    for attr in ("key", "idx", "name"):  # MappingKey, SequenceKey, GetAttrKey
        if hasattr(entry, attr):
            return getattr(entry, attr)
    return str(entry)


def unflatten(leaves: list[Any], spec: pytree.TreeSpec) -> Any:
    """The structure ``spec`` describes (from :func:`flatten` or an exported program), around ``leaves``."""
    return pytree.tree_unflatten(leaves, spec)
