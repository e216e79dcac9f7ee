"""What a check costs: the plugin with its defaults against the hand-written comparison it replaces.

26 tiny models (``benchmarks/check_cost_models.py``: Hugging Face architectures from config classes,
plain modules, three traps) checked two ways, each as a whole ``python -m pytest`` process:

* ``plugin``: one test per model, ``@pytest.mark.jitcpu`` + ``jitcpu.check(model, inputs)`` with the
  defaults (modes eager, trace-dict, trace-tuple; dtypes fp32 and bf16; the divergence search; the
  serialization round trip; a forked child per check);
* ``hand``: the same models with what a user writes without the plugin (``check_cost_models.hand_check``:
  eager fp32, then per dtype torch.jit.trace with example_kwarg_inputs and with the positional tuple,
  frozen, run and compared with torch.testing.assert_close), in a process without the plugin
  (``-p no:jitcpu``, as where it is not installed).

The two alternate (hand, plugin, hand, plugin, ...) so both see the same machine load. Reported: the
medians and the best of the rounds of the whole process' wall time and of its CPU time (with its
children: the forked checks and the round trip's loader; less sensitive than wall time to other jobs on
a shared machine), and the ratio plugin / hand of each alternating pair. The traps fail the plugin's
tests (``diverges``: the search finds the input the trace gets wrong) and pass the hand-written ones;
the counts are in the results.

    python benchmarks/check_cost.py --rounds 5
    python benchmarks/check_cost.py --before /path/to/an/older/checkout   # and that plugin, side by side
Writes benchmarks/results/check_cost.md and check_cost.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from check_cost_models import MODELS, TRAPS  # noqa: E402 - next to this script

VARIANTS = ("hand", "plugin")


def test_file(variant: str, names: list[str]) -> str:
    """One test per model; the plugin's with the marker and the defaults, the hand-written without."""
    lines = ["import pytest", "", "import check_cost_models as m", ""]
    for name in names:
        if variant == "plugin":
            lines += ["", "@pytest.mark.jitcpu", f"def test_{name}(jitcpu):", f"    jitcpu.check(*m.{name}())", ""]
        else:
            lines += ["", f"def test_{name}():", f"    m.hand_check(*m.{name}())", ""]
    return "\n".join(lines)


def run_once(work: Path, variant: str, threads: int, root: Path = ROOT) -> dict[str, float]:
    junit = work / f"junit-{variant}.xml"
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(root)}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env = {k: v for k, v in env.items() if not k.startswith("JITCPU_")}  # the plugin's defaults, not the caller's
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}", "-W", "ignore"]
    cmd += ["-p", "no:jitcpu"] if variant == "hand" else []
    cmd.append("test_hand.py" if variant == "hand" else "test_plugin.py")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU time of the whole tree (pytest, its forked children, the round trip's loader it waited for)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if "INTERNALERROR" in proc.stdout or proc.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(cmd)} exited with {proc.returncode}:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    cases = list(ET.parse(junit).getroot().iter("testcase"))
    failed = sorted(c.get("name", "")[len("test_") :] for c in cases if c.find("failure") is not None)
    errors = sorted(c.get("name", "")[len("test_") :] for c in cases if c.find("error") is not None)
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "tests_s": sum(float(c.get("time", 0)) for c in cases),
        "tests": len(cases),
        "failed": failed,
        "errors": errors,
    }


def summarize(runs: dict[str, list[dict]], args: argparse.Namespace, names: list[str]) -> dict:
    from pytest_jitcpu.environment import cpu_name, native_bf16

    keys = ("wall_s", "cpu_s", "tests_s")
    med = {v: {k: statistics.median(r[k] for r in runs[v]) for k in keys} for v in VARIANTS}
    # Best of N: the run least disturbed by other jobs on a shared machine (wall times swing with load).
    best = {v: {k: min(r[k] for r in runs[v]) for k in keys} for v in VARIANTS}
    pairs = {k: [p[k] / h[k] for h, p in zip(runs["hand"], runs["plugin"], strict=True)] for k in ("wall_s", "cpu_s")}
    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "bf16_native": native_bf16(),
        "threads": args.threads,
        "models": names,
        "traps": [n for n in names if n in TRAPS],
        "rounds": args.rounds,
        "runs": runs,
        "median": med,
        "best": best,
        "pair_ratios": pairs,
        "ratio_wall_median": med["plugin"]["wall_s"] / med["hand"]["wall_s"],
        "ratio_wall_best": best["plugin"]["wall_s"] / best["hand"]["wall_s"],
        "ratio_wall_pairs_median": statistics.median(pairs["wall_s"]),
        "ratio_cpu_median": med["plugin"]["cpu_s"] / med["hand"]["cpu_s"],
        "ratio_cpu_best": best["plugin"]["cpu_s"] / best["hand"]["cpu_s"],
        "target": 1.25,
        "before": _before(runs) if runs["before"] else None,
        "load_average": os.getloadavg(),
        "python": sys.version.split()[0],
    }


def _before(runs: dict[str, list[dict]]) -> dict:
    """The older checkout's plugin against the same hand-written runs (same rounds, same load)."""
    out: dict = {}
    for key in ("wall_s", "cpu_s"):
        hand = [r[key] for r in runs["hand"]]
        out[key] = {
            "median": statistics.median(r[key] for r in runs["before"]),
            "best": min(r[key] for r in runs["before"]),
            "ratio_median": statistics.median(r[key] for r in runs["before"]) / statistics.median(hand),
            "ratio_best": min(r[key] for r in runs["before"]) / min(hand),
            "pair_ratios": [b[key] / h for b, h in zip(runs["before"], hand, strict=True)],
        }
    return out


