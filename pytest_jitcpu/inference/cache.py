"""Decisions of ``--mode auto`` remembered between runs: which mode and dtype won for this model, these
versions, this CPU and these run settings. A hit skips timing the other candidates; the cached mode is
still verified against eager on real batches of the new input (a different input can break a trace), and
a cached mode that fails that is forgotten and the full choice runs.

Where: ``$JITCPU_CACHE_DIR``, else ``$XDG_CACHE_HOME/pytest-jitcpu``, else ``~/.cache/pytest-jitcpu``;
``JITCPU_CACHE=off`` (or ``--no-cache``) turns it off. One JSON file, written via temp file + rename.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

FILE = "decisions.json"
SCHEMA = "jitcpu-decisions/1"
KEEP = 200  # entries kept (the oldest go first)
_HEAD = 1 << 20  # bytes of each weight file hashed at its start and its end (a full hash of GBs is slow)


def enabled() -> bool:
    return os.environ.get("JITCPU_CACHE", "on").strip().lower() not in ("0", "off", "false", "no")


def directory() -> Path:
    if os.environ.get("JITCPU_CACHE_DIR"):
        return Path(os.environ["JITCPU_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pytest-jitcpu"


def fingerprint(folder: Path) -> str:
    """The model's identity: its config files' bytes and, per weight file, its size and the hash of its
    first and last MiB (two copies of the same model agree; a retrained one does not)."""
    digest = hashlib.sha256()
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    for p in files:
        rel = p.relative_to(folder).as_posix()
        size = p.stat().st_size
        digest.update(f"{rel}\0{size}\0".encode())
        with open(p, "rb") as handle:
            if p.suffix in (".json", ".txt", ".model") and size <= _HEAD:
                digest.update(handle.read())
                continue
            digest.update(handle.read(_HEAD))
            if size > 2 * _HEAD:
                handle.seek(size - _HEAD)
                digest.update(handle.read(_HEAD))
    return digest.hexdigest()


def key(model: Path, settings: dict[str, Any]) -> str:
    """model fingerprint + the stack's versions + the CPU + the run's settings (task, batch size, threads,
    candidates, dtypes)."""
    import torch

    from .. import __version__
    from ..environment import cpu_flags, cpu_name, versions

    parts = {
        "model": fingerprint(model),
        "pytest_jitcpu": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": _version("transformers"),
        "backends": versions(),
        "cpu": cpu_name(),
        "flags": sorted(f for f in cpu_flags() if f.startswith(("avx", "amx", "fma", "sse4"))),
        "threads": torch.get_num_threads(),
        **settings,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _version(name: str) -> str | None:
    module = sys.modules.get(name)
    return getattr(module, "__version__", None)


def _load(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("schema") != SCHEMA or not isinstance(data.get("entries"), dict):
        return {}  # another version's file, or damaged: start afresh (it is only a cache)
    return data["entries"]


def get(cache_key: str) -> dict[str, Any] | None:
    entry = _load(directory() / FILE).get(cache_key)
    if isinstance(entry, dict) and isinstance(entry.get("mode"), str) and isinstance(entry.get("dtype"), str):
        return entry
    return None


def put(cache_key: str, entry: dict[str, Any] | None) -> Path | None:
    """Store (or with None, forget) one decision; a cache that cannot be written is skipped silently:
    it saves time, it never decides whether a run succeeds."""
    folder = directory()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / FILE
        entries = _load(path)
        if entry is None:
            entries.pop(cache_key, None)
        else:
            entries[cache_key] = {**entry, "saved": time.time()}
        newest = sorted(entries.items(), key=lambda kv: kv[1].get("saved", 0))[-KEEP:]
        fd, tmp = tempfile.mkstemp(prefix=".decisions-", suffix=".tmp", dir=folder)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump({"schema": SCHEMA, "entries": dict(newest)}, handle, indent=1)
        os.replace(tmp, path)
        return path
    except OSError:
        return None
