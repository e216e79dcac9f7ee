"""``attn-eager``, ``attn-sdpa``, ``attn-flex``: the model with another attention implementation, run eagerly.

BetterTransformer's successor: transformers ships the fast attention itself and switches it with
``model.set_attn_implementation("eager" | "sdpa" | "flex_attention")``. Which one runs changes the numbers
(on a fully masked padding row more than any tolerance), so each is a mode, compared with the model as given.

The switch is made on a copy: the modules and configs are copied, the parameters and buffers shared (no
second set of weights), so the user's model keeps its own implementation. transformers refuses an
implementation a model class does not support (``ValueError``), or keeps the old one with a logged warning
when the class cannot switch at run time; either is ``unavailable`` with transformers' words. flex_attention
compiles its kernel with torch.compile (inductor) on the first call: timed as the build's compile time, and
``unavailable`` where this machine cannot compile it (no C++ compiler, a CPU inductor does not support).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import sys
import time
from collections.abc import Iterator
from typing import Any

import torch

from ..inputs import Inputs
from .base import Built, Fallback, Unavailable, captured_warnings, first_line, precision, quiet_torch_logs, reason
from .table import backend

# What an exception from flex_attention's first (compiling) run says when this machine cannot run it, as
# opposed to the model failing under it: no C++ compiler, or inductor's CPU flex kernel refusing the CPU,
# the dtype, or mixed query/key/value dtypes (bf16 autocast on some models).
_CANNOT_COMPILE = (
    "InvalidCxxCompiler",
    "is not supported for CPU",
    "not supported on this platform",
    "supported in FlexAttention for CPU device",
)


def pretrained(model: Any) -> list[torch.nn.Module]:
    """The outermost transformers models in ``model`` (itself, or the ones a wrapper holds), none when
    transformers was never imported (then no model of it can exist)."""
    transformers = sys.modules.get("transformers")
    base = getattr(transformers, "PreTrainedModel", None) if transformers is not None else None
    if base is None or not isinstance(model, torch.nn.Module):
        return []
    found: list[tuple[str, torch.nn.Module]] = []
    for name, module in model.named_modules():
        if isinstance(module, base) and not any(name.startswith(f"{outer}.") or not outer for outer, _ in found):
            found.append((name, module))
    return [module for _, module in found]


def implementation(model: Any) -> str | None:
    """The attention implementation ``model`` runs: ``"sdpa"``, or with sub-models that differ
    ``"sdpa; vision_config: eager"``; None for a model without a transformers model in it."""
    parts: list[str] = []
    for module in pretrained(model):
        config = getattr(module, "config", None)
        main = getattr(config, "_attn_implementation", None)
        if main is None:
            continue
        parts.append(str(main))
        for key in getattr(config, "sub_configs", None) or {}:
            sub = getattr(getattr(config, key, None), "_attn_implementation", None)
            if sub is not None and sub != main:
                parts.append(f"{key}: {sub}")
    return "; ".join(dict.fromkeys(parts)) or None


def _transformers_reason(exc: BaseException) -> str:
    """transformers' own words, first sentence: its messages go on with an issue link and an example."""
    line = first_line(exc)
    head, dot, _ = line.partition(". ")
    return head + dot.strip() if dot else line


@contextlib.contextmanager
def _logged(into: list[str]) -> Iterator[None]:
    """Collect what transformers logs while switching (it only warns when a class cannot switch at run
    time) instead of printing it."""
    logger = logging.getLogger("transformers.modeling_utils")

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            into.append(record.getMessage())

    handler, propagate = Keep(logging.WARNING), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def switched(model: torch.nn.Module, name: str) -> torch.nn.Module:
    """A copy of ``model`` whose transformers models run attention implementation ``name``; the weights
    are shared, the user's model untouched. Unavailable (with transformers' reason) where it cannot be set."""
    if not pretrained(model):
        raise Unavailable(
            f"not a transformers model ({type(model).__name__} holds no PreTrainedModel): there is no "
            f"attn_implementation to set to {name!r}"
        )
    shared = {id(t): t for t in (*model.parameters(), *model.buffers())}
    try:
        twin = copy.deepcopy(model, shared)
    except Exception as exc:  # noqa: BLE001 - an attribute that cannot be copied: the mode cannot be built
        raise Fallback(f"could not copy the model to switch its attention implementation: {first_line(exc)}") from None
    logged: list[str] = []
    for module in pretrained(twin):
        try:
            with _logged(logged):
                module.set_attn_implementation(name)
        except Exception as exc:  # noqa: BLE001 - transformers refuses: ValueError/ImportError with the reason
            raise Unavailable(f"transformers: {_transformers_reason(exc)}") from None
    now = implementation(twin)
    if now != name:
        why = logged[0].split(", because", 1)[0] if logged else "transformers kept another implementation"
        raise Unavailable(f"transformers: {why} (it runs {now}, not {name})")
    return twin


def _build(mode: str, model: torch.nn.Module, inputs: Inputs, dtype: str) -> Built:
    name = backend(mode).attention
    assert name is not None
    given = implementation(model)
    twin = switched(model, name)
    notes = []
    if given == name:
        notes.append(f"the model as given already runs {name} attention: this is the eager reference's program")

    def run(batch: Inputs) -> Any:
        with torch.no_grad(), precision(dtype):
            return batch.call(twin)

    return Built(mode, dtype, run, module=twin, notes=notes, attn_implementation=name)


def build_eager(model: torch.nn.Module, inputs: Inputs, dtype: str) -> Built:
    return _build("attn-eager", model, inputs, dtype)


def build_sdpa(model: torch.nn.Module, inputs: Inputs, dtype: str) -> Built:
    return _build("attn-sdpa", model, inputs, dtype)


def build_flex(model: torch.nn.Module, inputs: Inputs, dtype: str) -> Built:
    """flex_attention compiles its kernel on the first call (transformers wraps it in torch.compile): that
    run is part of the build, timed as its compile time, and where it cannot compile the mode is unavailable."""
    built = _build("attn-flex", model, inputs, dtype)
    start = time.perf_counter()
    try:
        with captured_warnings(built.warnings, lambda w: False), quiet_torch_logs():
            built.run(inputs.clone())
    except Exception as exc:  # noqa: BLE001 - a compile failure is a result with its reason
        text = f"{type(exc).__name__}: {exc}"
        if any(marker in text for marker in _CANNOT_COMPILE):
            raise Unavailable(f"flex_attention cannot be compiled for this CPU here: {reason(exc)}") from None
        raise Fallback(f"flex_attention failed on the example: {reason(exc)}", built.warnings) from None
    built.compile_time_ms = (time.perf_counter() - start) * 1000
    return built
