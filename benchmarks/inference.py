"""Throughput of jitcpu inference per mode on the real all-MiniLM-L6-v2 vs a hand-written transformers loop
and sentence-transformers' ``encode``, with every variant's embeddings checked against the independent
eager reference (the hand loop: cosine).

The machine these numbers come from may be shared, so absolute speed drifts from minute to minute. The
comparison therefore runs in one process, interleaved: the corpus is cut into chunks (default 256 rows)
and every variant processes each chunk in turn (rotating who goes first), so a busy minute slows all
variants alike; totals and per-chunk ratios are reported. Model loading, tracing and the ``auto`` choice
happen once, on a separate warm-up chunk, and are reported as setup. Then the real command,
``jitcpu run --mode auto`` on the whole corpus file, runs end to end in its own process.

    python benchmarks/inference.py --rows 2000 --threads 2
Writes benchmarks/results/inference.md and inference.json.
"""

from __future__ import annotations

import argparse
import functools
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

DEFAULT_VARIANTS = "hand,hand-sorted,st,jitcpu-eager,jitcpu-trace,jitcpu-auto"


def machine() -> dict:
    from pytest_jitcpu.environment import environment

    env = environment()
    env["load_average"] = os.getloadavg()
    try:
        import sentence_transformers

        env["sentence_transformers"] = sentence_transformers.__version__
    except ImportError:
        env["sentence_transformers"] = None
    return env


def _embeddings(predictor: Any, texts: list[str]) -> np.ndarray:
    return predictor.predict(texts).embeddings


def make_variants(
    names: list[str], args: argparse.Namespace
) -> dict[str, tuple[Callable[[list[str]], np.ndarray], dict]]:
    """name -> (encode(texts) -> embeddings, info incl. setup seconds)."""
    from pytest_jitcpu.inference import Predictor

    out: dict[str, tuple[Callable[[list[str]], np.ndarray], dict]] = {}
    hand = None
    for name in names:
        start = time.perf_counter()
        info: dict = {}
        if name in ("hand", "hand-sorted"):
            hand = hand or baselines.HandLoop(args.batch_size, args.max_seq_length)
            fn = functools.partial(hand.encode, by_length=name == "hand-sorted")
        elif name == "st":
            st = baselines.SentenceTransformersEncode(args.batch_size, args.max_seq_length)
            fn = st.encode
        elif name.startswith("jitcpu-"):
            log: list[str] = []
            mode = name.split("-", 1)[1]
            predictor = Predictor(
                None,
                "feature-extraction",
                mode=mode,
                batch_size=args.batch_size,
                max_seq_length=args.max_seq_length,
                window=args.chunk,
                log=log.append,
            )
            predictor.predict(list(corpus.sentences(args.chunk, 5, 120, seed=99)))  # build, check, choose
            info["mode"] = predictor.decision.name if predictor.decision else None
            info["decision"] = predictor.decision.reason if predictor.decision else None
            info["log"] = [line for line in log if not line.startswith("jitcpu: task")]
            fn = functools.partial(_embeddings, predictor)
        else:
            raise SystemExit(f"unknown variant {name!r}")
        info["setup_s"] = time.perf_counter() - start
        out[name] = (fn, info)
        print(f"{name}: ready in {info['setup_s']:.1f} s", file=sys.stderr, flush=True)
    return out


def interleaved(variants: dict, texts: list[str], chunk: int) -> dict[str, dict]:
    names = list(variants)
    seconds = dict.fromkeys(names, 0.0)
    per_chunk: dict[str, list[float]] = {n: [] for n in names}
    outputs: dict[str, list[np.ndarray]] = {n: [] for n in names}
    chunks = [texts[i : i + chunk] for i in range(0, len(texts), chunk)]
    for k, part in enumerate(chunks):
        order = names[k % len(names) :] + names[: k % len(names)]
        for name in order:
            start = time.perf_counter()
            emb = variants[name][0](part)
            took = time.perf_counter() - start
            seconds[name] += took
            per_chunk[name].append(took)
            outputs[name].append(emb)
        print(
            f"chunk {k + 1}/{len(chunks)}: " + ", ".join(f"{n} {per_chunk[n][-1]:.1f}s" for n in names),
            file=sys.stderr,
            flush=True,
        )
    results = {}
    for name in names:
        results[name] = {
            "name": name,
            "seconds": seconds[name],
            "rows_per_s": len(texts) / seconds[name],
            "per_chunk_s": per_chunk[name],
            "embeddings": np.concatenate(outputs[name]),
            **{k: v for k, v in variants[name][1].items()},
        }
    return results


