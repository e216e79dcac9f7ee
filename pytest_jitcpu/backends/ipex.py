"""The only module that imports Intel Extension for PyTorch (IPEX).

IPEX installed against another torch does not raise ImportError: it prints an error and raises
AttributeError (or worse), so the import is guarded with ``except Exception`` and turned into a reason.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import warnings
from collections.abc import Iterator
from typing import Any

import torch

from .. import environment
from ..inputs import Inputs, as_keywords
from .base import Built, Fallback, Unavailable, build_traced, captured_warnings, first_line
from .table import backend


@functools.lru_cache(maxsize=1)
def load() -> tuple[Any, str | None]:
    """(the ipex module or None, the reason it is not usable)."""
    try:
        # IPEX's import warns (kernel overrides, no CUDA); a user's ``filterwarnings = error`` must not
        # turn that into "IPEX unusable".
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import intel_extension_for_pytorch as ipex
    except ModuleNotFoundError as exc:
        if exc.name == "intel_extension_for_pytorch":
            return None, f"intel-extension-for-pytorch is not installed ({backend('ipex').install})"
        return None, f"intel-extension-for-pytorch failed to import: {first_line(exc)}"
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - a mismatched IPEX raises AttributeError or calls exit()
        return None, f"intel-extension-for-pytorch failed to import with torch {torch.__version__}: {first_line(exc)}"
    # Importing IPEX turns on its TorchScript graph rewrites for every frozen graph in the process, so
    # the plain trace modes would run IPEX kernels too (and fail in bf16 where IPEX cannot run bf16).
    # Off by default here; the ipex mode turns them on around its own trace, freeze and runs.
    _set_jit_opt(ipex, False)
    return ipex, None


def _set_jit_opt(ipex: Any, enabled: bool) -> bool | None:
    """Turn IPEX's TorchScript rewrites on or off; returns the previous state (None: no such switch)."""
    core = getattr(ipex, "_C", None)
    if core is None or not hasattr(core, "get_jit_opt"):
        return None
    before = bool(core.get_jit_opt())
    (core.enable_jit_opt if enabled else core.disable_jit_opt)()
    return before


@contextlib.contextmanager
def jit_opt(ipex: Any) -> Iterator[None]:
    """IPEX's TorchScript rewrites on, for the ipex mode's own trace, freeze and runs only."""
    before = _set_jit_opt(ipex, True)
    try:
        yield
    finally:
        if before is not None:
            _set_jit_opt(ipex, before)


def version() -> str | None:
    module, _ = load()
    return getattr(module, "__version__", None) if module is not None else None


def unavailable_reason() -> str | None:
    """Why the ipex mode cannot run here, or None when it can."""
    return load()[1]


# What IPEX's BF16 weight prepack asks of the CPU (it raises an AssertionError naming it otherwise).
BF16_PREPACK_NEEDS = "avx_ne_convert, or avx512bw + avx512vl + avx512dq"
_BF16_ERROR = "BF16 weight prepack needs"


def bf16_unavailable_reason() -> str | None:
    """Why IPEX cannot run bf16 on this CPU, or None when it can (decided from /proc/cpuinfo flags)."""
    if environment.bf16_weight_prepack():
        return None
    return (
        f"IPEX bf16 unavailable on this CPU ({environment.cpu_name()}, isa {environment.isa()}): "
        f"BF16 weight prepack needs {BF16_PREPACK_NEEDS}"
    )


def build(model: torch.nn.Module, inputs: Inputs, dtype: str) -> Built:
    """ipex.optimize (O1, no conv+bn folding) on a copy of the model, trace with dict inputs, freeze.

    The fused ops are read from the last executed optimized graph after the engine's warm-up runs
    (``Built.probe_fused_ops``): IPEX's fusion passes run in the profiling executor, not at trace time.
    """
    ipex, reason = load()
    if ipex is None:
        raise Unavailable(reason)
    notes: list[str] = []
    if dtype == "bf16":
        reason = bf16_unavailable_reason()
        if reason:
            raise Unavailable(reason)
        if not environment.native_bf16():
            notes.append("ipex bf16: no native BF16 instructions (avx512_bf16/amx/avx_ne_convert); IPEX emulates them")
    seen: list[str] = []

    def optimized() -> torch.nn.Module:
        try:
            with captured_warnings(seen, _tracer_or_ipex):
                # ipex.optimize replaces modules and repacks weights: work on a copy, never the user's model.
                return ipex.optimize(
                    copy.deepcopy(model).eval(),
                    dtype=torch.bfloat16 if dtype == "bf16" else torch.float32,
                    level="O1",
                    conv_bn_folding=False,
                    inplace=True,
                )
        except Exception as exc:  # noqa: BLE001 - IPEX raises AssertionError/RuntimeError for unsupported CPUs
            _bf16_unsupported(exc)
            raise Fallback(f"ipex.optimize failed: {first_line(exc)}", seen) from None

    def call(module: Any, example: dict[str, Any], batch: Inputs) -> Any:
        kw = as_keywords(model, batch)
        return module(**{k: kw[k] for k in example if k in kw})

    # The rewrites happen when the profiling executor optimizes the graph, on the 2nd-3rd run: IPEX's
    # switch is on around the trace, the freeze and every run.
    return build_traced(
        "ipex",
        model,
        inputs,
        dtype,
        example=lambda x: as_keywords(model, x),
        call=call,
        target=optimized,
        scope=lambda: jit_opt(ipex),
        keep=_tracer_or_ipex,
        failed=_bf16_unsupported,
        notes=notes,
        seen=seen,
        probe_fused_ops=_probe,
    )


