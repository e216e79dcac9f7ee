"""``trace-dict`` and ``trace-tuple``: ``torch.jit.trace`` with keyword or positional inputs, then frozen."""

from __future__ import annotations

from typing import Any

import torch

from ..inputs import Inputs, as_keywords, as_positional, positional_order
from .base import Built, build_traced


def build_dict(model: torch.nn.Module, inputs: Inputs, dtype: str) -> Built:
    def call(module: Any, example: dict[str, Any], batch: Inputs) -> Any:
        kw = as_keywords(model, batch)
        return module(**{k: kw[k] for k in example if k in kw})

    return build_traced("trace-dict", model, inputs, dtype, example=lambda x: as_keywords(model, x), call=call)


def build_tuple(model: torch.nn.Module, inputs: Inputs, dtype: str) -> Built:
    order: list[Any] = []  # forward()'s parameter order for dict inputs, found with the example

    def example(x: Inputs) -> tuple[Any, ...]:
        args = as_positional(model, x)
        order.append(positional_order(model, list(x.kwargs)) if x.is_dict else None)
        return args

    def call(module: Any, _: Any, batch: Inputs) -> Any:
        if order[0] is None or not batch.is_dict:
            return module(*as_positional(model, batch))
        return module(*(batch.kwargs[name] if filler is None else filler for name, filler in order[0]))

    return build_traced("trace-tuple", model, inputs, dtype, example=example, call=call)
