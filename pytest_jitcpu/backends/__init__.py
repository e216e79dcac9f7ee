"""The modes a model can be checked and run in: one module per backend, one table of them.

:mod:`.table` lists the modes (imports nothing heavy); :mod:`.base` holds what the backends share
(:class:`~.base.Built`, :class:`~.base.Fallback`, :class:`~.base.Unavailable`, the traced-build skeleton);
each backend module has a ``build(model, inputs, dtype) -> Built``. :func:`build` finds a mode's builder
through its table row and imports it only then, so listing modes never imports torch or a runtime.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .table import backend

if TYPE_CHECKING:
    from ..inputs import Inputs
    from ..search.domain import Domain
    from .base import Built


def builder(mode: str) -> Any:
    """The function that builds ``mode`` (looked up on each call, so a test can replace it)."""
    row = backend(mode)
    return getattr(importlib.import_module(f"{__name__}.{row.module}"), row.builder)


def build(
    mode: str,
    model: Any,
    inputs: Inputs,
    dtype: str,
    domain: Domain | None = None,
    calibration: Sequence[Inputs] | None = None,
) -> Built:
    """Prepare ``model`` for ``mode`` in ``dtype``; raises Fallback or Unavailable with the reason.

    ``domain``: the check's input domain, given to the builders whose row says ``dynamic`` (None: they
    derive the defaults by role from ``inputs``). ``calibration``: batches a calibrated mode (its row says
    ``calibrated``) takes its int8 activation ranges from; without them it calibrates on ``inputs`` (and
    says so in its notes). Other modes take none."""
    from .base import FORK_UNSAFE_POOLS, Unavailable  # here: listing modes must not import torch

    make = builder(mode)
    pool = backend(mode).fork_unsafe_pool
    start = time.perf_counter()
    row = backend(mode)
    options: dict[str, Any] = {}
    if row.dynamic:
        options["domain"] = domain
    if row.calibrated:
        options["calibration"] = calibration
    try:
        built = make(model, inputs, dtype, **options)
    except Unavailable:
        raise  # it never got as far as starting anything
    except BaseException:
        if pool:  # a build that failed half-way may have started the pool already
            FORK_UNSAFE_POOLS.add(pool)
        raise
    if pool:
        FORK_UNSAFE_POOLS.add(pool)
    built.build_ms = (time.perf_counter() - start) * 1000
    if built.attn_implementation is None:  # the attention modes set their own; the others run the model's
        from .attention import implementation

        built.attn_implementation = implementation(model)
    return built
