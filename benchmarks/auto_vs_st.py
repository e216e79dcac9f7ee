"""`jitcpu run --mode auto` against sentence-transformers `encode`, as whole processes, on real sentences
of varied length (benchmarks/corpus.py --real), side by side in one run; then, in one process, the mode
auto picks against hand-written loops of the same model in every runtime (eager, trace, oneDNN-fused
trace, ONNX Runtime, OpenVINO; bf16 where the CPU has native BF16).

Part 1, whole processes, repeated ``--repeats`` times, the order alternating each time:
  - ``jitcpu run --mode auto`` (no decision cache: what a first run costs), its setup share from --summary;
  - ``python benchmarks/baselines.py st`` (imports, load, encode: the whole process, timed from outside);
  - ``jitcpu run --mode eager``: the reference embeddings auto is compared with (cosine).
Part 2, in one process: each hand loop tokenizes, sorts by length, batches, runs and mean-pools the whole
corpus; rounds interleave the loops (rotating who goes first) so a busy minute slows all alike. The
Predictor in ``auto`` (default candidates, and all of them listed) runs the same corpus after its choice.

    python benchmarks/auto_vs_st.py --rows 3000 --threads 2 --repeats 3
Writes benchmarks/results/auto_vs_st.md and auto_vs_st.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import baselines  # noqa: E402 - sibling scripts
import corpus  # noqa: E402


def cpu() -> dict[str, Any]:
    """The CPU's name and the flags that decide which runtime wins, read now from /proc/cpuinfo."""
    from pytest_jitcpu.environment import cpu_flags, cpu_name, isa, native_bf16

    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "avx_ne_convert")
    family = None
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("cpu family"):
                family = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "name": cpu_name(),
        "family": family,
        "flags": [f for f in wanted if f in cpu_flags()],
        "isa": isa(),
        "native_bf16": native_bf16(),
        "cores": os.cpu_count(),
    }


def cosine_min(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float((a * b).sum(1).min())


# -- part 1: whole processes --------------------------------------------------------------------------
def _process(cmd: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env={**os.environ, "JITCPU_CACHE": "off"})
    took = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    return took, proc


def jitcpu_process(text: Path, work: Path, mode: str, args: argparse.Namespace) -> dict[str, Any]:
    out, summary = work / f"{mode}.npy", work / f"{mode}-summary.json"
    for p in (out, summary):
        p.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "pytest_jitcpu.cli", "run", "--task", "feature-extraction", "--mode", mode]
    cmd += ["--input", str(text), "--output", str(out), "--threads", str(args.threads)]
    cmd += ["--batch-size", str(args.batch_size), "--summary", str(summary), "--no-progress"]
    took, proc = _process(cmd)
    data = json.loads(summary.read_text(encoding="utf-8"))
    return {
        "process_s": took,
        "mode": f"{data['mode']}/{data['dtype']}",
        "setup_s": data["setup_s"],
        "wall_s": data["wall_s"],
        "decision": data["decision"],
        "choice_s": data.get("choice_s"),
        "log": [line for line in proc.stderr.splitlines() if line.startswith(("jitcpu", "  "))],
        "embeddings": np.load(out),
    }


def st_process(text: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    out = work / "st.npy"
    out.unlink(missing_ok=True)
    cmd = [sys.executable, str(HERE / "baselines.py"), "st", "--input", str(text), "--output", str(out)]
    cmd += ["--threads", str(args.threads), "--batch-size", str(args.batch_size)]
    took, proc = _process(cmd)
    inner = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"process_s": took, "encode_s": inner["seconds"], "embeddings": np.load(out)}


FLOOR = """
import sys
import torch
from transformers import AutoModel, AutoTokenizer
AutoModel.from_pretrained(sys.argv[1], local_files_only=True).eval()
AutoTokenizer.from_pretrained(sys.argv[1], local_files_only=True)
"""


def floor_process() -> dict[str, Any]:
    """What every tool that runs this model with torch and transformers pays before its first batch: the
    interpreter, importing both, loading the model and tokenizer (no run, no output)."""
    took, _ = _process([sys.executable, "-c", FLOOR, str(baselines.model_path())])
    return {"process_s": took}


