"""Compare nested model outputs (ModelOutput, dicts, tuples, tensors, scalars) within a tolerance.

Default tolerances per dtype (how they were chosen: README "Tolerances", numbers from
``benchmarks/tolerances.py``):

* fp32: ``atol = 1e-5 x max(1, max|ref|)``, ``rtol = 1.3e-6`` (torch.testing's float32 defaults, with
  atol scaled to outputs larger than 1). Traced and eager fp32 agree to 0 or ~1e-7 on the
  architectures measured; a real trace bug differs by 1e-1 or more.
* bf16: ``atol = 5e-2 x max|ref|`` per output tensor, ``rtol = 1.6e-2`` (two bf16 epsilons).
  Autocast bf16 against the fp32 reference differs by up to ~1e-2 x max|ref| on the architectures
  measured (BERT up to 12 layers, RoBERTa, DistilBERT, GPT-2, T5, ViT, ConvNeXt, ResNet, the trained
  MiniLM) and ~2e-2 on a ConvNeXt with 16 channels, with relative error unbounded near zero (up to
  4e4), so assert_close's bf16 default (atol 1e-5) fails sound models. 5e-2 leaves >= 2.5x headroom
  while a trace bug (wrong mask, baked shape, swapped inputs) differs by 1e-1 x max|ref| or more.
  A user-given ``atol`` is absolute (not scaled).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from . import nested

FP32_ATOL = 1e-5
FP32_RTOL = 1.3e-6
BF16_ATOL_SCALE = 5e-2
BF16_RTOL = 1.6e-2
_FLOOR = 1e-6  # smallest scaled atol, so an all-zero output still gets a positive tolerance


@dataclass(frozen=True)
class Tolerance:
    """atol/rtol for a dtype; ``atol=None`` means the scaled default."""

    dtype: str
    atol: float | None = None
    rtol: float | None = None

    def for_reference(self, ref: torch.Tensor) -> tuple[float, float]:
        """The (atol, rtol) actually used for one reference tensor."""
        scale = float(ref.detach().abs().max()) if ref.numel() and ref.is_floating_point() else 0.0
        if not math.isfinite(scale):
            finite = ref[torch.isfinite(ref)]
            scale = float(finite.abs().max()) if finite.numel() else 0.0
        if self.dtype == "bf16":
            atol = self.atol if self.atol is not None else max(BF16_ATOL_SCALE * scale, _FLOOR)
            rtol = self.rtol if self.rtol is not None else BF16_RTOL
        else:
            atol = self.atol if self.atol is not None else FP32_ATOL * max(1.0, scale)
            rtol = self.rtol if self.rtol is not None else FP32_RTOL
        return atol, rtol


@dataclass
class Comparison:
    """The outcome of comparing an output with the reference."""

    ok: bool
    max_abs_diff: float | None = None
    max_rel_diff: float | None = None
    worst: str | None = None
    atol: float | None = None
    rtol: float | None = None
    reason: str | None = None  # set for a structural difference or a tolerance violation


class _Walker:
    def __init__(self, tolerance: Tolerance, allow_float_dtype_change: bool) -> None:
        self.tol = tolerance
        self.allow_float_dtype_change = allow_float_dtype_change
        self.max_abs = 0.0
        self.max_rel = 0.0
        self.worst: str | None = None
        self.worst_ratio = -1.0
        self.atol: float | None = None
        self.rtol: float | None = None
        self.violation: str | None = None
        self.structural: str | None = None
        self.compared = 0

    def walk(self, ref: Any, out: Any, path: str) -> None:
        if self.structural:
            return
        if isinstance(ref, torch.Tensor):
            if not isinstance(out, torch.Tensor):
                self._struct(path, f"expected a tensor, got {type(out).__name__}")
            else:
                self._tensor(ref, out, path)
        elif isinstance(ref, Mapping):
            self._mapping(ref, out, path)
        elif isinstance(ref, (list, tuple)):
            if not isinstance(out, (list, tuple)):
                self._struct(path, f"expected a {type(ref).__name__} of {len(ref)}, got {type(out).__name__}")
                return
            if len(ref) != len(out):
                self._struct(path, f"expected {len(ref)} items, got {len(out)}")
                return
            for i, (r, o) in enumerate(zip(ref, out, strict=True)):
                self.walk(r, o, f"{path or 'output'}[{i}]")  # "output[0]", not "[0]", at the top
        elif ref is None:
            if out is not None:
                self._struct(path, f"expected None, got {type(out).__name__}")
        elif isinstance(ref, bool) or isinstance(ref, (str, bytes)):
            if ref != out:
                self._struct(path, f"expected {ref!r}, got {out!r}")
        elif isinstance(ref, (int, float)):
            if isinstance(out, torch.Tensor) and out.numel() == 1:
                out = out.item()
            if not isinstance(out, (int, float)):
                self._struct(path, f"expected a number, got {type(out).__name__}")
                return
            self._tensor(torch.tensor(float(ref)), torch.tensor(float(out)), path)
        elif type(ref) is not type(out):
            # An object this walker cannot look into (a cache, a custom class): the type must match;
            # its contents are not compared (a traced module cannot return such objects anyway).
            self._struct(path, f"expected {type(ref).__name__}, got {type(out).__name__}")

    def _mapping(self, ref: Mapping, out: Any, path: str) -> None:
        ref_items = [(k, v) for k, v in ref.items() if v is not None]
        if isinstance(out, Mapping):
            out_keys = [k for k, v in out.items() if v is not None]
            missing = [k for k, _ in ref_items if k not in out_keys]
            extra = [k for k in out_keys if k not in ref]
            if missing:
                self._struct(path, f"missing key {missing[0]!r} (output has {', '.join(map(str, out_keys)) or 'none'})")
                return
            if extra:
                self._struct(path, f"unexpected key {extra[0]!r}")
                return
            for k, v in ref_items:
                self.walk(v, out[k], _join(path, k))
        elif isinstance(out, (list, tuple)):
            # A traced HF model may return the ModelOutput as a tuple (its to_tuple() order).
            if len(out) != len(ref_items):
                self._struct(
                    path, f"expected {len(ref_items)} outputs ({', '.join(k for k, _ in ref_items)}), got {len(out)}"
                )
                return
            for (k, v), o in zip(ref_items, out, strict=True):
                self.walk(v, o, _join(path, k))
        else:
            self._struct(path, f"expected a mapping, got {type(out).__name__}")

    def _struct(self, path: str, why: str) -> None:
        self.structural = f"{path or 'output'}: {why}"

    def _tensor(self, ref: torch.Tensor, out: torch.Tensor, path: str) -> None:
        if ref.shape != out.shape:
            self._struct(path, f"shape {tuple(out.shape)} differs from reference {tuple(ref.shape)}")
            return
        if ref.dtype != out.dtype:
            both_float = ref.is_floating_point() and out.is_floating_point()
            if not (both_float and self.allow_float_dtype_change):
                self._struct(path, f"dtype {out.dtype} differs from reference {ref.dtype}")
                return
        if ref.is_complex() or out.is_complex():
            ref, out = torch.view_as_real(ref), torch.view_as_real(out)
        self.compared += 1
        if ref.numel() == 0:
            return
        r = ref.detach().to("cpu", torch.float64)
        o = out.detach().to("cpu", torch.float64)
        atol, rtol = self.tol.for_reference(ref) if ref.is_floating_point() else (0.0, 0.0)
        diff = (r - o).abs()
        same_nonfinite = (r == o) | (torch.isnan(r) & torch.isnan(o))
        diff = torch.where(same_nonfinite, torch.zeros_like(diff), diff)
        # posinf too: nan_to_num's default turns an infinite diff into float64's max (1.8e308).
        diff = torch.nan_to_num(diff, nan=math.inf, posinf=math.inf)
        allowed = atol + rtol * r.abs().nan_to_num(nan=0.0, posinf=0.0, neginf=0.0)
        ratio = diff / allowed.clamp_min(1e-300)
        flat_index = int(torch.argmax(ratio).item()) if ratio.numel() else 0
        worst_ratio = float(ratio.reshape(-1)[flat_index])
        max_abs = float(diff.max())
        nonzero = r.abs() > 0
        max_rel = float((diff[nonzero] / r.abs()[nonzero]).max()) if bool(nonzero.any()) else 0.0
        self.max_abs = max(self.max_abs, max_abs)
        self.max_rel = max(self.max_rel, max_rel)
        if worst_ratio > self.worst_ratio:
            self.worst_ratio = worst_ratio
            index = _unravel(flat_index, tuple(ref.shape))
            self.worst = f"{path or 'output'}[{', '.join(map(str, index))}]" if index else (path or "output")
            self.atol, self.rtol = atol, rtol
        if worst_ratio > 1.0 and self.violation is None:
            self.violation = (
                f"{path or 'output'}: max abs diff {max_abs:.3g} exceeds atol {atol:.3g} + rtol {rtol:.3g} x |ref|"
            )


def _join(path: str, key: Any) -> str:
    key = str(key)
    return f"{path}.{key}" if path else key


def _unravel(flat: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    index = []
    for size in reversed(shape):
        index.append(flat % size if size else 0)
        flat //= size if size else 1
    return tuple(reversed(index))


def compare(ref: Any, out: Any, tolerance: Tolerance, allow_float_dtype_change: bool = False) -> Comparison:
    """Compare ``out`` with ``ref`` leaf by leaf; the first structural difference stops the walk."""
    walker = _Walker(tolerance, allow_float_dtype_change)
    walker.walk(ref, out, "")
    if walker.structural:
        return Comparison(ok=False, reason=f"structure differs: {walker.structural}")
    return Comparison(
        ok=walker.violation is None,
        max_abs_diff=walker.max_abs,
        max_rel_diff=walker.max_rel,
        worst=walker.worst,
        atol=walker.atol,
        rtol=walker.rtol,
        reason=walker.violation,
    )


def leaves(value: Any) -> list[torch.Tensor]:
    """Every tensor in a nested output, in walk order."""
    return nested.tensors(value)
