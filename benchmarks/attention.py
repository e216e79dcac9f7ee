"""The attention implementations side by side: eager, sdpa and flex_attention on the embedded MiniLM.

One process, one padded batch of real sentences (the tokenizer's padding), the model as loaded (sdpa) and
two copies switched with ``set_attn_implementation`` (weights shared, as the attn-* modes build them).
Runs alternate (rotating who goes first) so a busy machine slows them alike; the figures are medians and
ratios to sdpa. Also: the largest difference from sdpa on the real (unmasked) positions and on a fully
masked row, and flex_attention's first call (transformers compiles its kernel with inductor).

    python benchmarks/attention.py --repeats 30 --rows 32 --threads 2
Writes benchmarks/results/attention.md and attention.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
SENTENCES = [
    "the quick brown fox jumps over the lazy dog",
    "a cat",
    "paris is the capital of france and the largest city of the country",
    "what is the name of the river that runs through the city ?",
    "it was a lazy afternoon by the river, and nobody wanted to move at all",
    "london",
    "transformers ships eager, sdpa and flex attention implementations for most encoder models",
    "an owl",
]
IMPLEMENTATIONS = ("sdpa", "eager", "flex_attention")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from transformers import AutoModel, AutoTokenizer

    from pytest_jitcpu.backends import attention
    from pytest_jitcpu.environment import environment
    from pytest_jitcpu.inference.models import default_model_path

    path = default_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    texts = [SENTENCES[i % len(SENTENCES)] for i in range(args.rows)]
    batch = dict(tokenizer(texts, padding=True, return_tensors="pt"))
    masked = {k: v.clone() for k, v in batch.items()}
    masked["attention_mask"][-1] = 0  # a fully masked row

    models = {"sdpa": model}
    first_call_ms: dict[str, float] = {}
    for name in IMPLEMENTATIONS[1:]:
        models[name] = attention.switched(model, name)
    outputs: dict[str, torch.Tensor] = {}
    on_masked: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, m in models.items():
            start = time.perf_counter()
            outputs[name] = m(**batch).last_hidden_state
            first_call_ms[name] = (time.perf_counter() - start) * 1000
            on_masked[name] = m(**masked).last_hidden_state
        times: dict[str, list[float]] = {name: [] for name in models}
        names = list(models)
        for k in range(args.repeats):
            for name in names[k % len(names) :] + names[: k % len(names)]:
                start = time.perf_counter()
                models[name](**batch)
                times[name].append((time.perf_counter() - start) * 1000)

    real = batch["attention_mask"].bool()
    results = {}
    for name in models:
        diff = (outputs[name] - outputs["sdpa"]).abs()
        results[name] = {
            "median_ms": statistics.median(times[name]),
            "best_ms": min(times[name]),
            "first_call_ms": first_call_ms[name],
            "max_abs_diff_real_positions": float(diff[real].max()),
            "max_abs_diff_fully_masked_row": float((on_masked[name][-1] - on_masked["sdpa"][-1]).abs().max()),
        }
    base = results["sdpa"]["median_ms"]
    for r in results.values():
        r["sdpa_over_this"] = base / r["median_ms"]
    env = environment()
    shape = list(batch["input_ids"].shape)
    report = {"benchmark": "attention", "environment": env, "settings": vars(args), "batch": shape, "results": results}
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "attention.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    lines = [
        "# Attention implementations on all-MiniLM-L6-v2",
        "",
        f"One padded batch {shape} of real sentences, {args.threads} threads, {args.repeats} interleaved runs each; "
        f"CPU {env['cpu']} ({env['isa']}), torch {env['torch']}, transformers {env['transformers']}. "
        "Speed is the median run of sdpa divided by this one's (higher is faster); differences are from sdpa "
        "(the model as loaded).",
        "",
        "| attn_implementation | median ms | speed vs sdpa | first call ms | max diff, real positions | "
        "max diff, fully masked row |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['median_ms']:.1f} | {r['sdpa_over_this']:.2f}x | {r['first_call_ms']:.0f} | "
            f"{r['max_abs_diff_real_positions']:.2g} | {r['max_abs_diff_fully_masked_row']:.2g} |"
        )
    (out / "attention.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
