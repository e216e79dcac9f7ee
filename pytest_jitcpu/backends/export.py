"""``export``: ``torch.export`` with dynamic batch/sequence dims derived from the inputs; runs
``exported.module()``. A model torch.export cannot capture is a ``fallback`` with the first line of the
reason and the user's source line. The user's model is not changed.
"""

from __future__ import annotations

from typing import Any

import torch

from ..inputs import Inputs
from ..search.domain import Domain
from .base import Built, Fallback, captured_warnings, from_user_code, precision, quiet_torch_logs, reason
from .dynamic import dynamic_dims, export_program

__all__ = ["build", "dynamic_dims"]


def build(model: torch.nn.Module, inputs: Inputs, dtype: str, domain: Domain | None = None) -> Built:
    """torch.export.export (under autocast for bf16) with the input domain's dims dynamic; run ``module()``."""
    seen: list[str] = []
    notes: list[str] = []
    try:
        with torch.no_grad(), precision(dtype), captured_warnings(seen, from_user_code), quiet_torch_logs():
            exported = export_program(model, inputs.clone(), notes, domain=domain)
            module = exported.module()
    except Exception as exc:  # noqa: BLE001 - any export failure is a fallback with its reason
        raise Fallback(reason(exc), seen) from None

    def run(batch: Inputs) -> Any:
        with torch.no_grad(), precision(dtype):
            return batch.call(module)

    return Built("export", dtype, run, module=exported, warnings=seen, notes=notes)
