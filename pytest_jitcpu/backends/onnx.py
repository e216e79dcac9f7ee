"""``onnx``: ``torch.export`` with dynamic batch/sequence dims, converted by ``torch.onnx.export(...,
dynamo=True)`` and run in ONNX Runtime's CPU provider with the check's thread count.

The only module that imports ONNX Runtime and the ONNX exporter's packages (onnx, onnxscript). A model
the exporter cannot capture or convert is a ``fallback`` with the exporter's real reason (the innermost
``__cause__``; the outer errors only say which of the exporter's three steps failed). The runtime gets
numpy arrays named after the exported program's inputs; its outputs are put back into eager's structure
with the exported program's output spec. The saved ``.onnx`` file is what the round trip loads in a
process without torch.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import io
import logging
import os
import re
import sys
import sysconfig
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import torch

from .. import environment, nested
from ..inputs import Inputs
from ..search.domain import Domain
from .base import (
    Built,
    Fallback,
    Portable,
    Unavailable,
    captured_warnings,
    first_line,
    precision,
    quiet_torch_logs,
    reason,
    require,
)
from .dynamic import dynamic_dims, export_program, input_names, shapes_arg
from .table import backend

# What torch.onnx.export(dynamo=True) and the runtime need, by import name.
PACKAGES = ("onnxruntime", "onnx", "onnxscript")


def unavailable_reason() -> str | None:
    """Why the onnx mode cannot run here (a package missing or broken), or None when it can."""
    for name in PACKAGES:
        try:
            with captured_warnings([], keep=lambda w: False):
                importlib.import_module(name)
        except ImportError:
            return f"{name} is not installed ({backend('onnx').install})"
        except Exception as exc:  # noqa: BLE001 - a broken install is a reason, not a crash
            return f"{name} failed to import: {first_line(exc)}"
    return None


def _exporter_dirs() -> tuple[tuple[str, ...], str, tuple[str, ...]]:
    """Where the exporter's own code lives: its packages (torch, onnx, onnxscript, onnx_ir, onnxruntime),
    the standard library, and the site-packages folders (which may sit inside the standard library's)."""
    packages = []
    for name in ("torch", "onnx", "onnxscript", "onnx_ir", "onnxruntime"):
        module = sys.modules.get(name)
        if module is not None and getattr(module, "__file__", None):
            packages.append(os.path.dirname(module.__file__))
    paths = sysconfig.get_paths()
    site = (_folder(paths["purelib"]), _folder(paths["platlib"]))
    return tuple(map(_folder, packages)), _folder(paths["stdlib"]), site


def _folder(path: str) -> str:
    return path.rstrip(os.sep) + os.sep


def _from_model_code(dirs: tuple[tuple[str, ...], str, tuple[str, ...]]) -> Callable[[warnings.WarningMessage], bool]:
    """Keep the warnings raised from the model's code (transformers' too), not the exporter's chatter."""
    packages, stdlib, site = dirs

    def keep(w: warnings.WarningMessage) -> bool:
        name = str(w.filename)
        in_stdlib = name.startswith(stdlib) and not name.startswith(site)
        return not name.startswith(packages) and not in_stdlib

    return keep


def session_options(threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: its warnings are about the graph, the record says enough
    return options


def _session(model: bytes | str, threads: int) -> Any:
    import onnxruntime as ort

    return ort.InferenceSession(model, session_options(threads), providers=["CPUExecutionProvider"])


@functools.lru_cache(maxsize=4)
def _torchlib_registry(**options: Any) -> Any:
    return _ORIGINAL_FROM_TORCHLIB[0](**options)


_ORIGINAL_FROM_TORCHLIB: list[Any] = []


@contextlib.contextmanager
def _shared_registry() -> Iterator[None]:
    """torch.onnx.export rebuilds its table of ONNX translations from onnxscript on every call (inspecting
    ~500 functions' source: 1-6 s, most of a small model's export); the table is the same for every export
    in a process, so it is built once here. Where torch's internals differ, exports just build their own."""
    try:
        from torch.onnx._internal.exporter import _registration

        registry = _registration.ONNXRegistry
        if not _ORIGINAL_FROM_TORCHLIB:
            _ORIGINAL_FROM_TORCHLIB.append(registry.from_torchlib)
    except (ImportError, AttributeError):
        yield
        return
    with mock.patch.object(registry, "from_torchlib", staticmethod(_torchlib_registry)):
        yield


@functools.lru_cache(maxsize=1)
def bf16_unsupported() -> str | None:
    """Why ONNX Runtime's CPU provider cannot run a bf16 model, found by trying one bf16 Linear (ORT 1.32
    has no bf16 Gemm on CPU); None once a release can. Cached: the answer is the installed runtime's."""
    probe = torch.nn.Linear(4, 4).to(torch.bfloat16)
    example = torch.zeros(2, 4, dtype=torch.bfloat16)
    try:
        with captured_warnings([], keep=lambda w: False), quiet_torch_logs(), _quiet_output(), _shared_registry():
            program = torch.onnx.export(probe, (example,), dynamo=True, verbose=False)
        _session(program.model_proto.SerializeToString(), 1)
    except Exception as exc:  # noqa: BLE001 - the runtime's refusal is the reason
        return f"ONNX Runtime's CPU provider cannot run bf16 models: {_runtime_error(exc)}; check onnx in fp32"
    return None


def _runtime_error(exc: BaseException) -> str:
    # "[ONNXRuntimeError] : 9 : NOT_IMPLEMENTED : Could not find ..." -> "NOT_IMPLEMENTED: Could not find ..."
    text = first_line(exc)
    found = re.search(r"\[ONNXRuntimeError\] : \d+ : (\w+) : (.*)", text)
    return f"{found.group(1)}: {found.group(2)}" if found else text


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def exporter_reason(exc: BaseException) -> str:
    """The exporter's real reason: its innermost ``__cause__`` (with the user's source line when the
    message names it), and which step failed, from the outer error's first sentence."""
    root = exc
    while root.__cause__ is not None and root.__cause__ is not root:
        root = root.__cause__
    if root is exc:
        return reason(exc)
    outer = _ANSI.sub("", str(exc)).strip().split(".", 1)[0]
    return f"{reason(root)} (torch.onnx.export: {outer})" if outer else reason(root)


@contextlib.contextmanager
def _quiet_output() -> Any:
    # The exporter prints its progress and, on failure, whole graphs; the record gets the reason instead.
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


def _convert(exported: Any) -> Any:
    with _shared_registry():
        return torch.onnx.export(exported, dynamo=True, verbose=False, optimize=True)


def _array(value: Any) -> Any:
    return value.detach().contiguous().numpy() if isinstance(value, torch.Tensor) else value


def _direct(model: torch.nn.Module, inputs: Inputs, domain: Domain | None, notes: list[str], first: str) -> Any:
    """torch.onnx.export on the model itself: its own capture strategies (non-strict export, then draft
    export) take models torch.export refuses, e.g. a ``float(x.max().item())`` (a data-dependent guard)."""
    args = tuple(inputs.args) if inputs.args is not None else ()
    kwargs = dict(inputs.kwargs) if inputs.kwargs is not None else {}
    dims = dynamic_dims(inputs, domain)
    shapes = shapes_arg(inputs, dims) if dims else None
    with _shared_registry():
        program = torch.onnx.export(
            model, args, kwargs=kwargs, dynamic_shapes=shapes, dynamo=True, verbose=False, optimize=True
        )
    notes.append(
        f"onnx: torch.export refused the model ({first}); torch.onnx.export captured it with its own strategies"
        + (f", {', '.join(dict.fromkeys(n for a in dims.values() for n in a.values()))} dynamic" if dims else "")
    )
    return program


def _export(
    model: torch.nn.Module, inputs: Inputs, dtype: str, domain: Domain | None, seen: list[str], notes: list[str]
) -> tuple[Any, Any]:
    """(exported program, ONNX program): torch.export with the input domain's dims dynamic, then the
    converter; retried through torch.onnx.export's own strategies."""
    import onnxscript  # noqa: F401 - imported first so its folder is known to the warnings filter

    try:
        with (
            torch.no_grad(),
            precision(dtype),
            captured_warnings(seen, _from_model_code(_exporter_dirs())),
            quiet_torch_logs(),
            _quiet_output(),
        ):
            try:
                exported = export_program(model, inputs.clone(), notes, "onnx", domain)
                program = _convert(exported)
            except Exception as exc:  # noqa: BLE001 - retried through torch.onnx.export's own strategies
                first = exporter_reason(exc)
                program = _direct(model, inputs.clone(), domain, notes, first)
                exported = program.exported_program
                if exported is None:
                    raise Fallback(f"{first}; torch.onnx.export kept no exported program", seen) from None
    except Fallback:
        raise
    except Exception as exc:  # noqa: BLE001 - any export failure is a fallback with the exporter's reason
        raise Fallback(exporter_reason(exc), seen) from None
    return exported, program


def _runnable(
    mode: str,
    dtype: str,
    model_bytes: bytes,
    exported: Any,
    inputs: Inputs,
    seen: list[str],
    notes: list[str],
    module: Any = None,
    original: bytes | None = None,
) -> Built:
    """Load ``model_bytes`` in ONNX Runtime's CPU provider: the run, the feed and the portable program
    (``save`` writes those bytes: the file the runtime ran, what an artifact cache keeps)."""
    threads = torch.get_num_threads()
    try:
        session = _session(model_bytes, threads)
    except Exception as exc:  # noqa: BLE001
        raise Fallback(f"ONNX Runtime cannot load the exported model: {_runtime_error(exc)}", seen) from None
    given = [i.name for i in session.get_inputs()]
    out_spec = exported.call_spec.out_spec
    if out_spec.num_leaves != len(session.get_outputs()):
        raise Fallback(
            f"the ONNX model has {len(session.get_outputs())} outputs for the {out_spec.num_leaves} values "
            "forward() returns (non-tensor outputs cannot be exported)",
            seen,
        )
    named = input_names(exported)
    unknown = [name for name in given if name not in named(inputs)]
    if unknown:
        raise Fallback(f"the ONNX model takes input {unknown[0]!r}, which the exported program does not name", seen)

    def feed(batch: Inputs) -> list[tuple[str, Any]]:
        values = named(batch)
        return [(name, _array(values[name])) for name in given]

    def outputs(arrays: list[Any]) -> Any:
        return nested.unflatten([torch.from_numpy(a) for a in arrays], out_spec)

    def run(batch: Inputs) -> Any:
        return outputs(session.run(None, dict(feed(batch))))

    def save(folder: Path, data: bytes = model_bytes) -> Path:
        path = folder / "model.onnx"
        path.write_bytes(data)
        return path

    def reference(folder: Path) -> Path:
        return save(folder, original or b"")

    portable = Portable("onnxruntime", save, feed, outputs, {"threads": threads}, reference if original else None)
    module = model_bytes if module is None else module
    return Built(mode, dtype, run, module=module, warnings=seen, notes=notes, portable=portable)


def build(model: torch.nn.Module, inputs: Inputs, dtype: str, domain: Domain | None = None) -> Built:
    """Export (the input domain's dims dynamic), convert to ONNX, load in ONNX Runtime's CPU provider."""
    require(dtype, unavailable_reason, bf16_unsupported)
    seen: list[str] = []
    notes: list[str] = []
    exported, program = _export(model, inputs, dtype, domain, seen, notes)
    model_bytes = program.model_proto.SerializeToString()
    return _runnable("onnx", dtype, model_bytes, exported, inputs, seen, notes, module=program)


# CPU flags with int8 dot-product instructions (VNNI): without them, ONNX Runtime's int8 kernels can
# saturate on 8-bit weights (vpmaddubsw adds two products into 16 bits), which 7-bit weights avoid.
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
SERIALIZE_LIMIT = 2 << 30  # a protobuf cannot hold more: larger models need external data files


def quantization_settings() -> dict[str, Any]:
    """quantize_dynamic's options for this CPU, read at run time: per-channel int8 weights everywhere;
    ``reduce_range`` (7-bit weights) only where the CPU has no VNNI (ONNX Runtime's advice for such CPUs)."""
    vnni = sorted(set(VNNI_FLAGS) & environment.cpu_flags())
    return {"per_channel": True, "reduce_range": not vnni, "vnni": vnni}


def _int8_unavailable(dtype: str) -> None:
    if dtype != "fp32":
        raise Unavailable(
            "int8 modes quantize the fp32 model (activations stay fp32 between int8 ops); check it in fp32"
        )
    why = unavailable_reason()
    if why is None:
        try:
            with captured_warnings([], keep=lambda w: False):
                importlib.import_module("onnxruntime.quantization")
        except Exception as exc:  # noqa: BLE001 - a broken install is a reason, not a crash
            why = f"onnxruntime.quantization failed to import: {first_line(exc)}"
    if why is not None:
        raise Unavailable(why)


@contextlib.contextmanager
def _root_logger_errors_only() -> Iterator[None]:
    # quantize_dynamic advises pre-processing through the root logger on every call; the note says what ran
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def build_int8(model: torch.nn.Module, inputs: Inputs, dtype: str, domain: Domain | None = None) -> Built:
    """The onnx export, quantized by ``onnxruntime.quantization.quantize_dynamic`` (no calibration: the
    activations' scales are computed per batch at run time), loaded in ONNX Runtime's CPU provider."""
    _int8_unavailable(dtype)
    from onnxruntime.quantization import QuantType, quantize_dynamic

    seen: list[str] = []
    notes: list[str] = []
    exported, program = _export(model, inputs, "fp32", domain, seen, notes)
    if program.model_proto.ByteSize() >= SERIALIZE_LIMIT:
        raise Fallback("the exported model is over 2 GB: quantizing it needs external data files, not done here")
    options = quantization_settings()
    vnni = options.pop("vnni")
    try:
        with tempfile.TemporaryDirectory(prefix="jitcpu-int8-") as tmp, captured_warnings([], keep=lambda w: False):
            source, target = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
            original = program.model_proto.SerializeToString()  # the fp32 model: the int8 one's reference
            source.write_bytes(original)
            with _quiet_output(), _root_logger_errors_only():
                quantize_dynamic(source, target, weight_type=QuantType.QInt8, **options)
            model_bytes = target.read_bytes()
    except Exception as exc:  # noqa: BLE001 - a model the quantizer cannot take is a fallback with the reason
        raise Fallback(f"onnxruntime quantize_dynamic failed: {first_line(exc)}", seen) from None
    cpu = f"VNNI ({', '.join(vnni)})" if vnni else "no VNNI"
    notes.append(
        f"onnx-int8: quantize_dynamic, int8 weights per_channel={options['per_channel']}, "
        f"reduce_range={options['reduce_range']} (this CPU: {cpu})"
    )
    return _runnable("onnx-int8", dtype, model_bytes, exported, inputs, seen, notes, original=original)