def cosine_min(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float((a * b).sum(1).min())


def ratio(results: dict, fast: str, slow: str) -> dict | None:
    """Speed of ``fast`` over ``slow``: on the totals, and the median of the per-chunk ratios."""
    if fast not in results or slow not in results:
        return None
    a, b = results[fast], results[slow]
    chunks = [s / f for f, s in zip(a["per_chunk_s"], b["per_chunk_s"], strict=True)]
    return {"total": b["seconds"] / a["seconds"], "median_chunk": statistics.median(chunks)}


def cli_run(text: Path, work: Path, args: argparse.Namespace) -> dict:
    out, summary = work / "cli.npy", work / "cli-summary.json"
    cmd = [sys.executable, "-m", "pytest_jitcpu.cli", "run", "--input", str(text), "--output", str(out)]
    cmd += ["--threads", str(args.threads), "--batch-size", str(args.batch_size), "--mode", "auto"]
    cmd += ["--max-seq-length", str(args.max_seq_length), "--summary", str(summary)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    process_s = time.perf_counter() - start
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-3:]}
    data = json.loads(summary.read_text(encoding="utf-8"))
    data["process_s"] = process_s
    data["command"] = "jitcpu run " + " ".join(cmd[4:]).replace(str(work) + "/", "")
    data["log"] = [line for line in proc.stderr.splitlines() if line.startswith(("jitcpu", "  "))]
    data["embeddings"] = np.load(out)
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--min-words", type=int, default=5)
    parser.add_argument("--max-words", type=int, default=120)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--chunk", type=int, default=256, help="rows per interleaved chunk (and jitcpu's window)")
    parser.add_argument("--variants", default=DEFAULT_VARIANTS, help="also: jitcpu-export, jitcpu-compile")
    parser.add_argument("--no-cli", action="store_true", help="skip the end-to-end `jitcpu run` process")
    parser.add_argument("--results", default=str(HERE / "results"))
    parser.add_argument("--name", default="inference", help="results file stem")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    began = time.perf_counter()
    env = machine()
    names = [v for v in args.variants.split(",") if v]
    if env["sentence_transformers"] is None and "st" in names:
        names.remove("st")
        print("sentence-transformers is not installed: its encode() is left out", file=sys.stderr)
    texts = list(corpus.sentences(args.rows, args.min_words, args.max_words))
    from pytest_jitcpu.inference import models

    with models.quiet_transformers():
        variants = make_variants(names, args)
        results = interleaved(variants, texts, args.chunk)
    reference = results["hand"]["embeddings"] if "hand" in results else None
    eager = results["jitcpu-eager"]["embeddings"] if "jitcpu-eager" in results else None
    cli = None
    if not args.no_cli:
        with tempfile.TemporaryDirectory(prefix="jitcpu-bench-") as tmp:
            text = corpus.write(Path(tmp) / "corpus.txt", args.rows, args.min_words, args.max_words)
            cli = cli_run(text, Path(tmp), args)
    for r in [*results.values(), *([cli] if cli and "error" not in cli else [])]:
        if reference is not None:
            r["cosine_min_vs_hand"] = cosine_min(r["embeddings"], reference)
        if eager is not None:
            r["cosine_min_vs_jitcpu_eager"] = cosine_min(r["embeddings"], eager)
        r.pop("embeddings", None)
    modes = [n for n in results if n.startswith("jitcpu-") and n != "jitcpu-auto"]
    fastest = max(modes, key=lambda n: results[n]["rows_per_s"], default=None)
    ratios = {
        "engine_overhead_eager_vs_hand_sorted": ratio(results, "hand-sorted", "jitcpu-eager"),
        "jitcpu_eager_vs_hand": ratio(results, "jitcpu-eager", "hand"),
        "jitcpu_trace_vs_jitcpu_eager": ratio(results, "jitcpu-trace", "jitcpu-eager"),
        "fastest_mode": fastest,
        "fastest_mode_vs_jitcpu_eager": ratio(results, fastest, "jitcpu-eager") if fastest else None,
        "fastest_mode_vs_hand": ratio(results, fastest, "hand") if fastest else None,
        "jitcpu_auto_vs_hand": ratio(results, "jitcpu-auto", "hand"),
        "jitcpu_auto_vs_st": ratio(results, "jitcpu-auto", "st"),
        "st_vs_hand": ratio(results, "st", "hand"),
    }
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
            "chunk": args.chunk,
            "seconds": time.perf_counter() - began,
        },
        "results": list(results.values()),
        "ratios": ratios,
        "cli": cli,
    }
    out_dir = Path(args.results)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{args.name}.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out_dir / f"{args.name}.md").write_text(markdown(report), encoding="utf-8")
    print(markdown(report))


