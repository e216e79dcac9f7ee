"""``openvino``: ``openvino.convert_model(model, example_input=...)`` compiled for ``CPU``.

The only module that imports OpenVINO. Its PyTorch frontend traces the model with TorchScript (so, like
``torch.jit.trace``, it can bake a branch or a ``.item()`` in: the divergence search runs on it, and its
TracerWarnings go into the record). Every input dim is left dynamic (convert_model's default with an
example input); the note names the dims the converted model still fixes.

Precision is set explicitly: ``INFERENCE_PRECISION_HINT`` defaults to bf16 on CPUs with BF16 (Zen5,
Sapphire Rapids), which would make "fp32" run in bf16. bf16 runs only where the CPU has native BF16
(OpenVINO reports it and the CPU has avx512_bf16 or AMX); elsewhere OpenVINO emulates it (measured about
35x slower than f32 on an Intel Xeon without BF16), so it is ``unavailable`` there. The saved IR (without
fp16 weight compression) is what the round trip loads in a process without torch.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from .. import environment, nested
from ..inputs import Inputs, forward_parameters
from ..search.domain import Domain
from .base import (
    Built,
    Fallback,
    Portable,
    Unavailable,
    captured_warnings,
    first_line,
    quiet_torch_logs,
    reason,
    require,
)
from .table import backend

HINTS = {"fp32": "f32", "bf16": "bf16"}  # INFERENCE_PRECISION_HINT per dtype
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def unavailable_reason() -> str | None:
    """Why the openvino mode cannot run here (not installed or broken), or None when it can."""
    try:
        with captured_warnings([], keep=lambda w: False):
            import openvino  # noqa: F401
    except ImportError:
        return f"openvino is not installed ({backend('openvino').install})"
    except Exception as exc:  # noqa: BLE001 - a broken install is a reason, not a crash
        return f"openvino failed to import: {first_line(exc)}"
    return None


def capabilities() -> list[str]:
    import openvino as ov

    return [str(c) for c in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")]


def bf16_unsupported() -> str | None:
    """Why OpenVINO would not run bf16 natively on this CPU, or None when it would."""
    flags = sorted(set(NATIVE_BF16_FLAGS) & environment.cpu_flags())
    if "BF16" in capabilities() and flags:
        return None
    return (
        f"this CPU ({environment.cpu_name()}) has no native BF16 (avx512_bf16 or AMX): OpenVINO would emulate "
        "bf16, far slower than f32; check openvino in fp32"
    )


@contextlib.contextmanager
def _quiet_libraries() -> Iterator[None]:
    # transformers logs notes when OpenVINO's frontend inspects the model; the record holds what matters.
    logger = logging.getLogger("transformers")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


_BOILERPLATE = re.compile(r"^(Check '.*' failed at \S+|FrontEnd API failed with \w+:?)$")


def conversion_reason(exc: BaseException) -> str:
    """OpenVINO's frontend error without its C++ source location: the headline and its summary, e.g.
    ``OpConversionFailure: Model wasn't fully converted: No conversion rule found for operations: aten::diff``."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    lines = [line for line in lines if not _BOILERPLATE.match(line)]
    if not lines:
        return reason(exc)
    kind = re.search(r"FrontEnd API failed with (\w+)", str(exc))
    if "Summary:" in lines:  # an op without a conversion rule: the summary names it
        head = lines[0].split(". ")[0].rstrip(".:")
        text = head + ": " + "; ".join(line.lstrip("- ").strip() for line in lines[lines.index("Summary:") + 1 :])
    else:  # "Couldn't get TorchScript module by tracing: Exception:" and TorchScript's reason below it
        text = " ".join(line for line in lines if not line.startswith(_ADVICE))
    return first_line(_Failure(text)).replace("_Failure", kind.group(1) if kind else type(exc).__name__, 1)


_ADVICE = ("Please check correctness", "You can also provide", "Sometimes models can be converted")


class _Failure(Exception):
    """Carries a cleaned-up message through ``first_line``."""


def _example(inputs: Inputs) -> Any:
    return dict(inputs.kwargs) if inputs.kwargs is not None else tuple(inputs.args)


def _array(value: Any) -> Any:
    return value.detach().contiguous().numpy() if isinstance(value, torch.Tensor) else value


