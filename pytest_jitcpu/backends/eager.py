"""``eager``: the model itself, in eval mode under ``no_grad`` (the reference every other mode is compared with)."""

from __future__ import annotations

import torch

from ..inputs import Inputs
from .base import Built, precision


def build(model: torch.nn.Module, inputs: Inputs, dtype: str) -> Built:
    def run(batch: Inputs) -> object:
        with torch.no_grad(), precision(dtype):
            return batch.call(model)

    return Built("eager", dtype, run, module=model)
