"""The TorchScript loader: loads saved programs with ``torch.jit.load`` and runs them, in a Python that
cannot import transformers (proof that the program needs only torch).

Started once per session (per xdist worker) by :mod:`pytest_jitcpu.serialize`: its ``import torch``
costs 2-3 s, paid once instead of per check. It serves request lines (:mod:`.protocol`) until its stdin
closes. JOBS (``torch.save``) is a list of ``{"path", "args", "kwargs", "dtype", "runs", "imports"}``;
``imports`` are the modules that register the program's custom classes (IPEX's prepacked weights).
RESULTS (``torch.save``): ``{"results": [{"ok", "output" | "error"}], "loaded": [...]}``.
"""

from __future__ import annotations

import importlib
from typing import Any

from .blocker import block, loaded
from .protocol import failure, serve

BLOCKED = ("transformers",)


def _run(job: dict[str, Any]) -> Any:
    import torch

    for name in job["imports"]:
        importlib.import_module(name)
    module = torch.jit.load(job["path"], map_location="cpu").eval()
    out = None
    for _ in range(job["runs"]):  # as in-process: TorchScript's profiling executor optimizes on later runs
        args = [a.clone() if isinstance(a, torch.Tensor) else a for a in job["args"]]
        kwargs = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in job["kwargs"].items()}
        with torch.no_grad():
            if job["dtype"] == "bf16":
                with torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False):
                    out = module(*args, **kwargs)
            else:
                out = module(*args, **kwargs)
    return out


def run(jobs_path: str, results_path: str) -> None:
    """Run one batch (a failing job is a result, never the end of the loader)."""
    import torch

    results = []
    for job in torch.load(jobs_path):
        try:
            results.append({"ok": True, "output": _run(job)})
        except Exception as exc:  # noqa: BLE001 - reported to the parent, one line
            results.append(failure(exc))
    torch.save({"results": results, "loaded": loaded(BLOCKED)}, results_path)


def main() -> None:
    block(BLOCKED, "a saved TorchScript program must run without it")
    serve(run)


if __name__ == "__main__":
    main()
