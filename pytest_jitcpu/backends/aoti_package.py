"""An AOTInductor package (``.pt2``) with its shape contract, and the runner that enforces it.

AOTInductor does not check inputs against the guards its program was exported with (pytorch#151925): an
input outside them runs and returns garbage (a mask of another length than the ids gives an output of the
wrong shape, silently). So the package is saved with its **shape contract** (``SCHEMA``), taken from the
exported program: per input, its dtype, its rank and per dim a static size or a symbol with its range
(``range_constraints``); dims sharing a symbol must be equal; a non-tensor input (baked into the program)
must be given the same value. The contract travels inside the package (its metadata) and beside it
(``<name>.contract.json``, for a reader), and :class:`Package` refuses an input outside it, with a one-line
:class:`ContractError` naming the input, the dim and what is allowed, before running anything.

Imports only torch (and sympy, torch's own dependency): the round trip's child (:mod:`pytest_jitcpu.children.aoti`)
and ``jitcpu run`` load packages with it in a process that has neither the model's code nor transformers.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils import _pytree as pytree

SCHEMA = "jitcpu-aoti-contract/1"
METADATA_KEY = "jitcpu_shape_contract"  # the contract's key in the package's metadata (string values only)
WHY = "AOTInductor would run it unchecked and return garbage, pytorch#151925"


class ContractError(ValueError):
    """An input outside the package's shape contract; the message names the input, the dim and the range."""


def contract_path(package: Path) -> Path:
    """Where the contract is written beside a package: ``model.pt2`` -> ``model.contract.json``."""
    return package.with_suffix(".contract.json")


def _keys(in_spec: pytree.TreeSpec) -> list[str]:
    """The kwarg names of an exported ``(args, kwargs)`` spec, in the example's order."""
    return list(in_spec.children()[1].context) if in_spec.num_children == 2 else []


def named_leaves(args: Sequence[Any], kwargs: dict[str, Any], keys: list[str]) -> list[tuple[str, Any]]:
    """(name, leaf) of ``(args, kwargs)`` with kwargs in the package's order, as the package flattens them."""
    ordered = {k: kwargs[k] for k in keys if k in kwargs}
    pairs, _ = pytree.tree_flatten_with_path((tuple(args), ordered))
    return [(_name(path), leaf) for path, leaf in pairs]


def _name(path: tuple[Any, ...]) -> str:
    """``(SequenceKey(1), MappingKey('input_ids'))`` -> ``input_ids``; ``(SequenceKey(0), SequenceKey(2))`` -> ``args[2]``."""
    head, rest = path[0], path[1:]
    text = "args" + pytree.keystr(rest) if head.idx == 0 else pytree.keystr(rest)
    return text[2:-2] if text.startswith("['") and text.count("[") == 1 else text


def _bound(value: Any) -> int | None:
    """A range bound as an int, None for infinity (torch's int_oo, which int() cannot convert)."""
    if getattr(value, "is_finite", True) is False:
        return None
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError, AttributeError):
        return None


def _constant(value: Any) -> Any:
    """A non-tensor input as JSON: the value itself when JSON has it, else its repr (compared as text)."""
    if value is None or isinstance(value, bool | int | float | str):
        return {"value": value}
    return {"repr": repr(value)}