def whole_processes(text: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    eager = jitcpu_process(text, work, "eager", args)
    repeats = []
    for k in range(args.repeats):
        pair: dict[str, Any] = {}
        for who in ("auto", "st", "floor") if k % 2 == 0 else ("floor", "st", "auto"):
            if who == "auto":
                pair[who] = jitcpu_process(text, work, "auto", args)
            else:
                pair[who] = st_process(text, work, args) if who == "st" else floor_process()
            print(f"repeat {k + 1}: {who} {pair[who]['process_s']:.1f} s", file=sys.stderr, flush=True)
        auto, st = pair["auto"], pair["st"]
        repeats.append(
            {
                "auto_s": auto["process_s"],
                "st_s": st["process_s"],
                "speedup": st["process_s"] / auto["process_s"],
                # setup = the whole process minus the run itself: interpreter, imports, load, selection
                "auto_setup_s": auto["process_s"] - (auto["wall_s"] - auto["setup_s"]),
                "auto_setup_share": (auto["process_s"] - (auto["wall_s"] - auto["setup_s"])) / auto["process_s"],
                "auto_choice_s": auto["choice_s"],
                "floor_s": pair["floor"]["process_s"],
                "auto_mode": auto["mode"],
                "auto_decision": auto["decision"],
                "auto_cosine_to_eager": cosine_min(auto["embeddings"], eager["embeddings"]),
                "st_cosine_to_eager": cosine_min(st["embeddings"], eager["embeddings"]),
                "log": auto["log"],
            }
        )
    return {"eager_process_s": eager["process_s"], "repeats": repeats}


# -- part 2: hand loops in one process -----------------------------------------------------------------
class Corpus:
    """The corpus tokenized per hand-loop call: sorted by length, batches padded to their longest."""

    def __init__(self, texts: list[str], batch_size: int, max_length: int) -> None:
        from transformers import AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(baselines.model_path(), local_files_only=True)
        self.texts, self.batch_size, self.max_length = texts, batch_size, max_length

    def batches(self) -> list[tuple[list[int], dict[str, torch.Tensor]]]:
        ids = self.tok(self.texts, truncation=True, max_length=self.max_length)["input_ids"]
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        out = []
        for i in range(0, len(order), self.batch_size):
            index = order[i : i + self.batch_size]
            batch = self.tok.pad({"input_ids": [ids[j] for j in index]}, return_tensors="pt")
            batch["token_type_ids"] = torch.zeros_like(batch["input_ids"])
            out.append((index, dict(batch)))
        return out


def _pool(hidden: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    m = mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden.float() * m).sum(1) / m.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, dim=1).numpy()


def hand_loops(data: Corpus, native_bf16: bool) -> dict[str, Callable[[], np.ndarray]]:
    """name -> a loop over the whole corpus, each runtime as its own docs show it."""
    from transformers import AutoModel

    model = AutoModel.from_pretrained(baselines.model_path(), local_files_only=True).eval()
    example = data.batches()[0][1]
    loops: dict[str, Callable[[], np.ndarray]] = {}

    def loop(run: Callable[[dict[str, torch.Tensor]], torch.Tensor]) -> Callable[[], np.ndarray]:
        def go() -> np.ndarray:
            out = np.zeros((len(data.texts), model.config.hidden_size), dtype=np.float32)
            with torch.inference_mode():
                for index, batch in data.batches():
                    out[index] = _pool(torch.as_tensor(run(batch)), batch["attention_mask"])
            return out

        return go

    loops["eager"] = loop(lambda b: model(**b).last_hidden_state)
    with torch.no_grad():
        traced = torch.jit.freeze(torch.jit.trace(model, example_kwarg_inputs=example, strict=False))
    loops["trace"] = loop(lambda b: traced(**b)["last_hidden_state"])

    def fused(b: dict[str, torch.Tensor]) -> torch.Tensor:
        torch.jit.enable_onednn_fusion(True)
        try:
            return traced_fused(**b)["last_hidden_state"]
        finally:
            torch.jit.enable_onednn_fusion(False)

    torch.jit.enable_onednn_fusion(True)
    with torch.no_grad():
        traced_fused = torch.jit.freeze(torch.jit.trace(model, example_kwarg_inputs=example, strict=False))
    torch.jit.enable_onednn_fusion(False)
    loops["trace+onednn"] = loop(fused)
    if native_bf16:

        def eager_bf16(b: dict[str, torch.Tensor]) -> torch.Tensor:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return model(**b).last_hidden_state

        loops["eager-bf16"] = loop(eager_bf16)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False):
            traced16 = torch.jit.freeze(torch.jit.trace(model, example_kwarg_inputs=example, strict=False))

        def trace_bf16(b: dict[str, torch.Tensor]) -> torch.Tensor:
            with torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False):
                return traced16(**b)["last_hidden_state"]

        loops["trace-bf16"] = loop(trace_bf16)
    try:
        loops.update(_onnx_loop(model, example, loop))
    except Exception as exc:  # noqa: BLE001 - a runtime that cannot load the model is reported, not fatal
        print(f"onnx hand loop left out: {exc}", file=sys.stderr)
    try:
        loops.update(_openvino_loops(model, example, loop, native_bf16))
    except Exception as exc:  # noqa: BLE001
        print(f"openvino hand loop left out: {exc}", file=sys.stderr)
    return loops