def _static_dims(converted: Any, domain: Domain | None) -> str:
    fixed = []
    for port in converted.inputs:
        shape = port.get_partial_shape()
        dims = [f"{i}={d.get_length()}" for i, d in enumerate(shape) if d.is_static] if shape.rank.is_static else []
        if dims:
            fixed.append(f"{port.get_any_name()}[{', '.join(dims)}]")
    if not fixed:
        return "openvino: every input dim dynamic (covers the input domain)"
    # Ports are named by graph id, not by input: which domain dim a static one is cannot be told reliably.
    varying = f"; the input domain varies {', '.join(domain.varying)}" if domain is not None and domain.varying else ""
    return "openvino: static input dims " + "; ".join(fixed) + varying


def _feeder(model: torch.nn.Module, compiled: Any, inputs: Inputs) -> Any:
    """(name, array) in the compiled model's input order. OpenVINO flattens nested inputs and orders them
    as forward() declares them (a dict's own order does not count): the batch's tensors, flattened in
    forward()'s parameter order, one per input of the compiled model."""
    names = [port.get_any_name() for port in compiled.inputs]
    order: list[str] = []
    if inputs.kwargs is not None:
        declared = [p.name for p in forward_parameters(model)]
        order = [n for n in declared if n in inputs.kwargs] + [n for n in inputs.kwargs if n not in declared]

    def tensors(batch: Inputs) -> list[torch.Tensor]:
        values = [batch.kwargs[n] for n in order] if batch.kwargs is not None else list(batch.args)
        return nested.tensors(values)

    count = len(tensors(inputs))
    if count != len(names):
        raise Fallback(f"the converted model takes {len(names)} inputs ({', '.join(names)}) for {count} input tensors")

    def feed(batch: Inputs) -> list[tuple[str, Any]]:
        return [(n, _array(t)) for n, t in zip(names, tensors(batch), strict=True)]

    return feed


def _convert(
    model: torch.nn.Module, inputs: Inputs, domain: Domain | None, seen: list[str], notes: list[str]
) -> tuple[Any, Any, int]:
    """(converted ov.Model, eager's output structure, its tensor count): convert_model with the example."""

    with torch.no_grad(), captured_warnings([], keep=lambda w: False):
        reference = inputs.clone().call(model)  # the structure the outputs are put back into
    leaves, spec = nested.flatten(reference)
    if not all(isinstance(x, torch.Tensor) for x in leaves):
        kinds = sorted({type(x).__name__ for x in leaves if not isinstance(x, torch.Tensor)})
        raise Fallback(f"forward() returns values that are not tensors ({', '.join(kinds)}); OpenVINO returns tensors")
    try:
        with torch.no_grad(), captured_warnings(seen), quiet_torch_logs(), _quiet_libraries():
            converted = _convert_model(model, _example(inputs.clone()))
    except Exception as exc:  # noqa: BLE001 - any conversion failure is a fallback with its reason
        raise Fallback(conversion_reason(exc), seen) from None
    notes.append(_static_dims(converted, domain))
    return converted, spec, len(leaves)


def _convert_model(model: torch.nn.Module, example: Any) -> Any:
    """convert_model of OpenVINO's TorchScript decoder of ``model`` traced on ``example`` without
    torch.jit.trace's check_trace, which re-runs and re-traces the model to compare the traces (half of a
    conversion's time on MiniLM; this project verifies the converted program against eager on real
    inputs instead). Plain ``convert_model`` on an OpenVINO without that decoder."""
    import openvino as ov

    try:
        from openvino.frontend.pytorch.ts_decoder import TorchScriptPythonDecoder
        from openvino.tools.ovc.moc_frontend.pytorch_frontend_utils import prepare_torch_inputs
    except ImportError:
        return ov.convert_model(model, example_input=example)
    decoder = TorchScriptPythonDecoder(
        model, example_input=prepare_torch_inputs(example), trace_kwargs={"check_trace": False}
    )
    return ov.convert_model(decoder)