def _ratio_text(value: dict | None) -> str:
    if not value:
        return "-"
    return f"{value['total']:.2f}x (median per chunk {value['median_chunk']:.2f}x)"


def markdown(report: dict) -> str:
    env, s = report["environment"], report["settings"]
    lines = [
        "## Inference throughput: all-MiniLM-L6-v2 sentence embeddings",
        "",
        f"{s['rows']} sentences of {s['words'][0]}-{s['words'][1]} words (benchmarks/corpus.py, seed 0), "
        f"batch {s['batch_size']}, max_seq_length {s['max_seq_length']}, {s['threads']} threads; variants "
        f"interleaved chunk by chunk ({s['chunk']} rows a chunk) in one process; {s['seconds']:.0f} s in all.",
        f"CPU {env['cpu']} ({env['isa']}, native bf16: {env['bf16_native']}), torch {env['torch']}, "
        f"transformers {env['transformers']}, sentence-transformers {env['sentence_transformers']}; "
        f"load average {env['load_average'][0]:.1f} at start, {env['load_average_end'][0]:.1f} at end "
        "(a shared machine: absolute numbers drift, the ratios of one run are what to compare).",
        "",
        "| variant | rows/s (total) | rows/s (median chunk) | vs hand loop (median chunk) | setup s "
        "| min cosine vs hand loop | vs jitcpu eager | mode used |",
        "|---|---|---|---|---|---|---|---|",
    ]
    results = {r["name"]: r for r in report["results"]}
    hand = results.get("hand")
    for name, r in results.items():
        vs = "-"
        if hand:
            chunks = [h / x for h, x in zip(hand["per_chunk_s"], r["per_chunk_s"], strict=True)]
            vs = f"{statistics.median(chunks):.2f}x"
        median_rate = s["chunk"] / statistics.median(r["per_chunk_s"])
        setup = f"{r['setup_s']:.1f}" if "setup_s" in r else "-"
        cos = f"{r['cosine_min_vs_hand']:.6f}" if "cosine_min_vs_hand" in r else "-"
        cos_eager = f"{r['cosine_min_vs_jitcpu_eager']:.6f}" if "cosine_min_vs_jitcpu_eager" in r else "-"
        lines.append(
            f"| {name} | {r['rows_per_s']:.1f} | {median_rate:.1f} | {vs} | {setup} | {cos} | {cos_eager} "
            f"| {r.get('mode') or '-'} |"
        )
    lines += ["", "Ratios (speed of the first over the second, same run):", ""]
    for key, value in report["ratios"].items():
        if value is None:
            continue
        if key == "fastest_mode":
            lines.append(f"- fastest jitcpu mode: {value}")
        elif key == "engine_overhead_eager_vs_hand_sorted":
            if value:
                lines.append(
                    f"- engine overhead, jitcpu eager vs the hand loop over the same length-sorted batches: "
                    f"{(value['total'] - 1) * 100:+.1f}% time (median per chunk {(value['median_chunk'] - 1) * 100:+.1f}%)"
                )
        else:
            lines.append(f"- {key}: {_ratio_text(value)}")
    auto = results.get("jitcpu-auto")
    if auto and auto.get("log"):
        lines += ["", "`auto` on the warm-up chunk said:", "", "```", *auto["log"], "```"]
    cli = report.get("cli")
    if cli and "error" not in cli:
        lines += [
            "",
            f"End to end, in its own process: `{cli['command']}`",
            "",
            f"- {cli['rows']} rows in {cli['wall_s']:.1f} s (process {cli['process_s']:.1f} s): "
            f"{cli['rows_per_s']:.1f} rows/s overall, {cli['rows'] / (cli['wall_s'] - cli['setup_s']):.1f} rows/s "
            f"after {cli['setup_s']:.1f} s setup (load + mode choice); batch latency p50 {cli['p50_ms']:.0f} ms, "
            f"p95 {cli['p95_ms']:.0f} ms; mode {cli['mode']}/{cli['dtype']}; min cosine vs hand loop "
            f"{cli.get('cosine_min_vs_hand', float('nan')):.6f}",
            "",
            "```",
            *cli["log"],
            "```",
        ]
    elif cli:
        lines += ["", f"End-to-end run failed: {cli['error']}"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
