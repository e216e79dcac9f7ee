"""The public ``pytest_jitcpu.check``: one entry that runs a check in this process or in a forked child,
as its settings say (``isolate``), for the Python API, ``jitcpu check`` and the fixture alike."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import isolation
from .record import CheckResult
from .settings import DEFAULT_DTYPES, DEFAULT_MODES, Settings, UsageError


def check(
    model: Any,
    inputs: Any,
    *,
    modes: Any = DEFAULT_MODES,
    dtypes: Any = DEFAULT_DTYPES,
    atol: float | None = None,
    rtol: float | None = None,
    dynamic: Any = None,
    isolate: Any = None,
    settings: Settings | None = None,
    nodeid: str = "",
    name: str | None = None,
    generate: Any = None,
    on_built: Callable[[Any], None] | None = None,
) -> CheckResult:
    """Check ``model`` on ``inputs`` (a dict of keyword arguments or a tuple of positional ones) in every
    selected mode and dtype, against eager fp32, over the input domain (``dynamic=``, see
    :mod:`pytest_jitcpu.search.domain`).

    ``settings`` (from the plugin) wins over ``modes``/``dtypes``/``atol``/``rtol``/``dynamic``.
    ``isolate=True`` runs the check in a forked child (:mod:`pytest_jitcpu.isolation`): a model that kills
    the interpreter becomes a record instead of ending this process. The Python API's default is
    in-process (a ``breakpoint()`` in ``forward()`` works, state it sets stays); the plugin's is isolated.
    ``on_built`` is called with each mode that passed on the example (in-process only).
    """
    if settings is None:
        settings = Settings(isolate=False).updated(modes=modes, dtypes=dtypes, atol=atol, rtol=rtol, dynamic=dynamic)
    if isolate is not None:
        settings = settings.updated(isolate=isolate)
    if on_built is not None:
        if settings.isolate:
            raise UsageError("isolate=True and on_built: the built modes live in the child; pass one of them")
        from . import engine

        return engine.check(
            model, inputs, settings=settings, nodeid=nodeid, name=name, generate=generate, on_built=on_built
        )
    return isolation.check(model, inputs, settings=settings, nodeid=nodeid, name=name, generate=generate)
