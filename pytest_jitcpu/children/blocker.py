"""The import blocker a child installs before anything else: the round trip proves a saved program runs
without the libraries it blocks (transformers for TorchScript; torch too for ONNX / OpenVINO)."""

from __future__ import annotations

import importlib.abc
import sys
from collections.abc import Sequence
from typing import Any


class Blocked(importlib.abc.MetaPathFinder):
    """Refuses to import ``names`` (and their submodules), saying why."""

    def __init__(self, names: Sequence[str], why: str) -> None:
        self.names = tuple(names)
        self.why = why

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name.split(".", maxsplit=1)[0] in self.names:
            raise ImportError(f"{name} is blocked: {self.why}")


def block(names: Sequence[str], why: str) -> None:
    """From now on this process cannot import ``names``."""
    sys.meta_path.insert(0, Blocked(names, why))


def loaded(names: Sequence[str]) -> list[str]:
    """The modules of ``names`` this process has loaded anyway (none, or the round trip does not count)."""
    return sorted(m for m in sys.modules if m.split(".", maxsplit=1)[0] in names)


def refused(name: str) -> bool:
    """Whether importing ``name`` fails here (the probe that the block works)."""
    try:
        __import__(name)
    except ImportError:
        return True
    return False
