"""Peak memory (RSS) of ``jitcpu run`` for a small and a large input: streaming means it stays flat.

Each run is its own process, which reports its own ``ru_maxrss``. Short sentences (3-12 words) keep the
20k-row run affordable on 2 cores; the window of rows held at once is the same for both.

    python benchmarks/memory.py --small 1000 --large 20000
Writes benchmarks/results/memory.md and memory.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import corpus  # noqa: E402 - the sibling script

CHILD = """
import json, resource, sys
from pytest_jitcpu.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def measure(rows: int, work: Path, args: argparse.Namespace, output_suffix: str) -> dict:
    text = corpus.write(work / f"corpus-{rows}.txt", rows, args.min_words, args.max_words, seed=1)
    out = work / f"out-{rows}{output_suffix}"
    summary = work / f"summary-{rows}.json"
    cmd = [sys.executable, "-c", CHILD, "run", "--input", str(text), "--output", str(out)]
    cmd += ["--mode", args.mode, "--threads", str(args.threads), "--summary", str(summary)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    child = json.loads(proc.stdout.strip().splitlines()[-1])
    data = json.loads(summary.read_text(encoding="utf-8"))
    return {
        "rows": rows,
        "output": output_suffix,
        "peak_rss_mb": child["maxrss_kb"] / 1024,
        "input_mb": text.stat().st_size / 1e6,
        "output_mb": out.stat().st_size / 1e6,
        "rows_per_s": data["rows_per_s"],
        "process_s": time.perf_counter() - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=1000)
    parser.add_argument("--large", type=int, default=20000)
    parser.add_argument("--min-words", type=int, default=3)
    parser.add_argument("--max-words", type=int, default=12)
    parser.add_argument("--mode", default="eager")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--outputs", default=".npy,.jsonl")
    parser.add_argument("--results", default=str(HERE / "results"))
    args = parser.parse_args()
    from pytest_jitcpu.environment import environment

    env = environment()
    env["load_average"] = os.getloadavg()
    results = []
    with tempfile.TemporaryDirectory(prefix="jitcpu-mem-") as tmp:
        for suffix in args.outputs.split(","):
            for rows in (args.small, args.large):
                results.append(measure(rows, Path(tmp), args, suffix))
                print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    report = {"benchmark": "memory", "environment": env, "settings": vars(args), "results": results}
    out_dir = Path(args.results)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "memory.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    lines = [
        "## Peak memory: 1k vs 20k rows",
        "",
        f"`jitcpu run` (embedded MiniLM, --mode {args.mode}, {args.threads} threads), sentences of "
        f"{args.min_words}-{args.max_words} words; CPU {env['cpu']} ({env['isa']}). Peak RSS is the process's ru_maxrss.",
        "",
        "| rows | output | input MB | output MB | peak RSS MB | rows/s (overall, incl. load) |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['rows']} | {r['output']} | {r['input_mb']:.2f} | {r['output_mb']:.1f} | {r['peak_rss_mb']:.0f} | "
            f"{r['rows_per_s']:.0f} |"
        )
    for suffix in args.outputs.split(","):
        pair = [r for r in results if r["output"] == suffix]
        if len(pair) == 2:
            growth = pair[1]["peak_rss_mb"] - pair[0]["peak_rss_mb"]
            lines.append("")
            lines.append(
                f"{suffix}: {pair[1]['rows'] // pair[0]['rows']}x the rows, peak RSS {growth:+.0f} MB "
                f"({pair[1]['peak_rss_mb'] / pair[0]['peak_rss_mb']:.2f}x)."
            )
    (out_dir / "memory.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
