"""Throughput of ``jitcpu run`` per mode on the real all-MiniLM-L6-v2 vs a hand-written transformers loop and
sentence-transformers' ``encode``, with every variant's embeddings checked against the independent eager
reference (cosine). All variants run in the same invocation, as separate processes, on the same corpus
and thread count; with ``--rounds`` > 1 they are interleaved and each keeps its best round (the machine
may be shared: compare the ratios of one run, not absolute numbers across runs).

    python benchmarks/inference.py --rows 2000 --threads 2
Writes benchmarks/results/inference.md and inference.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import corpus  # noqa: E402 - the sibling script

RESULTS = HERE / "results"
JITCPU_MODES = ("eager", "trace", "auto")  # add jitcpu-export / jitcpu-compile with --variants


def machine() -> dict:
    from pytest_jitcpu.environment import environment

    env = environment()
    env["load_average"] = os.getloadavg()
    env["platform"] = platform.platform()
    try:
        import sentence_transformers

        env["sentence_transformers"] = sentence_transformers.__version__
    except ImportError:
        env["sentence_transformers"] = None
    return env


def run_variant(name: str, text: Path, work: Path, args: argparse.Namespace) -> dict:
    out, summary = work / f"{name}.npy", work / f"{name}.json"
    common = ["--threads", str(args.threads), "--batch-size", str(args.batch_size)]
    if name.startswith("jitcpu-"):
        mode = name.split("-", 1)[1]
        cmd = [sys.executable, "-m", "pytest_jitcpu.cli", "run", "--input", str(text), "--output", str(out)]
        cmd += [*common, "--mode", mode, "--max-seq-length", str(args.max_seq_length), "--summary", str(summary)]
    else:
        cmd = [sys.executable, str(HERE / "baselines.py"), name, "--input", str(text), "--output", str(out)]
        cmd += [*common, "--max-seq-length", str(args.max_seq_length), "--summary", str(summary)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    process_s = time.perf_counter() - start
    if proc.returncode != 0:
        return {"name": name, "error": proc.stderr.strip().splitlines()[-3:]}
    data = json.loads(summary.read_text(encoding="utf-8"))
    result = {"name": name, "process_s": process_s, "output": str(out)}
    if name.startswith("jitcpu-"):
        busy = data["wall_s"] - data["setup_s"]
        result.update(
            rows=data["rows"],
            inference_s=busy,
            setup_s=data["setup_s"],
            rows_per_s=data["rows"] / busy,
            mode=f"{data['mode']}/{data['dtype']}",
            decision=data["decision"],
            p50_ms=data["p50_ms"],
            p95_ms=data["p95_ms"],
        )
        result["log"] = [line for line in proc.stderr.splitlines() if line.startswith(("jitcpu", "  "))]
    else:
        result.update(rows=data["rows"], inference_s=data["loop_s"], setup_s=None, rows_per_s=data["rows_per_s"])
    return result


def cosine_min(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float((a * b).sum(1).min())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--min-words", type=int, default=5)
    parser.add_argument("--max-words", type=int, default=120)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--variants", default=",".join([f"jitcpu-{m}" for m in JITCPU_MODES] + ["hand", "hand-sorted", "st"])
    )
    parser.add_argument("--results", default=str(RESULTS))
    args = parser.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    env = machine()
    if env["sentence_transformers"] is None and "st" in variants:
        variants.remove("st")
        print("sentence-transformers is not installed: its encode() is left out", file=sys.stderr)
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="jitcpu-bench-") as tmp:
        work = Path(tmp)
        text = corpus.write(work / "corpus.txt", args.rows, args.min_words, args.max_words)
        best: dict[str, dict] = {}
        spread: dict[str, list[float]] = {}
        for r in range(args.rounds):
            order = variants[r % len(variants) :] + variants[: r % len(variants)]  # rotate: no fixed slot
            for name in order:
                result = run_variant(name, text, work, args)
                print(json.dumps({k: v for k, v in result.items() if k != "log"}), file=sys.stderr, flush=True)
                if "rows_per_s" in result:
                    spread.setdefault(name, []).append(round(result["rows_per_s"], 2))
                if "error" in result:
                    best.setdefault(name, result)
                elif name not in best or "error" in best[name] or result["rows_per_s"] > best[name]["rows_per_s"]:
                    best[name] = result
        reference_name = "hand" if "hand" in best and "error" not in best["hand"] else None
        reference = np.load(best[reference_name]["output"]) if reference_name else None
        for result in best.values():
            result["rows_per_s_rounds"] = spread.get(result["name"], [])
            if "error" not in result and reference is not None:
                result["cosine_min_vs_hand"] = cosine_min(np.load(result["output"]), reference)
            result.pop("output", None)
    env["load_average_end"] = os.getloadavg()
    report = {
        "benchmark": "inference",
        "environment": env,
        "settings": {
            "rows": args.rows,
            "words": [args.min_words, args.max_words],
            "threads": args.threads,
            "batch_size": args.batch_size,
            "max_seq_length": args.max_seq_length,
            "rounds": args.rounds,
            "seconds": time.perf_counter() - began,
        },
        "results": list(best.values()),
        "ratios": ratios(best),
    }
    out_dir = Path(args.results)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "inference.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out_dir / "inference.md").write_text(markdown(report), encoding="utf-8")
    print(markdown(report))


def _rate(best: dict[str, dict], name: str) -> float | None:
    result = best.get(name)
    return None if result is None or "error" in result else result["rows_per_s"]


def ratios(best: dict[str, dict]) -> dict:
    eager, hand, hand_sorted = _rate(best, "jitcpu-eager"), _rate(best, "hand"), _rate(best, "hand-sorted")
    modes = {n: _rate(best, n) for n in best if n.startswith("jitcpu-") and n != "jitcpu-auto"}
    fastest = max((n for n in modes if modes[n]), key=lambda n: modes[n], default=None)
    auto = best.get("jitcpu-auto", {})
    out: dict = {}
    if eager and hand_sorted:
        out["engine_overhead_eager_vs_hand_sorted"] = hand_sorted / eager - 1  # > 0: jitcpu is slower
    if eager and hand:
        out["eager_bucketed_vs_hand"] = eager / hand
    if fastest and eager:
        out["fastest_mode"] = fastest
        out["fastest_mode_vs_jitcpu_eager"] = modes[fastest] / eager
    if fastest and hand:
        out["fastest_mode_vs_hand"] = modes[fastest] / hand
    if auto.get("rows_per_s") and hand:
        out["auto_mode"] = auto.get("mode")
        out["auto_vs_hand"] = auto["rows_per_s"] / hand
        out["auto_vs_jitcpu_eager"] = auto["rows_per_s"] / eager if eager else None
    if _rate(best, "st") and hand:
        out["st_vs_hand"] = _rate(best, "st") / hand
        if auto.get("rows_per_s"):
            out["auto_vs_st"] = auto["rows_per_s"] / _rate(best, "st")
    return out


def markdown(report: dict) -> str:
    env, s = report["environment"], report["settings"]
    lines = [
        "## Inference throughput: all-MiniLM-L6-v2 sentence embeddings",
        "",
        f"{s['rows']} sentences of {s['words'][0]}-{s['words'][1]} words (benchmarks/corpus.py, seed 0), "
        f"batch {s['batch_size']}, max_seq_length {s['max_seq_length']}, {s['threads']} threads, "
        f"best of {s['rounds']} round(s), {s['seconds']:.0f} s in all.",
        f"CPU {env['cpu']} ({env['isa']}, native bf16: {env['bf16_native']}), torch {env['torch']}, "
        f"transformers {env['transformers']}, sentence-transformers {env['sentence_transformers']}; "
        f"load average {env['load_average'][0]:.1f} at start, {env['load_average_end'][0]:.1f} at end "
        "(shared machine: compare ratios within this run).",
        "",
        "| variant | rows/s (inference, best round) | vs hand loop | all rounds | setup s | p50 / p95 batch ms "
        "| min cosine vs hand | mode |",
        "|---|---|---|---|---|---|---|---|",
    ]
    hand = next((r["rows_per_s"] for r in report["results"] if r["name"] == "hand" and "error" not in r), None)
    for r in report["results"]:
        if "error" in r:
            lines.append(f"| {r['name']} | error: {' '.join(r['error'])[:200]} | | | | | | |")
            continue
        lat = f"{r['p50_ms']:.0f} / {r['p95_ms']:.0f}" if r.get("p50_ms") else "-"
        setup = f"{r['setup_s']:.1f}" if r.get("setup_s") is not None else "-"
        vs = f"{r['rows_per_s'] / hand:.2f}x" if hand else "-"
        cos = f"{r['cosine_min_vs_hand']:.6f}" if "cosine_min_vs_hand" in r else "-"
        rounds = ", ".join(f"{x:.1f}" for x in r.get("rows_per_s_rounds", []))
        lines.append(
            f"| {r['name']} | {r['rows_per_s']:.1f} | {vs} | {rounds} | {setup} | {lat} | {cos} | {r.get('mode', '-')} |"
        )
    lines += ["", "Ratios (same run):", ""]
    for key, value in report["ratios"].items():
        lines.append(f"- {key}: {value:.3f}" if isinstance(value, float) else f"- {key}: {value}")
    auto = next((r for r in report["results"] if r["name"] == "jitcpu-auto" and "log" in r), None)
    if auto:
        lines += ["", "`--mode auto` said:", "", "```", *auto["log"], "```"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
