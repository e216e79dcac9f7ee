"""Known causes of fallbacks and divergences, and the fix for each: one table, one row per cause.

A record's reason says what went wrong in torch's words; where the cause is known, the reason then ends
with ``; fix: ...``. Rows are tried in order and the first that matches gives the fix (a DynamicCache
output is also "not a tensor", but its fix is more specific). The TorchScript-only row looks across the
records of one check: a trace that fell back while ``export`` or ``onnx`` passed on the same model.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .backends.table import ATTENTION_MODES, QUANTIZED_MODES, TORCHSCRIPT_MODES
from .record import Record

SUCCESSORS = ("export", "onnx")
FIX = "; fix: "


@dataclass(frozen=True)
class Hint:
    """A known cause: which records it can explain, how to recognise it, and the fix."""

    name: str
    statuses: tuple[str, ...]
    pattern: str  # searched in the reason (and the TracerWarnings when ``in_warnings``)
    fix: str | Callable[[Record], str]  # the text, or made from the record (e.g. the dynamic= to narrow with)
    in_warnings: bool = False
    when: Callable[[Record], bool] | None = None  # a condition on the record beyond its text

    def matches(self, rec: Record) -> bool:
        if rec.status not in self.statuses or (self.when is not None and not self.when(rec)):
            return False
        texts = [rec.reason or ""] + (rec.warnings if self.in_warnings else [])
        return any(re.search(self.pattern, text) for text in texts)

    def text(self, rec: Record) -> str:
        return self.fix(rec) if callable(self.fix) else self.fix


def _on_a_shape(rec: Record) -> bool:
    """A divergence on an input of another shape (the domain's dims it changed are recorded)."""
    return bool((rec.generalization or {}).get("diverged_axes"))


def _narrow(rec: Record) -> str:
    axes = ", ".join((rec.generalization or {}).get("diverged_axes") or [])
    narrow = (rec.generalization or {}).get("narrow")
    deploy = "deploy with the export or onnx modes, which keep the input domain's dims dynamic"
    if rec.mode not in TORCHSCRIPT_MODES:
        deploy = "check whether another mode keeps that dim dynamic"
    if not narrow:
        return f"the program baked a size of {axes} in; {deploy}"
    return (
        f"the program baked a size of {axes} in; {deploy}, or, if the model only ever sees this size, narrow "
        f"the input domain: {narrow}"
    )


HINTS: tuple[Hint, ...] = (
    # First: a shape divergence is not a branch on a value, whatever the TracerWarnings say.
    Hint("shape-divergence", ("diverges",), r"", _narrow, when=_on_a_shape),
    Hint(
        "dynamic-cache",
        ("fallback",),
        r"DynamicCache|Cache\(|BaseModelOutputWithPast",
        "build the model with use_cache=False (config.use_cache=False, or use_cache=False in the inputs) so "
        "forward() returns tensors only, not a DynamicCache",
    ),
    Hint(
        "non-tensor-output",
        ("fallback",),
        r"Tracer cannot infer type of|Only tensors, lists, tuples of tensors|must have consistent type"
        r"|in output, which is not a known type",
        "return tensors only from forward() (drop the non-tensor values, or wrap the model in a Module that "
        "returns its tensors)",
    ),
    Hint(
        "data-dependent-branch-export",
        ("fallback",),
        r"GuardOnDataDependentSymNode|Could not guard on data-dependent expression",
        "write the branch on a tensor's value as torch.cond(pred, true_fn, false_fn, (x,)), which torch.export "
        "keeps as a real branch",
    ),
    Hint(
        "data-dependent-branch-trace",
        ("diverges", "mismatch"),
        r"Converting a tensor to a Python boolean",
        "the trace froze the branch the example took: write it as torch.cond(pred, true_fn, false_fn, (x,)) "
        "and deploy with the export or onnx modes, which keep both branches",
        in_warnings=True,
    ),
    Hint(
        "fully-masked-row",
        ("diverges", "mismatch"),
        r"differ|exceeds",
        "attention implementations usually differ only on a row whose attention mask is all zeros (it has no "
        "defined output, and each implementation gives another one): leave fully masked rows out of the batch "
        "(or ignore their outputs), or deploy the attention implementation the reference ran",
        when=lambda rec: rec.mode in ATTENTION_MODES,
    ),
    Hint(
        "int8-error",
        ("mismatch", "diverges"),
        r".",
        "int8 differs from fp32 by design, and the default atol/rtol are fp32's: state the error you accept "
        "(atol=/rtol= on the marker, --jitcpu-atol/--jitcpu-rtol; see docs/quantization.md)",
        when=lambda rec: rec.mode in QUANTIZED_MODES,
    ),
)


def fix_for(rec: Record) -> str | None:
    """The fix of the first known cause that explains ``rec``, or None."""
    for hint in HINTS:
        if hint.matches(rec):
            return hint.text(rec)
    return None


def _append(rec: Record, fix: str) -> None:
    if rec.reason and fix not in rec.reason:
        rec.reason = f"{rec.reason}{FIX}{fix}" if FIX not in rec.reason else f"{rec.reason}; {fix}"


def torchscript_only(records: Iterable[Record]) -> Callable[[Record], str | None]:
    """The cross-record row: a TorchScript mode fell back, a torch.export-based mode passed (same dtype)."""
    passed = {(r.mode, r.dtype) for r in records if r.status == "pass"}

    def fix(rec: Record) -> str | None:
        if rec.status != "fallback" or rec.mode not in TORCHSCRIPT_MODES:
            return None
        ok = [mode for mode in SUCCESSORS if (mode, rec.dtype) in passed]
        if not ok:
            return None
        return (
            f"this is a TorchScript-only failure: {' and '.join(ok)} passed on this model; deploy with "
            f"the {ok[0]} mode instead"
        )

    return fix


def explain(records: list[Record]) -> None:
    """End each explainable record's reason with its fix (in place); the records of one check."""
    across = torchscript_only(records)
    for rec in records:
        for fix in (fix_for(rec), across(rec)):
            if fix:
                _append(rec, fix)
