"""``compile``: ``torch.compile`` with inductor (freezing on). Compilation happens on the first call, whose
time is recorded as ``compile_time_ms``; graph breaks go into the notes. The user's model is not changed.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from ..inputs import Inputs
from .base import Built, Fallback, Unavailable, captured_warnings, from_user_code, precision, quiet_torch_logs, reason


def _graph_breaks() -> dict[str, int]:
    try:
        from torch._dynamo.utils import counters
    except ImportError:
        return {}
    # Older torch counts breaks under "graph_break", newer under "unimplemented" (keyed by reason).
    found: dict[str, int] = {}
    for kind in ("graph_break", "unimplemented"):
        for key, count in counters[kind].items():
            found[f"{kind}:{key}"] = count
    return found


class _Holder(torch.nn.Module):
    """What gets compiled: torch.compile(module) sets attributes on the module it is given; this way
    they land here, not on the user's model. Dynamo traces through to the model's own forward()."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.model(*args, **kwargs)


def build(model: torch.nn.Module, inputs: Inputs, dtype: str) -> Built:
    """torch.compile(backend="inductor") with inductor's freezing on; the first call compiles (timed)."""
    seen: list[str] = []
    notes: list[str] = []
    # Importing dynamo/inductor warns (deprecations): a user's filterwarnings=error must not see that.
    with captured_warnings(seen, from_user_code), quiet_torch_logs():
        import torch._dynamo as dynamo
        import torch._inductor.config as inductor_config

        # Dynamo caches compiled code per forward() code object and stops recompiling after a limit: a
        # session checking many models of one class would end up running them eager, silently. Start clean.
        dynamo.reset()
        breaks_before = _graph_breaks()
        compiled = torch.compile(_Holder(model), backend="inductor")

    def run(batch: Inputs) -> Any:
        # Freezing only while our calls run (a recompile on a new shape happens inside one of them).
        with inductor_config.patch(freezing=True), torch.no_grad(), precision(dtype):
            return batch.call(compiled)

    start = time.perf_counter()
    try:
        with captured_warnings(seen, from_user_code), quiet_torch_logs():
            run(inputs.clone())
    except Exception as exc:  # noqa: BLE001 - any compile failure is a fallback with its reason
        if "InvalidCxxCompiler" in f"{type(exc).__name__}: {exc}":
            raise Unavailable(f"torch.compile (inductor) needs a C++ compiler here: {reason(exc)}") from None
        raise Fallback(reason(exc), seen) from None
    compile_ms = (time.perf_counter() - start) * 1000
    breaks = {k: v - breaks_before.get(k, 0) for k, v in _graph_breaks().items() if v > breaks_before.get(k, 0)}
    # Distinct reasons, not counts: one break in an inlined forward() is hit once per enclosing frame.
    reasons = list(dict.fromkeys(key.split(":", 1)[1].strip().splitlines()[0][:300] for key in breaks))
    if reasons:
        more = f" (and {len(reasons) - 1} other reason(s))" if len(reasons) > 1 else ""
        notes.append(f"compile: graph break, those parts run eager: {reasons[0]}{more}")
    return Built(
        "compile", dtype, run, module=compiled, frozen=True, warnings=seen, notes=notes, compile_time_ms=compile_ms
    )
