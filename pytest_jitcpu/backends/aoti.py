"""``aoti``: TorchScript's successor for shipping. ``torch.export`` with the check's input domain (the
shared recipe in :mod:`.dynamic`),
``torch._inductor.aoti_compile_and_package`` into a ``.pt2``, loaded with ``aoti_load_package`` and run
through :class:`~.aoti_package.Package`, which refuses an input outside the package's shape contract
(AOTInductor itself does not check: pytorch#151925).

bf16: CPU autocast has to be in the program, not around the call (a package runs compiled kernels that
autocast never sees), and an ambient autocast is not recorded by ``torch.export`` (its graph is taken above
autocast). So the exported program is lowered to core ATen under autocast, which writes autocast's casts
into the graph, and that graph is compiled: the package computes in bf16 where eager autocast would.

The round trip (:class:`~.base.Portable`, runtime ``aoti``): the ``.pt2`` and its contract are loaded and
run by :mod:`pytest_jitcpu.children.aoti` in a fresh Python that cannot import transformers or the model's
module. A machine without a C++ compiler cannot build a package: ``unavailable``, found the way inductor
looks for one (``CXX``, else ``g++``).
"""

from __future__ import annotations

import shutil
import tempfile
import time
import weakref
from pathlib import Path
from typing import Any

import torch

from .. import nested
from ..inputs import Inputs
from ..search.domain import Domain
from . import aoti_package
from .base import (
    Built,
    Fallback,
    Portable,
    Unavailable,
    captured_warnings,
    first_line,
    from_user_code,
    precision,
    quiet_torch_logs,
    reason,
)
from .dynamic import export_program

BLOCKED = ("transformers",)  # never importable in the round trip's child, beside the model's own module


def compiler_missing() -> str | None:
    """Why inductor cannot find a C++ compiler here (it reads ``CXX``, else tries ``g++``), or None."""
    try:
        from torch._inductor import cpp_builder, exc

        cpp_builder.get_cpp_compiler()
    except ImportError as error:
        return f"torch._inductor cannot be imported: {first_line(error)}"
    except exc.InvalidCxxCompiler:
        from torch._inductor import config

        tried = ", ".join(c for c in config.cpp.cxx if c) or "none"
        return (
            f"AOTInductor compiles C++ and no C++ compiler was found (tried: {tried}); "
            "install g++ (e.g. apt-get install g++) or point CXX at one"
        )
    except Exception as error:  # noqa: BLE001 - a compiler that fails its own check is a reason, not a crash
        return f"inductor's C++ compiler check failed: {first_line(error)}"
    return None


def _lowered(exported: Any, dtype: str) -> Any:
    """The program to compile: for bf16 lowered to core ATen under CPU autocast, so its casts are in it."""
    if dtype != "bf16":
        return exported
    with torch.no_grad(), precision("bf16"):
        return exported.run_decompositions()


def _blocked(model: torch.nn.Module) -> list[str]:
    """What the child must not import: transformers and the top-level module the model's class lives in."""
    top = type(model).__module__.split(".")[0]
    own = [] if top in ("torch", "builtins", "__main__") else [top]
    return list(dict.fromkeys([*BLOCKED, *own]))


def _numpy(value: torch.Tensor) -> Any:
    return value.detach().contiguous().numpy()


def build(model: torch.nn.Module, inputs: Inputs, dtype: str, domain: Domain | None = None) -> Built:
    """Export with the input domain's dims dynamic, AOTInductor-compile into a ``.pt2`` (timed), load it, run it."""
    missing = compiler_missing()
    if missing is not None:
        raise Unavailable(missing)
    seen: list[str] = []
    notes: list[str] = []
    example = inputs.clone()
    try:
        with torch.no_grad(), precision(dtype), captured_warnings(seen, from_user_code), quiet_torch_logs():
            exported = export_program(model, example, notes, "aoti", domain=domain)
    except Exception as exc:  # noqa: BLE001 - any export failure is a fallback with its reason
        raise Fallback(reason(exc), seen) from None
    args = tuple(example.args) if example.args is not None else ()
    kwargs = dict(example.kwargs) if example.kwargs is not None else {}
    folder = Path(tempfile.mkdtemp(prefix="jitcpu-aoti-"))
    path = folder / "model.pt2"
    start = time.perf_counter()
    try:
        with captured_warnings([], keep=lambda w: False), quiet_torch_logs():
            contract = aoti_package.contract_of(exported, args, kwargs)
            aoti_package.compile_package(_lowered(exported, dtype), path, contract)
            package = aoti_package.Package(path)
    except Exception as exc:  # noqa: BLE001 - a compile failure is a fallback with inductor's reason
        shutil.rmtree(folder, ignore_errors=True)
        if "InvalidCxxCompiler" in f"{type(exc).__name__}: {exc}":
            raise Unavailable(f"AOTInductor needs a C++ compiler here: {reason(exc)}") from None
        raise Fallback(f"aoti_compile_and_package failed: {reason(exc)}", seen) from None
    compile_ms = (time.perf_counter() - start) * 1000
    notes.append(f"aoti: shape contract {aoti_package.describe(contract)}")
    if dtype == "bf16":
        notes.append("aoti: bf16 by CPU autocast written into the program (lowered under autocast)")

    def run(batch: Inputs) -> Any:
        with torch.no_grad():
            return batch.call(package)

    tensor_names = [i["name"] for i in contract["inputs"] if i["kind"] == "tensor"]
    # What the package returns in-process: the child's outputs come back as numpy (no bf16), so they are
    # cast back to these dtypes and put into this structure before the comparison.
    try:
        out_leaves, out_spec = nested.flatten(run(inputs.clone()))
    except Exception as exc:  # noqa: BLE001 - a package that fails on its own example is a fallback
        raise Fallback(f"the loaded aoti package failed on the example inputs: {reason(exc)}", seen) from None
    out_dtypes = [leaf.dtype if isinstance(leaf, torch.Tensor) else None for leaf in out_leaves]

    def feed(batch: Inputs) -> list[tuple[str, Any]]:
        b_args = tuple(batch.args) if batch.args is not None else ()
        b_kwargs = dict(batch.kwargs) if batch.kwargs is not None else {}
        leaves = aoti_package.named_leaves(b_args, b_kwargs, contract["kwargs"])
        tensors = [v for _, v in leaves if isinstance(v, torch.Tensor)]
        return [(name, _numpy(t)) for name, t in zip(tensor_names, tensors, strict=True)]

    def outputs(arrays: list[Any]) -> Any:
        values = [torch.from_numpy(a).to(d) if d is not None else a for a, d in zip(arrays, out_dtypes, strict=True)]
        return nested.unflatten(values, out_spec)

    def save(target: Path) -> Path:
        copied = target / path.name
        shutil.copyfile(path, copied)
        shutil.copyfile(aoti_package.contract_path(path), aoti_package.contract_path(copied))
        return copied

    options = {"threads": torch.get_num_threads(), "blocked": _blocked(model)}
    portable = Portable("aoti", save, feed, outputs, options)
    built = Built("aoti", dtype, run, module=package, warnings=seen, notes=notes, portable=portable)
    built.compile_time_ms = compile_ms
    weakref.finalize(built, shutil.rmtree, folder, True)  # the package lives as long as its Built
    return built