def _onnx_loop(model: Any, example: dict[str, torch.Tensor], loop: Callable) -> dict[str, Callable]:
    import onnxruntime as ort

    path = Path(tempfile.mkdtemp(prefix="jitcpu-onnx-")) / "model.onnx"
    names = list(example)
    dims = {k: {0: "batch", 1: "sequence"} for k in names}
    torch.onnx.export(
        model, (), str(path), kwargs=example, input_names=names, output_names=["last_hidden_state"],
        dynamic_axes=dims, dynamo=True,
    )  # fmt: skip
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    wanted = [i.name for i in session.get_inputs()]
    return {"onnxruntime": loop(lambda b: session.run(None, {k: b[k].numpy() for k in wanted})[0])}


def _openvino_loops(model: Any, example: dict[str, torch.Tensor], loop: Callable, bf16: bool) -> dict[str, Callable]:
    import openvino as ov

    converted = ov.convert_model(model, example_input=example)
    core = ov.Core()
    out = {}
    for precision in ("f32", "bf16") if bf16 else ("f32",):
        config = {"INFERENCE_NUM_THREADS": torch.get_num_threads(), "INFERENCE_PRECISION_HINT": precision}
        request = core.compile_model(converted, "CPU", config).create_infer_request()
        names = [p.get_any_name() for p in converted.inputs]

        def run(b: dict[str, torch.Tensor], request: Any = request, names: list[str] = names) -> np.ndarray:
            return request.infer({k: b[k].numpy() for k in names})[0].copy()

        out["openvino" + ("" if precision == "f32" else "-bf16")] = loop(run)
    return out


def in_process(texts: list[str], args: argparse.Namespace, native_bf16: bool) -> dict[str, Any]:
    from pytest_jitcpu.inference import Predictor, models

    data = Corpus(texts, args.batch_size, 128)
    with models.quiet_transformers():
        loops = hand_loops(data, native_bf16)
        predictors: dict[str, Any] = {}
        for label, candidates in (("jitcpu auto", None), ("jitcpu auto (all candidates)", _all_candidates())):
            log: list[str] = []
            p = Predictor(None, "feature-extraction", batch_size=args.batch_size, candidates=candidates, cache=False,
                          log=log.append)  # fmt: skip
            start = time.perf_counter()
            p.predict(texts)  # load + choose + a first run
            predictors[label] = {
                "predictor": p,
                "first_s": time.perf_counter() - start,
                "mode": p.decision.name,
                "log": log,
            }
    runs: dict[str, Callable[[], np.ndarray]] = dict(loops)
    for label, entry in predictors.items():
        runs[label] = lambda p=entry["predictor"]: p.predict(texts).embeddings
    times: dict[str, list[float]] = {n: [] for n in runs}
    outputs: dict[str, np.ndarray] = {}
    names = list(runs)
    for k in range(args.rounds):
        order = names[k % len(names) :] + names[: k % len(names)]
        for name in order:
            start = time.perf_counter()
            outputs[name] = runs[name]()
            times[name].append(time.perf_counter() - start)
        print(f"round {k + 1}: " + ", ".join(f"{n} {times[n][-1]:.1f}s" for n in names), file=sys.stderr, flush=True)
    reference = outputs["eager"]
    rows = {
        name: {
            "median_s": statistics.median(times[name]),
            "rows_per_s": len(texts) / statistics.median(times[name]),
            "cosine_to_eager": cosine_min(outputs[name], reference),
        }
        for name in names
    }
    hand = [n for n in names if not n.startswith("jitcpu")]
    fastest = min(hand, key=lambda n: rows[n]["median_s"])
    for label, entry in predictors.items():
        rows[label]["mode"] = entry["mode"]
        rows[label]["vs_fastest_hand"] = rows[fastest]["median_s"] / rows[label]["median_s"]
        rows[label]["log"] = entry["log"]
        rows[label]["first_s"] = entry["first_s"]
    return {"rows": rows, "fastest_hand": fastest}


def _all_candidates() -> str:
    """Every mode auto can try, listed (so none is cut by the budget), and the deployment runtimes."""
    from pytest_jitcpu.backends import table
    from pytest_jitcpu.inference import selection

    modes = list(selection.auto_modes()) + [m for m in ("onnx", "openvino") if m in table.MODES]
    return ",".join(dict.fromkeys(selection.display(m) for m in modes))


