"""How the parent starts a child program: ``python -u -m pytest_jitcpu.children.NAME`` with this
process's interpreter and environment, the working directory a temporary folder.

The child must import this very package (the same code as the parent, an editable checkout included):
when the package does not sit in the interpreter's own site-packages, its folder goes first on the
child's PYTHONPATH.
"""

from __future__ import annotations

import os
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the folder that holds pytest_jitcpu/
PACKAGE = __package__ or "pytest_jitcpu.children"


def command(child: str) -> list[str]:
    """The command line that starts the child module ``child`` (``torchscript``, ``portable``)."""
    return [sys.executable, "-u", "-m", f"{PACKAGE}.{child}"]


def environment() -> dict[str, str]:
    """This process's environment, with the package's folder on PYTHONPATH where the child needs it."""
    env = dict(os.environ)
    installed = {Path(sysconfig.get_paths()[key]).resolve() for key in ("purelib", "platlib")}
    if ROOT not in installed:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env