def _compiled(
    mode: str,
    dtype: str,
    model: torch.nn.Module,
    inputs: Inputs,
    converted: Any,
    spec: Any,
    count: int,
    seen: list[str],
    notes: list[str],
    extra: dict[str, str] | None = None,
    original: Any = None,
) -> Built:
    """Compile ``converted`` for CPU in the dtype's precision: the run, the feed and the portable IR.
    ``extra``: more CPU plugin properties (kept with the IR: a cached artifact compiles with them too).
    ``original``: the fp32 model ``converted`` was quantized from (saved beside it as its reference)."""
    import openvino as ov

    threads = torch.get_num_threads()
    config = {"INFERENCE_PRECISION_HINT": HINTS[dtype], "INFERENCE_NUM_THREADS": threads, **(extra or {})}
    try:
        compiled = ov.Core().compile_model(converted, "CPU", config)
    except Exception as exc:  # noqa: BLE001
        raise Fallback(f"OpenVINO cannot compile the converted model for CPU: {first_line(exc)}", seen) from None
    if len(compiled.outputs) != count:
        raise Fallback(
            f"the converted model has {len(compiled.outputs)} outputs for the {count} tensors forward() returns",
            seen,
        )
    feed = _feeder(model, compiled, inputs)
    request = compiled.create_infer_request()

    def outputs(arrays: list[Any]) -> Any:
        return nested.unflatten([torch.from_numpy(a) for a in arrays], spec)

    def run(batch: Inputs) -> Any:
        result = request.infer([array for _, array in feed(batch)])
        return outputs([result[port] for port in compiled.outputs])

    def save(folder: Path, model: Any = converted) -> Path:
        path = folder / "model.xml"
        ov.save_model(model, str(path), compress_to_fp16=False)  # fp16 weights would not be what ran
        return path

    def reference(folder: Path) -> Path:
        return save(folder, original)

    options: dict[str, Any] = {"threads": threads, "precision": HINTS[dtype]}
    if extra:
        options["config"] = dict(extra)
    portable = Portable("openvino", save, feed, outputs, options, reference if original is not None else None)
    return Built(mode, dtype, run, module=converted, warnings=seen, notes=notes, portable=portable)


def build(model: torch.nn.Module, inputs: Inputs, dtype: str, domain: Domain | None = None) -> Built:
    """convert_model with the example inputs, compiled for CPU in the dtype's precision. Every input dim
    is left dynamic, which covers any input domain; the note names the dims the converted model fixes
    anyway and, when they belong to the ``domain``, that its shape contract is narrower than the domain."""
    require(dtype, unavailable_reason, bf16_unsupported)
    seen: list[str] = []
    notes: list[str] = []
    converted, spec, count = _convert(model, inputs, domain, seen, notes)
    return _compiled("openvino", dtype, model, inputs, converted, spec, count, seen, notes)


def nncf_unavailable() -> str | None:
    """Why openvino-int8 cannot run here (openvino or nncf missing or broken), or None when it can."""
    why = unavailable_reason()
    if why is not None:
        return why
    try:
        with captured_warnings([], keep=lambda w: False), _quiet_nncf():
            import nncf  # noqa: F401
    except ImportError:
        return f"nncf is not installed ({backend('openvino-int8').install})"
    except Exception as exc:  # noqa: BLE001 - a broken install is a reason, not a crash
        return f"nncf failed to import: {first_line(exc)}"
    return None


@contextlib.contextmanager
def _quiet_nncf() -> Iterator[None]:
    # NNCF logs its progress and draws progress bars while it calibrates; the record notes what it did.
    logger = logging.getLogger("nncf")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)


def _rows(batch: Inputs) -> int:
    values = list(batch.kwargs.values()) if batch.kwargs is not None else list(batch.args)
    tensors = nested.tensors(values)
    return int(tensors[0].shape[0]) if tensors and tensors[0].dim() else 1


def build_int8(
    model: torch.nn.Module,
    inputs: Inputs,
    dtype: str,
    domain: Domain | None = None,
    calibration: Sequence[Inputs] | None = None,
) -> Built:
    """convert_model, then ``nncf.quantize`` (int8 weights and activations; activation ranges from the
    ``calibration`` batches, else from the example inputs themselves), compiled for CPU with f32 precision
    for what stays in floating point."""
    if dtype != "fp32":
        raise Unavailable("int8 modes quantize the fp32 model (what is not int8 stays fp32); check it in fp32")
    why = nncf_unavailable()
    if why is not None:
        raise Unavailable(why)
    import nncf

    seen: list[str] = []
    notes: list[str] = []
    converted, spec, count = _convert(model, inputs, domain, seen, notes)
    original = converted.clone()  # nncf may rewrite the model in place; the fp32 one is the reference
    batches = list(calibration) if calibration else [inputs]
    feed = _feeder(model, converted, inputs)
    items = [{name: array for name, array in feed(batch.clone())} for batch in batches]
    try:
        with captured_warnings([], keep=lambda w: False), _quiet_nncf():
            quantized = nncf.quantize(
                converted, nncf.Dataset(items), model_type=nncf.ModelType.TRANSFORMER, subset_size=len(items)
            )
    except Exception as exc:  # noqa: BLE001 - a model NNCF cannot quantize is a fallback with the reason
        raise Fallback(f"nncf.quantize failed: {first_line(exc)}", seen) from None
    rows = sum(_rows(b) for b in batches)
    source = "rows set aside from the input" if calibration else "the example inputs themselves"
    notes.append(f"openvino-int8: nncf.quantize (transformer preset), calibrated on {rows} rows ({source})")
    return _compiled("openvino-int8", dtype, model, inputs, quantized, spec, count, seen, notes, original=original)