# -- report ---------------------------------------------------------------------------------------------
def markdown(result: dict[str, Any]) -> str:
    c, a = result["cpu"], result["args"]
    lines = [
        "## `jitcpu run --mode auto` vs sentence-transformers, whole processes (all-MiniLM-L6-v2)",
        "",
        f"CPU **{c['name']}** (family {c['family']}, {c['cores']} cores; flags: {', '.join(c['flags'])}; native "
        f"bf16: {c['native_bf16']}), {a['threads']} threads, batch {a['batch_size']}; {a['rows']} real sentences "
        f"(standard-library docstrings, {result['words']} words a sentence); torch {result['torch']}, "
        f"sentence-transformers {result['sentence_transformers']}. A shared machine (load average "
        f"{result['load'][0]:.1f} at start, {result['load'][1]:.1f} at end): compare the ratios of one run.",
        "",
        "| repeat | jitcpu auto s | sentence-transformers s | speed-up | auto setup s (share) | of which choosing s "
        "| floor s (share of auto) | auto mode | min cosine auto vs eager | min cosine st vs eager |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for k, r in enumerate(result["processes"]["repeats"], 1):
        lines.append(
            f"| {k} | {r['auto_s']:.1f} | {r['st_s']:.1f} | {r['speedup']:.2f}x | {r['auto_setup_s']:.1f} "
            f"({r['auto_setup_share']:.0%}) | {r['auto_choice_s']:.2f} | {r['floor_s']:.1f} "
            f"({r['floor_s'] / r['auto_s']:.0%}) | {r['auto_mode']} | {r['auto_cosine_to_eager']:.6f} "
            f"| {r['st_cosine_to_eager']:.6f} |"
        )
    speedups = [r["speedup"] for r in result["processes"]["repeats"]]
    if speedups:
        lines += [
            "",
            "floor: a process that only imports torch and transformers and loads the model and tokenizer, what "
            "any tool running this model pays before its first batch.",
            "",
            f"Median speed-up {statistics.median(speedups):.2f}x. auto's decision (last repeat):",
            "",
            "```",
        ]
        lines += result["processes"]["repeats"][-1]["log"] + ["```", ""]
    ip = result["in_process"]
    lines += [
        f"### In one process: the mode auto picks vs hand-written loops ({a['rounds']} interleaved rounds)",
        "",
        "| loop | median s | rows/s | min cosine vs eager | vs the fastest hand loop |",
        "|---|---|---|---|---|",
    ]
    fastest = ip["rows"][ip["fastest_hand"]]["median_s"]
    for name, r in sorted(ip["rows"].items(), key=lambda kv: kv[1]["median_s"]):
        label = f"{name} -> {r['mode']}" if "mode" in r else name
        lines.append(
            f"| {label} | {r['median_s']:.2f} | {r['rows_per_s']:.0f} | {r['cosine_to_eager']:.6f} | "
            f"{fastest / r['median_s']:.2f}x |"
        )
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="whole-process pairs")
    parser.add_argument("--rounds", type=int, default=3, help="in-process rounds over the corpus")
    parser.add_argument("--no-in-process", action="store_true")
    parser.add_argument("--no-processes", action="store_true", help="only the in-process part")
    parser.add_argument("--results", default=str(HERE / "results"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import sentence_transformers

    texts = corpus.real_sentences(args.rows)
    info = cpu()
    result: dict[str, Any] = {
        "cpu": info,
        "args": vars(args),
        "torch": torch.__version__,
        "sentence_transformers": sentence_transformers.__version__,
        "words": f"{min(len(t.split()) for t in texts)}-{max(len(t.split()) for t in texts)}, median "
        f"{statistics.median(len(t.split()) for t in texts):.0f}",
    }
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="jitcpu-auto-st-") as tmp:
        text = Path(tmp) / "real.txt"
        text.write_text("\n".join(texts) + "\n", encoding="utf-8")
        result["processes"] = {"repeats": []} if args.no_processes else whole_processes(text, Path(tmp), args)
    result["in_process"] = (
        {"rows": {}, "fastest_hand": None} if args.no_in_process else in_process(texts, args, info["native_bf16"])
    )
    result["load"] = (load_start, os.getloadavg()[0])
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    if not args.no_in_process:
        (out / "auto_vs_st.md").write_text(markdown(result), encoding="utf-8")
    (out / "auto_vs_st.json").write_text(json.dumps(result, indent=1, default=str), encoding="utf-8")
    print(markdown(result) if not args.no_in_process else json.dumps(result["processes"], indent=1, default=str))


if __name__ == "__main__":
    main()
