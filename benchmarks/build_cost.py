"""What building a mode really costs next to one eager pass of the batch it is built on, for a tiny input
and for the reference batch (32 rows x 128 tokens) that ``jitcpu run --mode auto`` scales its estimates to.

``auto`` estimates a candidate's build + warm-up as its backend row's ``build_cost`` in eager passes (backends/table.py). This
measures, on the real all-MiniLM-L6-v2, each shape in a fresh process (so the first eager call pays the
process's one-time warm-up, as in a real run): the first eager call, a warm eager call, and build + first run
of each mode on that batch; then prints what ``auto`` estimated for it.

    python benchmarks/build_cost.py --threads 2
Writes benchmarks/results/build_cost.md and build_cost.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHAPES = ((2, 12), (32, 128))


def _cost(mode: str) -> float:
    """The build cost auto assumes for a mode, in eager passes (its backend row's)."""
    from pytest_jitcpu.backends import table

    return table.backend(mode).build_cost if mode in table.MODES else table.UNMEASURED_BUILD_COST


def _one(rows: int, length: int, modes: list[str], threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    from pytest_jitcpu.inference import models, selection
    from pytest_jitcpu.inputs import Inputs

    loaded = models.load(None)
    g = torch.Generator().manual_seed(rows * 1000 + length)
    ids = torch.randint(1000, 20000, (rows, length), generator=g)
    x = Inputs(
        kwargs={"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
    )

    def timed(fn) -> float:
        start = time.perf_counter()
        with torch.no_grad():
            fn()
        return time.perf_counter() - start

    out: dict = {"rows": rows, "seq": length}
    with models.quiet_transformers():
        eager = selection.build("eager", loaded.module, x, "fp32")
        out["eager_first_s"] = timed(lambda: eager.run(x.clone()))
        out["eager_warm_s"] = min(timed(lambda: eager.run(x.clone())) for _ in range(3))
        for mode in modes:
            try:
                out[f"{mode}_s"] = timed(lambda m=mode: selection.build(m, loaded.module, x, "fp32").run(x.clone()))
            except Exception as exc:  # noqa: BLE001 - a mode that cannot be built here is reported, not fatal
                out[f"{mode}_s"] = None
                out[f"{mode}_error"] = str(exc).splitlines()[0][:200]
        out["estimate"] = _estimates(out, rows * length, modes)
    return out


def _estimates(out: dict, tokens: int, modes: list[str]) -> dict[str, float]:
    """What auto's cost model says for building each mode on this batch (build + warm-up only)."""
    from pytest_jitcpu.inference import selection

    unit = selection.build_unit_s(out["eager_first_s"], tokens)
    return {m: _cost(m.partition("+")[0]) * unit for m in modes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--modes", default="trace-dict,onnx,openvino")
    parser.add_argument("--one", nargs=2, type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--results", default=str(HERE / "results"))
    args = parser.parse_args()
    modes = args.modes.split(",")
    if args.one:
        print(json.dumps(_one(*args.one, modes, args.threads)))
        return
    from pytest_jitcpu.environment import environment

    env = environment()
    env["load_average"] = os.getloadavg()
    rows = []
    for n, length in SHAPES:
        argv = [sys.executable, __file__, "--one", str(n), str(length), "--modes", args.modes]
        argv += ["--threads", str(args.threads)]
        proc = subprocess.run(argv, check=True, capture_output=True, text=True)
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    out_dir = Path(args.results)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {"benchmark": "build_cost", "environment": env, "settings": vars(args), "results": rows}
    (out_dir / "build_cost.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    lines = [
        "## Build cost of a mode vs auto's estimate",
        "",
        f"all-MiniLM-L6-v2, {args.threads} threads, each shape in a fresh process; CPU {env['cpu']} ({env['isa']}), "
        f"load average {env['load_average'][0]:.1f} (shared machine). Seconds; build = build + first run.",
        "",
        "| batch | eager first call | eager warm | " + " | ".join(f"{m} build / estimate" for m in modes) + " |",
        "|---|---|---|" + "---|" * len(modes),
    ]
    for r in rows:
        cells = []
        for m in modes:
            real = r.get(f"{m}_s")
            cells.append(f"{real:.2f} / {r['estimate'][m]:.2f}" if real is not None else f"- ({r.get(f'{m}_error')})")
        lines.append(
            f"| {r['rows']} x {r['seq']} | {r['eager_first_s']:.3f} | {r['eager_warm_s']:.3f} | "
            + " | ".join(cells)
            + " |"
        )
    (out_dir / "build_cost.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
