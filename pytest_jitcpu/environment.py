"""What machine and stack a report was made on: versions, CPU model, ISA, BF16 support, threads."""

from __future__ import annotations

import functools
import platform
import sys
from pathlib import Path
from typing import Any

import torch

from .backends.table import BACKENDS


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The flags of the first CPU in /proc/cpuinfo (empty where there is no such file)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


@functools.lru_cache(maxsize=1)
def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def isa() -> str:
    """torch's view of the CPU's vector ISA, lower case: ``avx2``, ``avx512``, ``default`` ..."""
    try:
        return str(torch.backends.cpu.get_cpu_capability()).lower()
    except Exception:  # noqa: BLE001
        return "unknown"


def native_bf16() -> bool:
    """True when the CPU has bf16 instructions (AVX512_BF16, AMX or AVX-NE-CONVERT)."""
    flags = cpu_flags()
    return bool(flags & {"avx512_bf16", "amx_bf16", "avx_ne_convert"})


def bf16_weight_prepack() -> bool:
    """What IPEX's BF16 weight prepack needs: avx_ne_convert, or avx512bw+vl+dq."""
    flags = cpu_flags()
    return "avx_ne_convert" in flags or {"avx512bw", "avx512vl", "avx512dq"} <= flags


def _version(module: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:  # noqa: BLE001
        return None


def _backend_version(distribution: str, import_name: str | None) -> str | None:
    """The imported module's own version when the session imported it (what actually ran), else the
    installed distribution's; None when it is not installed."""
    module = sys.modules.get(import_name) if import_name else None
    found = getattr(module, "__version__", None) if module is not None else None
    return str(found) if found is not None else _version(distribution)


def versions() -> dict[str, str | None]:
    """The version of each backend's package, keyed as in the report (from the backends table)."""
    return {b.version_key: _backend_version(b.package, b.import_name) for b in BACKENDS if b.version_key and b.package}


def environment() -> dict[str, Any]:
    """The ``environment`` object of the JSON report."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": _version("transformers"),
        **versions(),
        "cpu": cpu_name(),
        "isa": isa(),
        "bf16_native": native_bf16(),
        "threads": torch.get_num_threads(),
    }