def markdown(data: dict) -> str:
    med, best, rounds = data["median"], data["best"], data["rounds"]
    last = data["runs"]["plugin"][-1]
    caught = ", ".join(last["failed"]) or "none"
    return "\n".join(
        [
            "# Cost of a check: the plugin's defaults against a hand-written comparison",
            "",
            f"CPU {data['cpu']} ({data['cores']} cores, shared machine: load average "
            f"{', '.join(f'{x:.1f}' for x in data['load_average'])} at the end), {data['threads']} thread(s) per "
            f"run, Python {data['python']}. {len(data['models'])} tiny models "
            f"(`benchmarks/check_cost_models.py`), {rounds} alternating rounds of whole `python -m pytest` "
            "processes.",
            "",
            "- plugin: `@pytest.mark.jitcpu` + `jitcpu.check(model, inputs)` with the defaults (eager, trace-dict, "
            "trace-tuple; fp32 and bf16; divergence search; round trip; a forked child per check).",
            "- hand: eager fp32, then per dtype torch.jit.trace with example_kwarg_inputs and with the positional "
            "tuple, frozen, run and compared with torch.testing.assert_close (`-p no:jitcpu`).",
            "",
            "| | hand-written | plugin | ratio |",
            "|---|---|---|---|",
            f"| whole pytest process, median | {med['hand']['wall_s']:.1f} s | {med['plugin']['wall_s']:.1f} s | "
            f"{data['ratio_wall_median']:.2f}x |",
            f"| whole pytest process, best of {rounds} | {best['hand']['wall_s']:.1f} s | "
            f"{best['plugin']['wall_s']:.1f} s | {data['ratio_wall_best']:.2f}x |",
            f"| CPU time of the process tree, median | {med['hand']['cpu_s']:.1f} s | {med['plugin']['cpu_s']:.1f} s | "
            f"{data['ratio_cpu_median']:.2f}x |",
            f"| CPU time of the process tree, best of {rounds} | {best['hand']['cpu_s']:.1f} s | "
            f"{best['plugin']['cpu_s']:.1f} s | {data['ratio_cpu_best']:.2f}x |",
            "",
            "Wall-time ratio of each alternating pair (hand then plugin): "
            + ", ".join(f"{r:.2f}" for r in data["pair_ratios"]["wall_s"])
            + f" (median {data['ratio_wall_pairs_median']:.2f}x; target <= {data['target']}x).",
            "",
            *_before_lines(data),
            f"Tests the plugin failed (traps: {', '.join(data['traps']) or 'none'}): {caught}. "
            f"Hand-written failures: {', '.join(data['runs']['hand'][-1]['failed']) or 'none'}.",
            "",
        ]
    )


def _before_lines(data: dict) -> list[str]:
    before = data["before"]
    if not before:
        return []
    wall, cpu = before["wall_s"], before["cpu_s"]
    return [
        "The plugin before this branch's changes (`--before`), in the same rounds:",
        "",
        "| | plugin before | ratio to hand-written |",
        "|---|---|---|",
        f"| whole pytest process, median | {wall['median']:.1f} s | {wall['ratio_median']:.2f}x |",
        f"| whole pytest process, best of {data['rounds']} | {wall['best']:.1f} s | {wall['ratio_best']:.2f}x |",
        f"| CPU time of the process tree, median | {cpu['median']:.1f} s | {cpu['ratio_median']:.2f}x |",
        f"| CPU time of the process tree, best of {data['rounds']} | {cpu['best']:.1f} s | {cpu['ratio_best']:.2f}x |",
        "",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of each run (default 1)")
    parser.add_argument("--models", default="", help="comma-separated subset of the models (default: all 26)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "check_cost")
    parser.add_argument(
        "--before", type=Path, help="another checkout of pytest-jitcpu: its plugin runs too, in the same rounds"
    )
    args = parser.parse_args()
    names = [n.strip() for n in args.models.split(",") if n.strip()] or list(MODELS)
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        raise SystemExit(f"--models: unknown {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    sys.path.insert(0, str(ROOT))

    runs: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    if args.before and not (args.before / "pytest_jitcpu").is_dir():
        raise SystemExit(f"--before: {args.before} holds no pytest_jitcpu package")
    with tempfile.TemporaryDirectory(prefix="jitcpu-check-cost-") as folder:
        work = Path(folder)
        shutil.copy(HERE / "check_cost_models.py", work / "check_cost_models.py")
        for variant in VARIANTS:
            (work / f"test_{variant}.py").write_text(test_file(variant, names), encoding="utf-8")
        variants = [*VARIANTS, "before"] if args.before else list(VARIANTS)
        runs["before"] = []
        for i in range(args.rounds):
            for variant in variants:
                root = args.before.resolve() if variant == "before" else ROOT
                result = run_once(work, variant, args.threads, root)
                runs[variant].append(result)
                print(
                    f"round {i + 1} {variant}: {result['wall_s']:.1f} s wall, {result['cpu_s']:.1f} s CPU, "
                    f"{result['tests']} tests, failed: {', '.join(result['failed']) or 'none'}",
                    flush=True,
                )
    data = summarize(runs, args, names)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    text = markdown(data)
    args.out.with_suffix(".md").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
