"""The ``aoti`` round trip: loads saved ``.pt2`` packages and runs them in a fresh Python that cannot
import transformers or the model's own module, proof that a package ships without the model's code.

Started by :mod:`pytest_jitcpu.serialize`, one per ``check`` call, with one request line (:mod:`.protocol`)
and the same JOBS / RESULTS files as :mod:`.portable`; unlike that child it needs torch (a package runs in
torch's AOTInductor runtime). What it blocks comes with the jobs (``options["blocked"]``: transformers and
the model's top-level module), so the blocker goes in when the request arrives, before torch or the
package runner (:mod:`pytest_jitcpu.backends.aoti_package`, which imports only torch) are imported. Each
package runs through its shape contract, as everywhere else. Outputs are written as ``.npz`` (bf16
upcast to fp32: numpy has no bf16; the parent casts back).
"""

from __future__ import annotations

import json
from typing import Any

from .blocker import block, loaded
from .protocol import failure, serve

ALWAYS_BLOCKED = ("transformers",)


def _run(job: dict[str, Any]) -> dict[str, Any]:
    import numpy as np
    import torch

    from ..backends.aoti_package import Package

    try:
        torch.set_num_threads(int(job["options"].get("threads", 1)))
        with np.load(job["inputs"], allow_pickle=False) as data:
            tensors = [torch.from_numpy(data[f"in{i}"]) for i in range(len(job["names"]))]
        package = Package(job["path"])
        outputs: list[Any] = []
        with torch.no_grad():
            for _ in range(job["runs"]):
                outputs = package.run_tensors([t.clone() for t in tensors])
        arrays = {f"out{i}": (t.float() if t.dtype == torch.bfloat16 else t).numpy() for i, t in enumerate(outputs)}
        np.savez(job["outputs"], **arrays)
    except Exception as exc:  # noqa: BLE001 - every failure is reported to the parent, one line
        return failure(exc)
    return {"ok": True, "count": len(outputs)}


def main() -> None:
    def run(jobs_path: str, results_path: str) -> None:
        with open(jobs_path, encoding="utf-8") as handle:
            jobs = json.load(handle)
        blocked = tuple(sorted({*ALWAYS_BLOCKED, *(n for job in jobs for n in job["options"].get("blocked", []))}))
        block(blocked, "a saved aoti package must run without it")
        results = [_run(job) for job in jobs]
        with open(results_path, "w", encoding="utf-8") as handle:
            # torch_refused None: this child needs torch, it proves only that the model's code is not needed
            json.dump({"results": results, "loaded": loaded(blocked), "torch_refused": None}, handle)

    serve(run)


if __name__ == "__main__":
    main()
