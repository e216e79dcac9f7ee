"""`jitcpu run` on one process vs `jitcpu run --ray` on a Ray cluster, on the embedded all-MiniLM-L6-v2 and a few
thousand sentences from corpus.py, in one run and on one machine:

- single: ``jitcpu run --threads 2`` (one process, the whole machine);
- ray-1x2: ``jitcpu run --ray ADDRESS --actors 1 --threads 2``;
- ray-2x1: ``jitcpu run --ray ADDRESS --actors 2 --threads 1``.

Every variant is the real command in its own process, ``--mode auto`` (each decides its mode itself: the Ray
driver once, on a sample), writing one merged JSONL in input order. A Ray cluster is started once beforehand
(``ray start --head`` on loopback, as a real cluster would be) so the Ray runs pay what a job on a running
cluster pays: connecting, Ray Data's plan, the actors' model load and mode check. The variants run in
rotation, ``--rounds`` times, so a busy minute on a shared machine slows them alike; medians are reported, and
every Ray output is checked against the single process's (same ids in the same order, cosine per row).

The figure is end-to-end rows/s: the wall time of the whole command, from process start to the renamed
output file, model load and mode choice included (each Ray actor loads the model and checks its mode too).

    python benchmarks/ray_scaling.py --rows 3000 --rounds 2
Writes benchmarks/results/ray_scaling.md and ray_scaling.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
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

VARIANTS: dict[str, list[str]] = {
    "single": ["--threads", "2"],
    "ray-1x2": ["--ray", "{address}", "--actors", "1", "--threads", "2"],
    "ray-2x1": ["--ray", "{address}", "--actors", "2", "--threads", "1"],
}


def machine() -> dict[str, Any]:
    from pytest_jitcpu.environment import environment

    env = environment()  # names the CPU from /proc/cpuinfo, now
    env["load_average"] = os.getloadavg()
    import ray

    env["ray"] = ray.__version__
    return env


def start_cluster(work: Path) -> tuple[subprocess.Popen, str, dict[str, str]]:
    """``ray start --head --block`` on loopback with 2 CPUs, in its own process group (stopped by
    :func:`stop_cluster`, never with ``ray stop``, which would stop every Ray on a shared machine)."""
    # Token auth off for this loopback cluster: its token lives in ~/.ray/auth_token, which other people's
    # clusters on a shared machine (same user) rewrite. A real cluster keeps it on (see the README).
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    ray = shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"
    with socket.socket() as probe:  # a free port: other people's clusters on this machine keep theirs
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cmd = [ray, "start", "--head", "--block", "--num-cpus", "2", "--include-dashboard", "false"]
    cmd += ["--port", str(port), "--temp-dir", str(work / "ray")]
    with open(work / "ray-start.log", "w") as log:  # the head keeps its own copy of the handle
        head = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        text = (work / "ray-start.log").read_text(encoding="utf-8", errors="replace")
        if head.poll() is not None:
            raise SystemExit(f"ray start failed: {text[-2000:]}")
        found = re.search(r"ray start --address='([^']+)'", text)  # the head's own IP and our port
        if found:
            return head, found.group(1), env
        time.sleep(1)
    stop_cluster(head)
    raise SystemExit("the Ray head did not come up within 180 s")


def stop_cluster(head: subprocess.Popen) -> None:
    os.killpg(head.pid, signal.SIGTERM)  # the group this script started for the head node
    try:
        head.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, signal.SIGKILL)
        head.wait()


def run_variant(name: str, text: Path, work: Path, address: str, env: dict[str, str], k: int) -> dict[str, Any]:
    out = work / f"{name}-{k}.jsonl"
    summary = work / f"{name}-{k}.summary.json"
    extra = [a.format(address=address) for a in VARIANTS[name]]
    cmd = [sys.executable, "-m", "pytest_jitcpu.cli", "run", "--input", str(text), "--output", str(out)]
    cmd += ["--mode", "auto", "--summary", str(summary), "--no-progress", *extra]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        return {"name": name, "error": proc.stderr[-2000:]}
    s = json.loads(summary.read_text(encoding="utf-8"))
    final = next(
        line for line in reversed(proc.stderr.splitlines()) if line.startswith("jitcpu run: ") and "rows" in line
    )
    return {
        "name": name,
        "rows": s["rows"],
        "process_wall_s": wall,
        "rows_per_s": s["rows"] / wall,
        "first_output_s": s.get("first_output_s"),
        "mode": f"{s['mode']}/{s['dtype']}",
        "actors": s.get("actors"),
        "threads_per_actor": s.get("threads_per_actor"),
        "final_line": final,
        "output": str(out),
    }


def read_jsonl(path: str) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def agreement(single: str, other: str) -> dict[str, Any]:
    a, b = read_jsonl(single), read_jsonl(other)
    same = len(a) == len(b) and [r["line"] for r in b] == list(range(1, len(a) + 1))  # one process: in order
    x = np.array([r["embedding"] for r in a], dtype=np.float64)
    y = np.array([r["embedding"] for r in b], dtype=np.float64)
    cos = (x * y).sum(1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1))
    return {"same_rows_in_order": same, "cosine_min": float(cos.min())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--results", default=str(HERE / "results"))
    parser.add_argument("--name", default="ray_scaling")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="jitcpu-ray-bench-"))
    text = corpus.write(work / "corpus.txt", args.rows, min_words=5, max_words=60)
    env_before = machine()
    head, address, env = start_cluster(work)
    runs: list[dict[str, Any]] = []
    try:
        for k in range(args.rounds):
            order = list(VARIANTS)
            order = order[k % len(order) :] + order[: k % len(order)]  # rotate who goes first
            for name in order:
                r = run_variant(name, text, work, address, env, k)
                print(json.dumps({key: v for key, v in r.items() if key != "output"}), flush=True)
                runs.append(r)
    finally:
        stop_cluster(head)
    failed = [r for r in runs if "error" in r]
    if failed:
        raise SystemExit(f"{failed[0]['name']} failed:\n{failed[0]['error']}")
    results = {}
    reference = next(r["output"] for r in runs if r["name"] == "single")
    for name in VARIANTS:
        mine = [r for r in runs if r["name"] == name]
        results[name] = {
            "name": name,
            "runs": len(mine),
            "rows": mine[0]["rows"],
            "rows_per_s": statistics.median(r["rows_per_s"] for r in mine),
            "process_wall_s": statistics.median(r["process_wall_s"] for r in mine),
            "modes": sorted({r["mode"] for r in mine}),
            "final_line": mine[-1]["final_line"],
        }
        if name != "single":
            results[name]["vs_single"] = agreement(reference, mine[-1]["output"])
    single = results["single"]
    for r in results.values():
        r["end_to_end_vs_single"] = r["rows_per_s"] / single["rows_per_s"]
    best = max((r for n, r in results.items() if n != "single"), key=lambda r: r["rows_per_s"])
    report = {
        "environment": env_before,
        "load_average_after": os.getloadavg(),
        "settings": {"rows": args.rows, "rounds": args.rounds, "corpus": "corpus.py, 5-60 words, seed 0"},
        "results": list(results.values()),
        "best_ray": best["name"],
        "best_ray_overhead": 1 - best["end_to_end_vs_single"],
    }
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out / f"{args.name}.md").write_text(markdown(report), encoding="utf-8")
    print(markdown(report))
    shutil.rmtree(work, ignore_errors=True)


def markdown(report: dict[str, Any]) -> str:
    env = report["environment"]
    load = "/".join(f"{x:.1f}" for x in env["load_average"])
    after = "/".join(f"{x:.1f}" for x in report["load_average_after"])
    lines = [
        "## `jitcpu run` vs `jitcpu run --ray` (one machine)",
        "",
        f"all-MiniLM-L6-v2 (embedded), {report['settings']['rows']} sentences ({report['settings']['corpus']}), "
        f"`--mode auto`, medians of {report['settings']['rounds']} rotated rounds; CPU {env['cpu']} ({env['isa']}), "
        f"{os.cpu_count()} cores, torch {env['torch']}, Ray {env['ray']}; load average {load} before, {after} after "
        "(a machine shared with other jobs: ratios measured side by side, absolute numbers drift).",
        "",
        "| variant | mode | rows/s (end to end) | vs single | wall s | min cosine vs single |",
        "|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        cos = r.get("vs_single", {}).get("cosine_min")
        same = r.get("vs_single", {}).get("same_rows_in_order", True)
        lines.append(
            f"| {r['name']} | {', '.join(r['modes'])} | {r['rows_per_s']:.1f} | {r['end_to_end_vs_single']:.2f}x "
            f"| {r['process_wall_s']:.1f} | {'-' if cos is None else f'{cos:.6f}'}{'' if same else ' (ROWS DIFFER)'} |"
        )
    lines += [
        "",
        f"Best Ray layout: {report['best_ray']}, overhead vs the single process "
        f"{100 * report['best_ray_overhead']:+.1f}% (negative: faster), end to end.",
        "",
        "Final lines:",
        "",
        *[f"- {r['name']}: `{r['final_line']}`" for r in report["results"]],
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