def contract_of(exported: Any, args: Sequence[Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The shape contract of an exported program, with ``(args, kwargs)`` the example it was exported with."""
    from torch.export.graph_signature import InputKind, TensorArgument

    keys = _keys(exported.call_spec.in_spec)
    vals = {n.name: n.meta.get("val") for n in exported.graph.nodes if n.op == "placeholder"}
    placeholders = [
        s.arg.name
        for s in exported.graph_signature.input_specs
        if s.kind == InputKind.USER_INPUT and isinstance(s.arg, TensorArgument)
    ]
    tensors = iter(placeholders)
    symbols: dict[str, dict[str, int | None]] = {}
    inputs: list[dict[str, Any]] = []
    for name, leaf in named_leaves(args, kwargs, keys):
        if not isinstance(leaf, torch.Tensor):
            inputs.append({"name": name, "kind": "constant", **_constant(leaf)})
            continue
        fake = vals[next(tensors)]
        dims: list[Any] = []
        for size in fake.shape:
            if not isinstance(size, torch.SymInt) or getattr(size.node.expr, "is_number", False):
                dims.append(int(size))
                continue
            expr = size.node.expr
            for sym in expr.free_symbols:
                rng = exported.range_constraints.get(sym)
                lower = (_bound(rng.lower) if rng is not None else None) or 0
                # torch.export's ranges start at 2 only because it specializes sizes 0 and 1 when tracing
                # (no guard says the model needs 2: ep.module() and ONNX run size 1). Size 1 is allowed, and
                # the divergence search compares it with eager like any other size.
                symbols[str(sym)] = {"min": 1 if lower == 2 else lower, "max": _bound(rng.upper) if rng else None}
            dims.append(str(expr))
        inputs.append({"name": name, "kind": "tensor", "dtype": str(fake.dtype).removeprefix("torch."), "dims": dims})
    return {"schema": SCHEMA, "kwargs": keys, "inputs": inputs, "symbols": symbols}


def _range(bounds: dict[str, int | None]) -> str:
    upper = bounds["max"]
    return f"[{bounds['min']}, {upper}]" if upper is not None else f">= {bounds['min']}"


def _evaluate(expr: str, known: dict[str, int]) -> int | None:
    """A derived dim (e.g. ``s0 + 1``) for the symbols seen so far; None when it cannot be computed."""
    import sympy
    from torch.utils._sympy import functions

    try:
        value = sympy.sympify(expr, locals=dict(vars(functions))).subs(known)
        return int(value) if value.is_number else None
    except (sympy.SympifyError, TypeError, ValueError, AttributeError):
        return None


def check(contract: dict[str, Any], given: list[tuple[str, Any]]) -> None:
    """Raise :class:`ContractError` for the first input of ``given`` (name, value) outside the contract."""
    expected = contract["inputs"]
    if [n for n, _ in given] != [i["name"] for i in expected]:
        want = ", ".join(i["name"] for i in expected)
        got = ", ".join(n for n, _ in given) or "nothing"
        raise ContractError(f"the aoti package takes the inputs ({want}); it was given ({got})")
    seen: dict[str, tuple[int, str]] = {}  # symbol -> (size, "input dim i") where it was first bound
    derived: list[tuple[str, int, str, int]] = []
    for spec, (name, value) in zip(expected, given, strict=True):
        if spec["kind"] == "constant":
            same = (
                repr(value) == spec["repr"]
                if "repr" in spec
                else value == spec["value"] and type(value) is type(spec["value"])
            )
            if not same:
                baked = spec.get("repr", repr(spec.get("value")))
                raise ContractError(
                    f"aoti package input {name!r} is {value!r}, but {baked} is compiled into the package"
                )
            continue
        if not isinstance(value, torch.Tensor):
            raise ContractError(f"aoti package input {name!r} must be a tensor, got {type(value).__name__}")
        if str(value.dtype).removeprefix("torch.") != spec["dtype"] or value.dim() != len(spec["dims"]):
            raise ContractError(
                f"aoti package input {name!r} is {str(value.dtype).removeprefix('torch.')}{list(value.shape)}; "
                f"the package takes {spec['dtype']} of rank {len(spec['dims'])}"
            )
        for axis, (size, dim) in enumerate(zip(value.shape, spec["dims"], strict=True)):
            where = f"aoti package input {name!r} dim {axis} is {size}"
            if isinstance(dim, int):
                if size != dim:
                    raise ContractError(f"{where}; the package was compiled for exactly {dim} there ({WHY})")
            elif dim in contract["symbols"]:
                bounds = contract["symbols"][dim]
                if size < bounds["min"] or (bounds["max"] is not None and size > bounds["max"]):
                    raise ContractError(f"{where}; the package allows {_range(bounds)} there ({WHY})")
                first = seen.setdefault(dim, (int(size), f"{name!r} dim {axis}"))
                if first[0] != size:
                    raise ContractError(f"{where}; the package needs it equal to {first[1]} ({first[0]}) ({WHY})")
            else:
                derived.append((name, axis, dim, int(size)))
    known = {sym: size for sym, (size, _) in seen.items()}
    for name, axis, dim, size in derived:
        want = _evaluate(dim, known)
        if want is None or want != size:
            allowed = f"{dim} = {want}" if want is not None else f"{dim}, which the other inputs do not determine"
            raise ContractError(
                f"aoti package input {name!r} dim {axis} is {size}; the package needs {allowed} ({WHY})"
            )


def describe(contract: dict[str, Any]) -> str:
    """The contract in one line, e.g. ``input_ids int64[s0 in [2, 512], 8], flag = True``."""
    parts = []
    for spec in contract["inputs"]:
        if spec["kind"] == "constant":
            parts.append(f"{spec['name']} = {spec.get('repr', repr(spec.get('value')))}")
            continue
        dims = [
            str(d) if isinstance(d, int) else f"{d} {_range(contract['symbols'][d])}" if d in contract["symbols"] else d
            for d in spec["dims"]
        ]
        parts.append(f"{spec['name']} {spec['dtype']}[{', '.join(dims)}]")
    return ", ".join(parts)


def compile_package(exported: Any, path: Path, contract: dict[str, Any]) -> Path:
    """AOTInductor-compile ``exported`` into ``path`` (a ``.pt2``) with the contract in its metadata and beside it."""
    from torch._inductor import aoti_compile_and_package

    configs = {"aot_inductor.metadata": {METADATA_KEY: json.dumps(contract)}}
    aoti_compile_and_package(exported, package_path=str(path), inductor_configs=configs)
    contract_path(path).write_text(json.dumps(contract, indent=1) + "\n", encoding="utf-8")
    return path


class Package:
    """A loaded ``.pt2`` that checks every call against its shape contract before running it."""

    def __init__(self, path: str | Path) -> None:
        from torch._inductor import aoti_load_package

        self.path = Path(path)
        self.model = aoti_load_package(str(self.path))
        text = self.model.get_metadata().get(METADATA_KEY)
        beside = contract_path(self.path)
        if text is None and beside.exists():
            text = beside.read_text(encoding="utf-8")
        if text is None:
            raise ContractError(f"{self.path} has no jitcpu shape contract (in its metadata or {beside.name})")
        self.contract = json.loads(text)
        if self.contract.get("schema") != SCHEMA:
            raise ContractError(f"{self.path}: unknown shape contract schema {self.contract.get('schema')!r}")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        given = named_leaves(args, kwargs, self.contract["kwargs"])
        extra = sorted(set(kwargs) - set(self.contract["kwargs"]))
        if extra:
            raise ContractError(f"the aoti package takes no input {extra[0]!r} (it takes {self.contract['kwargs']})")
        check(self.contract, given)
        tensors = [v for _, v in given if isinstance(v, torch.Tensor)]
        # The output spec is read here, not at load: it may name a type only the model's library defines
        # (a transformers ModelOutput), and the round trip's child loads packages without that library.
        out_spec = pytree.treespec_loads(self.model.loader.get_call_spec()[1])
        return pytree.tree_unflatten(self.model.loader.boxed_run(tensors), out_spec)

    def run_tensors(self, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        """Run on the tensor inputs alone, in the contract's order (the round trip's child: no structure)."""
        names = iter(t["name"] for t in self.contract["inputs"] if t["kind"] == "tensor")
        given = [(next(names, f"input {i}"), t) for i, t in enumerate(tensors)]
        check({**self.contract, "inputs": [t for t in self.contract["inputs"] if t["kind"] == "tensor"]}, given)
        return list(self.model.loader.boxed_run(list(tensors)))