# Activations quantized at run time per token, in groups of this many channels (OpenVINO's CPU plugin,
# for matmuls whose weights are int8). Measured on all-MiniLM-L6-v2, 3143 real sentences, AMD Zen 5, 2
# threads: group 32 (OpenVINO's default) 3.6 s, 64 3.2 s, 128 3.0 s, 384 3.1 s; worst row cosine to fp32
# 0.9983, 0.9980, 0.9964, 0.9914 (fp32 7.2 s; nncf.quantize's static int8 2.8 s at 0.985). 64 keeps a margin.
DYNAMIC_GROUP = 64


def _int8_weights(model: Any) -> int:
    """Give every matmul with a 2-D fp32 constant weight int8 weights, in place: asymmetric, per output
    channel (scale and zero point from the channel's range, 0 included), stored as uint8 and
    decompressed in the graph (Convert, Subtract the zero point, Multiply by the scale, in f16: the
    pattern OpenVINO's CPU plugin runs as an int8-weight matmul, and NNCF's compress_weights writes).
    Returns how many matmuls it changed. Milliseconds where compress_weights took 1.5-2.5 s (MiniLM)."""
    import numpy as np
    import openvino as ov
    import openvino.opset13 as ops

    changed = 0
    for op in model.get_ordered_ops():
        if op.get_type_name() != "MatMul":
            continue
        weight = op.input_value(1).get_node()
        if weight.get_type_name() != "Constant" or weight.get_output_element_type(0) != ov.Type.f32:
            continue
        data = weight.get_data()
        if data.ndim != 2:
            continue
        by_row = bool(op.get_attributes().get("transpose_b"))  # [out, in]; else [in, out]
        w = data if by_row else data.T
        low = np.minimum(w.min(axis=1, keepdims=True), 0.0)
        high = np.maximum(w.max(axis=1, keepdims=True), 0.0)
        scale = (high - low) / 255.0
        scale[scale == 0] = 1.0  # an all-zero channel: any scale gives zeros back
        zero = np.clip(np.round(-low / scale), 0, 255)
        q = np.clip(np.round(w / scale) + zero, 0, 255).astype(np.uint8)
        if not by_row:
            q, zero, scale = q.T, zero.T, scale.T
        values = ops.subtract(
            ops.convert(ops.constant(np.ascontiguousarray(q)), ov.Type.f16),
            ops.convert(ops.constant(zero.astype(np.uint8)), ov.Type.f16),
        )
        weights = ops.convert(ops.multiply(values, ops.constant(scale.astype(np.float16))), ov.Type.f32)
        op.input(1).replace_source_output(weights.output(0))
        changed += 1
    model.validate_nodes_and_infer_types()
    return changed


def build_int8_dynamic(model: torch.nn.Module, inputs: Inputs, dtype: str, domain: Domain | None = None) -> Built:
    """convert_model, then int8 weights (:func:`_int8_weights`; no calibration), compiled for CPU with
    OpenVINO's dynamic quantization: each such matmul's activations are quantized to int8 at run time,
    per token in groups of DYNAMIC_GROUP channels, so no range is fixed in advance from other rows. What
    is not a weight matmul stays fp32."""
    if dtype != "fp32":
        raise Unavailable("int8 modes quantize the fp32 model (what is not int8 stays fp32); check it in fp32")
    require(dtype, unavailable_reason, bf16_unsupported)
    seen: list[str] = []
    notes: list[str] = []
    converted, spec, count = _convert(model, inputs, domain, seen, notes)
    original = converted.clone()  # the weights are rewritten in place; the fp32 model is the reference
    try:
        changed = _int8_weights(converted)
    except Exception as exc:  # noqa: BLE001 - a graph the rewrite cannot take is a fallback with the reason
        raise Fallback(f"int8 weights: {first_line(exc)}", seen) from None
    if not changed:
        raise Fallback("no matmul with a constant fp32 weight to quantize: int8 would run the fp32 model", seen)
    notes.append(
        f"openvino-int8-dynamic: int8 weights (asymmetric, per output channel) in {changed} matmuls, "
        f"activations quantized at run time per token in groups of {DYNAMIC_GROUP}"
    )
    extra = {"DYNAMIC_QUANTIZATION_GROUP_SIZE": str(DYNAMIC_GROUP)}
    return _compiled(
        "openvino-int8-dynamic", dtype, model, inputs, converted, spec, count, seen, notes, extra, original
    )
