"""What installing pytest-jitcpu costs a test suite that never uses it (issue 10: at most 0.2 s).

A one-test suite that never uses jitcpu, run as whole ``pytest`` processes: with the plugin (as it is
auto-loaded once installed) and with ``-p no:jitcpu``, interleaved so the shared machine's noise hits
both alike; the figure is the median of the per-pair differences. A third variant also turns off
Hypothesis' own pytest plugin, to show what is that plugin's and what is ours. Each run also records
which heavy modules the process imported (torch, transformers, hypothesis).

    python benchmarks/plugin_load.py --repeats 15
Writes benchmarks/results/plugin_load.md and plugin_load.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
VARIANTS = {
    "plugin": [],
    "-p no:jitcpu": ["-p", "no:jitcpu"],
    "-p no:jitcpu -p no:hypothesispytest": ["-p", "no:jitcpu", "-p", "no:hypothesispytest"],
}
SUITE = "def test_plain():\n    assert sum(range(4)) == 6\n"
# Records what the process imported, at the very end (the last pytest_unconfigure).
CONFTEST = """
import json, os, sys
import pytest

@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    heavy = sorted({m.split(".")[0] for m in sys.modules} & {"torch", "transformers", "hypothesis"})
    with open(os.environ["PLUGIN_LOAD_OUT"], "w") as f:
        json.dump({"heavy": heavy, "jitcpu": "pytest_jitcpu" in sys.modules}, f)
"""


def cpu() -> str:
    """The CPU's name and family, read at run time (figures from different machines differ)."""
    name, family, flags = platform.processor() or platform.machine(), "?", ""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            key, value = key.strip(), value.strip()
            if key == "model name":
                name = value
            elif key == "cpu family":
                family = value
            elif key == "flags":
                flags = value
                break
    except OSError:
        pass
    isa = "avx512" if "avx512f" in flags.split() else "avx2" if "avx2" in flags.split() else "baseline"
    return f"{name} (family {family}, {isa}, {os.cpu_count()} cores)"


def one_run(folder: Path, extra: list[str]) -> tuple[float, dict]:
    out = folder / "imported.json"
    env = {**os.environ, "PLUGIN_LOAD_OUT": str(out)}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *extra]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}")
    return seconds, json.loads(out.read_text(encoding="utf-8"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()

    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    imported: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "test_plain.py").write_text(SUITE, encoding="utf-8")
        (folder / "conftest.py").write_text(CONFTEST, encoding="utf-8")
        one_run(folder, [])  # warm the file cache once; not counted
        for _ in range(args.repeats):
            for name, extra in VARIANTS.items():  # interleaved: one of each, then again
                seconds, seen = one_run(folder, extra)
                times[name].append(seconds)
                imported[name] = seen
    if not imported["plugin"]["jitcpu"]:
        raise SystemExit("pytest_jitcpu was not loaded: is pytest-jitcpu installed (or on PYTHONPATH)?")

    import pytest_jitcpu  # which copy was measured

    ours = [a - b for a, b in zip(times["plugin"], times["-p no:jitcpu"], strict=True)]
    hypothesis = [
        a - b for a, b in zip(times["-p no:jitcpu"], times["-p no:jitcpu -p no:hypothesispytest"], strict=True)
    ]
    result = {
        "cpu": cpu(),
        "python": platform.python_version(),
        "package": str(Path(pytest_jitcpu.__file__).parent),
        "repeats": args.repeats,
        "median_s": {name: statistics.median(values) for name, values in times.items()},
        "median_difference_s": statistics.median(ours),
        "hypothesis_plugin_median_difference_s": statistics.median(hypothesis),
        "target_s": 0.2,
        "imported": {name: seen["heavy"] for name, seen in imported.items()},
        "runs_s": times,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "plugin_load.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    med = result["median_s"]
    lines = [
        "## Cost of the installed plugin for a suite that never uses it",
        "",
        f"CPU {result['cpu']}; Python {result['python']}; {args.repeats} interleaved repeats of whole "
        "`pytest -q` processes on a one-test suite (the machine was shared: medians, differences per pair).",
        "",
        "| variant | median s | heavy modules imported |",
        "|---|---|---|",
        *(f"| `{name}` | {med[name]:.3f} | {', '.join(result['imported'][name]) or 'none'} |" for name in VARIANTS),
        "",
        f"Plugin installed vs `-p no:jitcpu`: median difference {result['median_difference_s']:+.3f} s "
        f"(target <= {result['target_s']} s). Hypothesis' own plugin (not ours): "
        f"{result['hypothesis_plugin_median_difference_s']:+.3f} s.",
    ]
    (args.out / "plugin_load.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