def _bf16_unsupported(exc: Exception) -> None:
    if _BF16_ERROR in str(exc):
        raise Unavailable(f"IPEX bf16 is not supported on this CPU: {first_line(exc)}") from None


def _probe() -> list[str]:
    try:
        return fused_ops()
    except Exception:  # noqa: BLE001 - fusion evidence is a report detail; never fail a check over it
        return []


def _tracer_or_ipex(w: warnings.WarningMessage) -> bool:
    return w.category.__name__ == "TracerWarning" or "intel_extension_for_pytorch" in (w.filename or "")


# Kinds of nodes that are fusions or IPEX/oneDNN kernels rather than plain aten ops.
_FUSED_PREFIXES = ("ipex::", "ipex_prepack::", "mkldnn::", "prim::mkldnn", "prim::MKLDNN")
_FUSED_KINDS = ("prim::TensorExprGroup", "prim::TensorExprDynamicGroup", "prim::StaticSubgraph")
_SPLITS = ("aten::split_with_sizes", "aten::split", "aten::chunk", "aten::tensor_split", "ipex::split_tensor")
# IPEX kernels that are linear layers (prepacked); one feeding a split is the guide's "concat linear".
_LINEAR_WORDS = ("linear", "sgemm", "matmul_bias")


def is_fused(kind: str) -> bool:
    return kind.startswith(_FUSED_PREFIXES) or kind in _FUSED_KINDS or kind.endswith("FusionGroup")


def guide_fusion(kind: str) -> str | None:
    """The guide's name for what an IPEX kernel fuses: MHA, linear+add, linear+gelu, add+layernorm, ..."""
    name = kind.split("::", 1)[-1]
    if "mha" in name:
        return "MHA"
    if name == "add_layernorm":
        return "add+layernorm"
    for op, label in (("linear", "linear"), ("convolution", "conv"), ("conv_transpose", "conv_transpose")):
        if name.startswith(f"{op}_") and name.endswith("_run") and name != f"{op}_run":
            return label + "+" + name[len(op) + 1 : -len("_run")].replace("_", "+")
    if name in ("matmul_div", "matmul_mul", "matmul_outtrans", "bmm_add"):
        return {"matmul_div": "matmul+div", "matmul_mul": "matmul+mul", "matmul_outtrans": "matmul+transpose"}.get(
            name, "bmm+add"
        )
    return None


def _nodes(block: Any) -> Iterator[Any]:
    """Every node, including those in blocks (if/loop) and in non-fused subgraphs (DifferentiableGraph)."""
    for node in block.nodes():
        yield node
        for inner in node.blocks():
            yield from _nodes(inner)
        if not is_fused(node.kind()) and "Subgraph" in node.attributeNames():
            yield from _nodes(node.g("Subgraph"))


def fused_ops(graph: Any = None) -> list[str]:
    """Sorted, deduplicated fused node kinds of ``graph`` (default: the last executed optimized graph of
    this thread), each followed by the guide's fusion name when it has one, e.g.
    ``ipex::add_layernorm (add+layernorm)``; a prepacked linear feeding a split is ``concat linear``."""
    if graph is None:
        try:
            graph = torch.jit.last_executed_optimized_graph()
        except RuntimeError:
            return []
    if graph is None:  # no TorchScript graph has run in this thread
        return []
    found: set[str] = set()
    for node in _nodes(graph):
        kind = node.kind()
        if not is_fused(kind):
            continue
        label = guide_fusion(kind)
        found.add(f"{kind} ({label})" if label else kind)
        if any(w in kind for w in _LINEAR_WORDS):
            splits = {u.user.kind() for out in node.outputs() for u in out.uses() if u.user.kind() in _SPLITS}
            found.update(f"{kind}+{split} (concat linear)" for split in splits)
    return sorted(found)


GUIDE_FUSIONS = ("MHA", "concat linear", "linear+add", "linear+gelu", "add+layernorm")


def guide_fusions(ops: list[str] | None) -> list[str]:
    """The guide's fusions present in a record's ``fused_ops`` (in the guide's order, then others)."""
    labels = {op.rsplit(" (", 1)[1].rstrip(")") for op in ops or [] if op.endswith(")") and " (" in op}
    return [f for f in GUIDE_FUSIONS if f in labels] + sorted(labels - set(GUIDE_FUSIONS))
