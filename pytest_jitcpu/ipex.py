"""The only module that imports Intel Extension for PyTorch (IPEX).

IPEX installed against another torch does not raise ImportError: it prints an error and raises
AttributeError (or worse), so the import is guarded with ``except Exception`` and turned into a reason.
"""

from __future__ import annotations

import functools
from typing import Any

import torch

from .inputs import Inputs
from .modes import Built, Unavailable, first_line


@functools.lru_cache(maxsize=1)
def load() -> tuple[Any, str | None]:
    """(the ipex module or None, the reason it is not usable)."""
    try:
        import intel_extension_for_pytorch as ipex
    except ModuleNotFoundError:
        return None, "intel-extension-for-pytorch is not installed (pip install 'pytest-jitcpu[ipex]' with torch 2.8.*)"
    except BaseException as exc:
        return None, f"intel-extension-for-pytorch failed to import with torch {torch.__version__}: {first_line(exc)}"
    return ipex, None


def version() -> str | None:
    module, _ = load()
    return getattr(module, "__version__", None) if module is not None else None


def unavailable_reason() -> str | None:
    """Why the ipex mode cannot run here, or None when it can."""
    return load()[1]


def build(model: torch.nn.Module, inputs: Inputs, dtype: str) -> Built:
    ipex, reason = load()
    if ipex is None:
        raise Unavailable(reason)
    raise Unavailable("the ipex mode is not built yet in this version of pytest-jitcpu")
