"""`jitcpu run --mode auto --min-cosine 0.99` against sentence-transformers and plain jitcpu runs, as whole
processes on real sentences (benchmarks/corpus.py --real), side by side in one run, the order rotating each
repeat; every output row checked against an fp32 reference computed separately (sentence-transformers'
own fp32 `encode` in its own process and venv).

Processes per repeat:
  - ``auto+budget``: ``jitcpu run --mode auto --min-cosine 0.99`` (no decision cache: a first run);
  - ``auto+budget, int8 named``: the same with ``--candidates eager,onnx-int8,openvino-int8`` (int8 tried
    whatever the input's size);
  - ``auto``: ``jitcpu run --mode auto`` without a budget (no int8);
  - ``eager fp32``: ``jitcpu run --mode eager --dtype fp32``;
  - ``st``: ``python benchmarks/baselines.py st`` in ``--st-python`` (a venv with sentence-transformers and
    the same torch): imports, load, encode, the whole process timed from outside. Its output is the fp32
    reference for every row of every other process.

    python benchmarks/quant.py --rows 3000 --threads 2 --repeats 2 --st-python /work/venvs/bench-quant/bin/python
Writes benchmarks/results/quant.md and quant.json.
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
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import corpus  # noqa: E402 - sibling script
from auto_vs_st import cpu  # noqa: E402

BUDGET = "0.99"


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


def _timed(cmd: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    env = {**os.environ, "JITCPU_CACHE": "off", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    took = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return took, proc


def runs(args: argparse.Namespace, text: Path, work: Path) -> dict[str, list[str]]:
    jitcpu = [sys.executable, "-m", "pytest_jitcpu.cli", "run", "--input", str(text), "--threads", str(args.threads)]
    return {
        "auto+budget": [*jitcpu, "--mode", "auto", "--min-cosine", BUDGET],
        "auto+budget, int8 named": [
            *jitcpu,
            "--mode",
            "auto",
            "--min-cosine",
            BUDGET,
            "--candidates",
            "eager,onnx-int8,openvino-int8",
        ],
        "auto": [*jitcpu, "--mode", "auto"],
        "eager fp32": [*jitcpu, "--mode", "eager", "--dtype", "fp32"],
        "st": [args.st_python, str(HERE / "baselines.py"), "st", "--input", str(text), "--threads", str(args.threads)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--st-python", default="/work/venvs/bench-quant/bin/python")
    parser.add_argument("--out", default=str(HERE / "results" / "quant"))
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="jitcpu-quant-"))
    text = work / "real.txt"
    text.write_text("\n".join(corpus.real_sentences(args.rows)) + "\n", encoding="utf-8")
    commands = runs(args, text, work)
    names = list(commands)
    load_start = os.getloadavg()[0]
    times: dict[str, list[float]] = {n: [] for n in names}
    outputs: dict[str, np.ndarray] = {}
    logs: dict[str, str] = {}
    summaries: dict[str, dict[str, Any]] = {}
    for r in range(args.repeats):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            out = work / f"{r}-{names.index(name)}.npy"
            cmd = [*commands[name], "--output", str(out)]
            if name != "st":
                cmd += ["--summary", str(out.with_suffix(".json"))]
            took, proc = _timed(cmd)
            times[name].append(took)
            outputs[name] = np.load(out)
            logs[name] = proc.stderr
            if name != "st":
                summaries[name] = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
            print(f"repeat {r + 1} {name}: {took:.1f} s", flush=True)
    reference = outputs["st"]
    st_s = statistics.median(times["st"])
    rows = []
    for name in names:
        cos = cosines(outputs[name], reference)
        s = summaries.get(name, {})
        rows.append(
            {
                "run": name,
                "seconds": times[name],
                "median_s": statistics.median(times[name]),
                "vs_st": st_s / statistics.median(times[name]),
                "mode": f"{s.get('mode')}/{s.get('dtype')}" if s else "sentence-transformers fp32",
                "min_cosine_vs_st_fp32": float(cos.min()),
                "p1_cosine": float(np.percentile(cos, 1)),
                "rows_under_budget": int((cos < float(BUDGET)).sum()),
                "gate": s.get("gate"),
                "choice_s": s.get("choice_s"),
                "setup_s": s.get("setup_s"),
            }
        )
    result = {
        "cpu": cpu(),
        "rows": len(reference),
        "threads": args.threads,
        "repeats": args.repeats,
        "load_average": [load_start, os.getloadavg()[0]],
        "runs": rows,
        "logs": logs,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    Path(args.out + ".md").write_text(markdown(result), encoding="utf-8")
    print(markdown(result))


def markdown(result: dict[str, Any]) -> str:
    c = result["cpu"]
    lines = [
        "## int8 behind an accuracy budget: `jitcpu run --mode auto --min-cosine 0.99`, whole processes",
        "",
        f"CPU **{c['name']}** (family {c['family']}, {c['cores']} cores; flags: {', '.join(c['flags'])}), "
        f"{result['threads']} threads; {result['rows']} real sentences (benchmarks/corpus.py --real); "
        f"{result['repeats']} repeats, order rotating. Load average {result['load_average'][0]:.1f} at start, "
        f"{result['load_average'][1]:.1f} at end (a shared machine: compare ratios of one run).",
        "",
        "Every row of every output is compared with sentence-transformers' fp32 `encode` (its own process).",
        "",
        "| run | median s | vs sentence-transformers | mode | min cosine vs ST fp32 | p1 | rows < 0.99 | gate (pick) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["runs"]:
        g = r["gate"]
        gate = f"worst {g['worst']:.4f}, p1 {g['p1']:.4f}, {g['rows']} rows" if g else "-"
        lines.append(
            f"| {r['run']} | {r['median_s']:.1f} | {r['vs_st']:.2f}x | {r['mode']} | "
            f"{r['min_cosine_vs_st_fp32']:.4f} | {r['p1_cosine']:.4f} | {r['rows_under_budget']} | {gate} |"
        )
    for name in ("auto+budget", "auto+budget, int8 named"):
        lines += ["", f"`{name}` log (last repeat):", "", "```", result["logs"].get(name, "").rstrip(), "```"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
