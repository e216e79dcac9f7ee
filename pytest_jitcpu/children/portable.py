"""The ONNX / OpenVINO round trip: runs saved programs in a Python that can import neither torch nor
transformers, proof that they ship without PyTorch.

Started by :mod:`pytest_jitcpu.serialize`, one per ``check`` call, with one request line
(:mod:`.protocol`). It installs the import blocker before anything else, then checks that ``import
torch`` really fails. Each job of JOBS (JSON) names the runtime (``onnxruntime`` or ``openvino``), the
saved file, an ``.npz`` of inputs with their names in the program's input order, the options (threads,
OpenVINO's precision hint and the mode's other compile properties) and where to write the outputs
(``.npz``, ``out0`` ... in the program's output order). RESULTS (JSON) says, per job, ``ok`` and the
output count or the error, which blocked modules got loaded anyway (none, or the round trip does not
count), and whether ``import torch`` was refused.
"""

from __future__ import annotations

import json
from typing import Any

from .blocker import block, loaded, refused
from .protocol import failure, serve

BLOCKED = ("torch", "transformers")


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
    # What the mode compiled with besides (openvino-int8-dynamic's group size): without it the CPU plugin
    # quantizes activations in its default groups, another program than the one that was checked.
    config.update(options.get("config") or {})
    compiled = ov.Core().compile_model(ov.Core().read_model(path), "CPU", config)
    request = compiled.create_infer_request()
    out: list[Any] = []
    for _ in range(runs):
        result = request.infer(list(arrays))
        out = [result[o] for o in compiled.outputs]
    return out


# The runtime a backend's Portable names -> how to run a program saved for it.
RUNTIMES = {"onnxruntime": _run_onnxruntime, "openvino": _run_openvino}


def _run(job: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    try:
        with np.load(job["inputs"], allow_pickle=False) as data:
            arrays = [data[f"in{i}"] for i in range(len(job["names"]))]
        outputs = RUNTIMES[job["runtime"]](job["path"], job["names"], arrays, job["options"], job["runs"])
        np.savez(job["outputs"], **{f"out{i}": np.asarray(a) for i, a in enumerate(outputs)})
    except Exception as exc:  # noqa: BLE001 - every failure is reported to the parent, one line
        return failure(exc)
    return {"ok": True, "count": len(outputs)}


def main() -> None:
    block(BLOCKED, "a saved ONNX / OpenVINO program must run without it")
    torch_refused = refused("torch")

    def run(jobs_path: str, results_path: str) -> None:
        with open(jobs_path, encoding="utf-8") as handle:
            jobs = json.load(handle)
        results = [_run(job) for job in jobs]
        with open(results_path, "w", encoding="utf-8") as handle:
            json.dump({"results": results, "loaded": loaded(BLOCKED), "torch_refused": torch_refused}, handle)

    serve(run)


if __name__ == "__main__":
    main()
