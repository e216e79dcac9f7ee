"""What crash isolation costs: a suite of ~20 tiny models, with and without ``--jitcpu-isolate``.

Each run is a plain ``pytest`` subprocess over the same generated test file (hand-written modules and
tiny Hugging Face architectures from ``tests/tiny_models.py``, default modes, dtypes, examples and
serialization, as a user runs it). Runs alternate (off, on, off, on, ...) so both see the same machine
load; the figures are ratios of the best and of the median runs: of the whole process' wall time, of its
CPU time (with its children: less sensitive to a shared machine's load) and of the tests' own time (JUnit).

    python benchmarks/isolation.py --repeats 3
Writes benchmarks/results/isolation.md and isolation.json.
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
TINY_MODELS = ROOT / "tests" / "tiny_models.py"

HAND_WRITTEN = [
    ("TinyMLP()", '{"x": tm.features()}'),
    ("TinyText()", "tm.text_batch()"),
    ("TracingDependent()", '{"x": tm.features()}'),
    ("FlagDependent()", '{"x": tm.features()}'),
    ("PythonObjectOutput()", '{"x": tm.features()}'),
    ("Gap()", '{"a": tm.features(), "c": tm.features(seed=1)}'),
    ("GapTensorDefault()", '{"a": tm.features(), "c": tm.features(seed=1)}'),
    ("OrderSensitive()", '{"b": tm.features(seed=1), "a": tm.features()}'),
    ("WithDropout()", '{"x": tm.features()}'),
    ("ShrinksItself()", '{"x": tm.features()}'),
]
BUILT = ["bert", "roberta", "distilbert", "gpt2", "t5", "vit", "wav2vec2", "bigbird", "swin", "clvp"]


def suite() -> str:
    lines = ["import tiny_models as tm", ""]
    for i, (model, inputs) in enumerate(HAND_WRITTEN):
        lines += [f"def test_hand_{i}(jitcpu):", f"    jitcpu.check(tm.{model}, {inputs})", ""]
    for name in BUILT:
        lines += [f"def test_{name}(jitcpu):", f"    jitcpu.check(*tm.tiny_{name}())", ""]
    return "\n".join(lines)


def run_once(work: Path, isolate: bool, threads: int) -> dict[str, float]:
    junit = work / f"junit-{isolate}.xml"
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    env = {k: v for k, v in env.items() if not k.startswith("JITCPU_")}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly"]
    cmd += [f"--jitcpu-isolate={str(isolate).lower()}", f"--junitxml={junit}", "-W", "ignore"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU time of the whole tree (pytest, its forked children and the loader it waited for): less
    # sensitive than wall time to the other jobs on a shared machine
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if "INTERNALERROR" in proc.stdout or proc.returncode not in (0, 1):
        raise SystemExit(proc.stdout[-3000:] + proc.stderr[-3000:])
    cases = list(ET.parse(junit).getroot().iter("testcase"))
    return {"wall_s": wall, "cpu_s": cpu, "tests_s": sum(float(c.get("time", 0)) for c in cases), "tests": len(cases)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each setting (default 3)")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of each run (default 1)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "isolation")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from pytest_jitcpu.environment import cpu_name

    runs: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory(prefix="jitcpu-isolation-bench-") as folder:
        work = Path(folder)
        shutil.copy(TINY_MODELS, work / "tiny_models.py")
        (work / "test_suite.py").write_text(suite(), encoding="utf-8")
        for i in range(args.repeats):
            for setting in ("off", "on"):
                result = run_once(work, setting == "on", args.threads)
                runs[setting].append(result)
                print(
                    f"run {i + 1} isolate={setting}: {result['wall_s']:.1f} s wall, {result['cpu_s']:.1f} s CPU, "
                    f"{result['tests_s']:.1f} s tests",
                    flush=True,
                )
    keys = ("wall_s", "cpu_s", "tests_s")
    med = {s: {k: statistics.median(r[k] for r in runs[s]) for k in keys} for s in runs}
    # Best of N: the run least disturbed by other jobs on a shared machine (wall times swing 2x with load).
    best = {s: {k: min(r[k] for r in runs[s]) for k in keys} for s in runs}
    pairs = [on["wall_s"] / off["wall_s"] for off, on in zip(runs["off"], runs["on"], strict=True)]
    data = {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "threads": args.threads,
        "tests": runs["on"][0]["tests"],
        "repeats": args.repeats,
        "runs": runs,
        "median": med,
        "best": best,
        "pair_ratios_wall": pairs,
        "ratio_wall_best": best["on"]["wall_s"] / best["off"]["wall_s"],
        "ratio_cpu_best": best["on"]["cpu_s"] / best["off"]["cpu_s"],
        "ratio_wall": med["on"]["wall_s"] / med["off"]["wall_s"],
        "ratio_tests": med["on"]["tests_s"] / med["off"]["tests_s"],
        "ratio_cpu": med["on"]["cpu_s"] / med["off"]["cpu_s"],
        "load_average": os.getloadavg(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    md = [
        "# Crash isolation: cost on a suite of tiny models",
        "",
        f"CPU {data['cpu']} ({data['cores']} cores, shared machine: load average "
        f"{', '.join(f'{x:.1f}' for x in data['load_average'])} at the end), {args.threads} thread(s) per run, "
        f"{data['tests']} tests (default modes, dtypes, examples, serialization), {args.repeats} alternating "
        "runs per setting, medians.",
        "",
        "| | isolate off | isolate on (fork per check) | ratio |",
        "|---|---|---|---|",
        f"| whole pytest process, best of {args.repeats} | {best['off']['wall_s']:.1f} s | "
        f"{best['on']['wall_s']:.1f} s | {data['ratio_wall_best']:.2f}x |",
        f"| CPU time of the process tree, best of {args.repeats} | {best['off']['cpu_s']:.1f} s | "
        f"{best['on']['cpu_s']:.1f} s | {data['ratio_cpu_best']:.2f}x |",
        f"| whole pytest process, median | {med['off']['wall_s']:.1f} s | {med['on']['wall_s']:.1f} s | "
        f"{data['ratio_wall']:.2f}x |",
        f"| CPU time of the process tree, median | {med['off']['cpu_s']:.1f} s | {med['on']['cpu_s']:.1f} s | "
        f"{data['ratio_cpu']:.2f}x |",
        f"| tests' own time (JUnit), median | {med['off']['tests_s']:.1f} s | {med['on']['tests_s']:.1f} s | "
        f"{data['ratio_tests']:.2f}x |",
        "",
        "Wall-time ratio of each alternating pair (off then on): " + ", ".join(f"{r:.2f}" for r in pairs) + ".",
        "",
    ]
    args.out.with_suffix(".md").write_text("\n".join(md), encoding="utf-8")
    print("\n".join(md))


if __name__ == "__main__":
    main()
