"""pytest-jitcpu: prove that a PyTorch / Hugging Face model runs correctly and fast on CPU under
TorchScript tracing, IPEX and their successors, in its own test suite and in CI.

The public API is re-exported lazily (PEP 562 ``__getattr__``): pytest loads this package for the
plugin entry point in every session of an environment where it is installed, and a session that never
checks a model must not pay for importing torch, transformers or Hypothesis.
``from pytest_jitcpu import check`` imports the engine then, and only then.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for type checkers and editors; at run time these come from __getattr__
    from .api import check
    from .compare import Tolerance, compare
    from .record import CheckResult, Record
    from .settings import DTYPES, MODES, Settings, UsageError
    from .statuses import STATUSES

# public name -> the module that defines it (one table; __all__ and __getattr__ derive from it)
_EXPORTS: dict[str, str] = {
    "DTYPES": "settings",
    "MODES": "settings",
    "STATUSES": "statuses",
    "CheckResult": "record",
    "Record": "record",
    "Settings": "settings",
    "Tolerance": "compare",
    "UsageError": "settings",
    "check": "api",
    "compare": "compare",
}

__all__ = [
    "DTYPES",
    "MODES",
    "STATUSES",
    "CheckResult",
    "Record",
    "Settings",
    "Tolerance",
    "UsageError",
    "check",
    "compare",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # once: the next lookup does not come here
    return value


class _Package(types.ModuleType):
    """The package's module type: importing the submodule ``compare`` must not replace the public
    function ``compare`` (the import system sets each loaded submodule as an attribute of its package;
    the eager ``from .compare import compare`` this replaces had the function win, and so does this)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and _EXPORTS.get(name) == name:
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
