"""What the structure-keeping variations and the free-generation probe cost and what they find (issue 9).

Each tiny model is checked (eager, trace-dict, trace-tuple; fp32; 10 generated inputs; no round trip) in
three variants, interleaved so the shared machine's noise hits all alike, median of ``--repeats``:

* ``now``: the variations of the example first, free generation probed once per check, then searched;
* ``no variations``: free generation only (probed);
* ``before``: free generation only, always searched (as before issue 9: on coupled inputs Hypothesis draws
  hundreds of inputs eager rejects, then the pass is a plain pass).

    python benchmarks/generalization.py --repeats 3
Writes benchmarks/results/generalization.md and generalization.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the test suite's tiny models, built from config classes

import tiny_models as tm  # noqa: E402

from pytest_jitcpu import engine  # noqa: E402
from pytest_jitcpu.environment import environment  # noqa: E402
from pytest_jitcpu.search import strategies, variations  # noqa: E402
from pytest_jitcpu.settings import Settings  # noqa: E402

SETTINGS = Settings(modes=("eager", "trace-dict", "trace-tuple"), dtypes=("fp32",), examples=10, serialize=False)
MODELS: dict[str, Callable[[], tuple[Any, Any]]] = {
    "tiny BERT": tm.tiny_bert,
    "coupled toy (image tokens = patches)": lambda: (tm.CoupledImageText(), tm.coupled_batch()),
    "coupled toy, batch size baked in": lambda: (tm.CoupledImageText(bake_batch=True), tm.coupled_batch()),
    "tiny LLaVA": tm.tiny_llava,
    "tiny Qwen2-VL": tm.tiny_qwen2_vl,
}
VARIANTS = ("now", "no variations", "before")


@contextmanager
def variant(name: str) -> Iterator[None]:
    real_variations, real_probe = variations.variations, strategies.probe
    if name != "now":
        variations.variations = lambda batch, accepts=None: []
    if name == "before":
        strategies.probe = lambda plan, accepts, n, seed=0: n  # as if every probe were accepted: always search
    try:
        yield
    finally:
        variations.variations, strategies.probe = real_variations, real_probe


def cpu_family() -> str:
    """The CPU family from /proc/cpuinfo (the environment's name alone, "AMD EPYC", spans generations)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "cpu family":
                return f"family {value.strip()}"
    except OSError:
        pass
    return "family ?"


def verdict(rec: Any) -> str:
    if rec.status != "pass":
        return f"{rec.status} ({(rec.generalization or {}).get('diverged_on')})"
    return "pass (untested)" if rec.untested else f"pass (tested on {rec.examples})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    rows = []
    for label, make in MODELS.items():
        model, inputs = make()
        times: dict[str, list[float]] = {v: [] for v in VARIANTS}
        seen: dict[str, str] = {}
        for _ in range(args.repeats):
            for name in VARIANTS:
                with variant(name):
                    start = time.perf_counter()
                    result = engine.check(model.eval(), inputs, settings=SETTINGS)
                    times[name].append(time.perf_counter() - start)
                seen[name] = verdict(result.record("trace-dict"))
        rows.append(
            {"model": label, "median_s": {v: statistics.median(times[v]) for v in VARIANTS}, "trace_dict": seen}
        )
        print(rows[-1], flush=True)
    env = environment()
    result = {
        "cpu": f"{env['cpu']} {cpu_family()}",
        "isa": env["isa"],
        "threads": env["threads"],
        "repeats": args.repeats,
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "generalization.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    lines = [
        "## Generalization search: structure-keeping variations and the free-generation probe",
        "",
        f"CPU {result['cpu']} ({env['isa']}), {env['threads']} thread(s); one `check` (eager, trace-dict, trace-tuple; "
        f"fp32; 10 generated inputs; no round trip), median of {args.repeats} interleaved repeats on a shared "
        "machine. Verdict of the trace-dict record (`before` is marked untested here; before issue 9 it was a "
        "plain pass).",
        "",
        "| model | now: s | verdict | no variations: s | verdict | before: s | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        cells = [f"{row['median_s'][v]:.2f} | {row['trace_dict'][v]}" for v in VARIANTS]
        lines.append(f"| {row['model']} | " + " | ".join(cells) + " |")
    (args.out / "generalization.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
