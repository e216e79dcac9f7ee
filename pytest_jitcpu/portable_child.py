"""The child program of the ONNX / OpenVINO round trip: runs saved programs in a Python that can import
neither torch nor transformers, proof that they ship without PyTorch.

Run as a file, never as part of the package (``python portable_child.py JOBS.json RESULTS.json``):
importing ``pytest_jitcpu`` would import torch. Before anything else it installs an import hook that
refuses torch and transformers, then checks that ``import torch`` really fails. Each job names the
runtime (``onnxruntime`` or ``openvino``), the saved file, an ``.npz`` of inputs with their names in the
program's input order, the options (threads, OpenVINO's precision hint) and where to write the outputs
(``.npz``, ``out0`` ... in the program's output order). RESULTS.json says, per job, ``ok`` or the error,
which blocked modules got loaded anyway (none, or the round trip does not count), and whether
``import torch`` was refused.
"""

from __future__ import annotations

import importlib.abc
import json
import sys
from typing import Any

BLOCKED = ("torch", "transformers")


class _Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name.split(".", maxsplit=1)[0] in BLOCKED:
            raise ImportError(f"{name} is blocked: a saved ONNX / OpenVINO program must run without it")


def _torch_refused() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return True
    return False


def _run_onnxruntime(path: str, names: list[str], arrays: list[Any], options: dict[str, Any], runs: int) -> list[Any]:
    import onnxruntime as ort

    settings = ort.SessionOptions()
    settings.intra_op_num_threads = int(options.get("threads", 1))
    settings.inter_op_num_threads = 1
    settings.log_severity_level = 3
    session = ort.InferenceSession(path, settings, providers=["CPUExecutionProvider"])
    feed = dict(zip(names, arrays, strict=True))
    out: list[Any] = []
    for _ in range(runs):
        out = session.run(None, feed)
    return out


def _run_openvino(path: str, names: list[str], arrays: list[Any], options: dict[str, Any], runs: int) -> list[Any]:
    import openvino as ov

    config = {"INFERENCE_NUM_THREADS": int(options.get("threads", 1))}
    if options.get("precision"):
        config["INFERENCE_PRECISION_HINT"] = options["precision"]
    compiled = ov.Core().compile_model(ov.Core().read_model(path), "CPU", config)
    request = compiled.create_infer_request()
    out: list[Any] = []
    for _ in range(runs):
        result = request.infer(list(arrays))
        out = [result[o] for o in compiled.outputs]
    return out


RUNTIMES = {"onnxruntime": _run_onnxruntime, "openvino": _run_openvino}


def _run(job: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    try:
        with np.load(job["inputs"], allow_pickle=False) as data:
            arrays = [data[f"in{i}"] for i in range(len(job["names"]))]
        outputs = RUNTIMES[job["runtime"]](job["path"], job["names"], arrays, job["options"], job["runs"])
        np.savez(job["outputs"], **{f"out{i}": np.asarray(a) for i, a in enumerate(outputs)})
    except Exception as exc:  # noqa: BLE001 - every failure is reported to the parent, one line
        lines = str(exc).strip().splitlines()
        message = " ".join(lines[0].split())[:300] if lines else ""
        return {"ok": False, "error": type(exc).__name__ + (f": {message}" if message else "")}
    return {"ok": True, "count": len(outputs)}


def main(argv: list[str]) -> int:
    sys.meta_path.insert(0, _Blocked())
    refused = _torch_refused()
    jobs_path, results_path = argv
    with open(jobs_path, encoding="utf-8") as handle:
        jobs = json.load(handle)
    results = [_run(job) for job in jobs]
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    with open(results_path, "w", encoding="utf-8") as handle:
        json.dump({"results": results, "loaded": loaded, "torch_refused": refused}, handle)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
