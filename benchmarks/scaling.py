"""How batch latency and throughput grow with batch size and sequence length, per mode, on the real
all-MiniLM-L6-v2 (the embedding module ``jitcpu run`` uses: encoder + mean pooling + normalize).

Synthetic batches of fixed shape (random ids, full attention mask). Modes are interleaved shape by shape
and each keeps its best of ``--repeat`` runs after warm-up, so a busy machine hurts them alike.

    python benchmarks/scaling.py --threads 2
Writes benchmarks/results/scaling.md and scaling.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def batch(n: int, length: int):
    from pytest_jitcpu.inputs import Inputs

    g = torch.Generator().manual_seed(n * 1000 + length)
    ids = torch.randint(1000, 20000, (n, length), generator=g)
    ids[:, 0], ids[:, -1] = 101, 102
    return Inputs(
        kwargs={"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--modes", default="eager,trace-dict")
    parser.add_argument("--batch-sizes", default="1,8,32,64")
    parser.add_argument("--seq-lengths", default="16,32,64,128")
    parser.add_argument("--fixed-seq", type=int, default=64)
    parser.add_argument("--fixed-batch", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--results", default=str(HERE / "results"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from pytest_jitcpu import backends
    from pytest_jitcpu.environment import environment
    from pytest_jitcpu.inference import models

    env = environment()
    env["load_average"] = os.getloadavg()
    loaded = models.load(None)
    names = args.modes.split(",")
    with models.quiet_transformers():
        built = {m: backends.build(m, loaded.module, batch(8, 16), "fp32") for m in names}
    shapes = [(int(b), args.fixed_seq) for b in args.batch_sizes.split(",")]
    shapes += [
        (args.fixed_batch, int(s)) for s in args.seq_lengths.split(",") if (args.fixed_batch, int(s)) not in shapes
    ]
    rows = []
    for n, length in shapes:
        x = batch(n, length)
        best = {m: float("inf") for m in names}
        for m in names:  # warm-up: the profiling executor specializes a shape on its first runs
            for _ in range(2):
                built[m].run(x.clone())
        for _ in range(args.repeat):
            for m in names:
                y = x.clone()
                start = time.perf_counter()
                built[m].run(y)
                best[m] = min(best[m], (time.perf_counter() - start) * 1000)
        for m in names:
            rows.append({"mode": m, "batch": n, "seq": length, "latency_ms": best[m], "rows_per_s": n / best[m] * 1000})
        print(json.dumps(rows[-len(names) :]), flush=True)
    report = {"benchmark": "scaling", "environment": env, "settings": vars(args), "results": rows}
    out_dir = Path(args.results)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "scaling.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    lines = [
        "## Latency and throughput vs batch size and sequence length",
        "",
        f"all-MiniLM-L6-v2 embedding module, {args.threads} threads, best of {args.repeat} after warm-up; "
        f"CPU {env['cpu']} ({env['isa']}), load average {env['load_average'][0]:.1f} (shared machine).",
        "",
        "| batch | seq | "
        + " | ".join(f"{m} ms | {m} rows/s" for m in names)
        + " | "
        + " | ".join(f"{m} vs {names[0]}" for m in names[1:])
        + " |",
        "|---|---|" + "---|---|" * len(names) + "---|" * (len(names) - 1),
    ]
    for n, length in shapes:
        cells = {r["mode"]: r for r in rows if r["batch"] == n and r["seq"] == length}
        text = f"| {n} | {length} | " + " | ".join(
            f"{cells[m]['latency_ms']:.1f} | {cells[m]['rows_per_s']:.0f}" for m in names
        )
        text += " | " + " | ".join(f"{cells[names[0]]['latency_ms'] / cells[m]['latency_ms']:.2f}x" for m in names[1:])
        lines.append(text + " |")
    (out_dir / "scaling.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
