"""Check the deployment runtimes (``onnx``, ``openvino``) against eager on tiny Hugging Face architectures.

Each model is built from its config class (hidden size 32, 2 layers; no hub), then checked by the engine
exactly as ``--jitcpu-modes=eager,onnx,openvino --jitcpu-dtypes=fp32,bf16`` would: verdict against eager
fp32, the divergence search on generated inputs, the round trip in a process without torch. Besides the
engine's own comparison, the script compares each runtime's output on the example with eager itself
(``independent_max_abs_diff``), so the table does not rest on the engine's comparison alone.

Run: python benchmarks/verify_architectures.py  (writes benchmarks/results/architectures.md and .json)
"""

from __future__ import annotations

import json
import platform
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import transformers as tf

from pytest_jitcpu import backends, engine, environment
from pytest_jitcpu.inputs import normalize
from pytest_jitcpu.nested import tensors

RESULTS = Path(__file__).parent / "results"
MODES = ("onnx", "openvino")
VOCAB = 99
SMALL = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 37}


def text(batch: int = 2, length: int = 8) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, VOCAB, (batch, length), generator=g)
    mask = torch.ones_like(ids)
    mask[-1, -2:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def seq2seq() -> dict[str, torch.Tensor]:
    batch = text()
    batch["decoder_input_ids"] = batch["input_ids"][:, :5]
    return batch


def architectures() -> list[tuple[str, Any, Any]]:
    """(name, a function building the model, a function building its inputs)."""
    dec = {"d_model": 32, "encoder_layers": 2, "decoder_layers": 2, "encoder_attention_heads": 2}
    dec |= {"decoder_attention_heads": 2, "encoder_ffn_dim": 37, "decoder_ffn_dim": 37}
    return [
        ("BERT", lambda: tf.BertModel(tf.BertConfig(vocab_size=VOCAB, **SMALL)), text),
        ("ALBERT", lambda: tf.AlbertModel(tf.AlbertConfig(vocab_size=VOCAB, embedding_size=16, **SMALL)), text),
        ("ELECTRA", lambda: tf.ElectraModel(tf.ElectraConfig(vocab_size=VOCAB, embedding_size=16, **SMALL)), text),
        ("DeBERTa-v2", lambda: tf.DebertaV2Model(tf.DebertaV2Config(vocab_size=VOCAB, **SMALL)), text),
        ("MPNet", lambda: tf.MPNetModel(tf.MPNetConfig(vocab_size=VOCAB, **SMALL)), text),
        ("RoBERTa", lambda: tf.RobertaModel(tf.RobertaConfig(vocab_size=VOCAB, **SMALL)), text),
        (
            "DistilBERT",
            lambda: tf.DistilBertModel(
                tf.DistilBertConfig(vocab_size=VOCAB, dim=32, n_layers=2, n_heads=2, hidden_dim=37)
            ),
            text,
        ),
        ("BART", lambda: tf.BartModel(tf.BartConfig(vocab_size=VOCAB, use_cache=False, **dec)), seq2seq),
        (
            "T5",
            lambda: tf.T5Model(
                tf.T5Config(vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=2, use_cache=False)
            ),
            seq2seq,
        ),
        (
            "OPT",
            lambda: tf.OPTModel(
                tf.OPTConfig(
                    vocab_size=VOCAB,
                    hidden_size=32,
                    num_hidden_layers=2,
                    num_attention_heads=2,
                    ffn_dim=37,
                    word_embed_proj_dim=32,
                    use_cache=False,
                )
            ),
            text,
        ),
        (
            "GPT-2",
            lambda: tf.GPT2Model(tf.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=2, use_cache=False)),
            lambda: {"input_ids": text()["input_ids"]},
        ),
        (
            "ViT",
            lambda: tf.ViTModel(tf.ViTConfig(image_size=16, patch_size=4, num_channels=3, **SMALL)),
            lambda: {"pixel_values": torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))},
        ),
    ]


def independent_diff(model: torch.nn.Module, batch: dict[str, torch.Tensor], mode: str) -> float | None:
    """Build the mode again and compare its output on the example with eager, tensor by tensor."""
    try:
        built = backends.build(mode, model, normalize(batch), "fp32")
        with torch.no_grad():
            ref = tensors(model(**batch))
        got = tensors(built.run(normalize(batch)))
    except Exception:  # noqa: BLE001 - the engine's record says why it could not be built
        return None
    if len(ref) != len(got):
        return float("inf")
    return max(float((a.float() - b.float()).abs().max()) for a, b in zip(ref, got, strict=True))


def rewrite_markdown() -> None:
    """The Markdown file again from the JSON one (after a change of layout, without a new run)."""
    data = json.loads((RESULTS / "architectures.json").read_text(encoding="utf-8"))
    (RESULTS / "architectures.md").write_text(
        _markdown(data["environment"], data["summary"], data["results"]), encoding="utf-8"
    )


def main() -> None:
    RESULTS.mkdir(exist_ok=True)
    flags = environment.cpu_flags()
    env = {
        "cpu": environment.cpu_name(),
        "cpu_family": _cpu_field("cpu family"),
        "native_bf16": sorted(flags & {"avx512_bf16", "amx_bf16"}),
        "isa": environment.isa(),
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": tf.__version__,
        **environment.versions(),
        "note": "2 cores shared with other jobs: latencies are noisy; compare within a row",
    }
    rows = []
    for name, make, inputs in architectures():
        torch.manual_seed(0)
        model, batch = make().eval(), inputs()
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = engine.check(model, batch, modes=("eager", *MODES), dtypes=("fp32", "bf16"), name=name)
            independent = {mode: independent_diff(model, batch, mode) for mode in MODES}
        seconds = time.perf_counter() - start
        for rec in result.records:
            if rec.mode == "eager" and rec.dtype == "bf16":
                continue
            row = {
                "model": name,
                "mode": rec.mode,
                "dtype": rec.dtype,
                "status": rec.status,
                "max_abs_diff": rec.max_abs_diff,
                "independent_max_abs_diff": independent.get(rec.mode) if rec.dtype == "fp32" else None,
                "serializable": rec.serializable,
                "examples": rec.examples,
                "latency_ms": rec.latency_ms,
                "reason": rec.reason,
                "notes": [n for n in rec.notes if n.startswith(rec.mode)],
            }
            rows.append(row)
            print(
                name, rec.mode, rec.dtype, rec.status, rec.max_abs_diff, rec.serializable, rec.reason or "", flush=True
            )
        print(f"{name}: {seconds:.1f} s", flush=True)
    summary = _summary(rows)
    data = {"environment": env, "summary": summary, "results": rows}
    (RESULTS / "architectures.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    (RESULTS / "architectures.md").write_text(_markdown(env, summary, rows), encoding="utf-8")


def _cpu_field(key: str) -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for mode in MODES:
        fp32 = [r for r in rows if r["mode"] == mode and r["dtype"] == "fp32"]
        passed = [r for r in fp32 if r["status"] == "pass"]
        diffs = [r["max_abs_diff"] for r in passed if r["max_abs_diff"] is not None]
        out[mode] = {
            "models": len(fp32),
            "fp32_pass": len(passed),
            "fp32_max_abs_diff": max(diffs) if diffs else None,
            "serializable": sum(1 for r in passed if r["serializable"]),
            "bf16": sorted({r["status"] for r in rows if r["mode"] == mode and r["dtype"] == "bf16"}),
            "not_pass": {r["model"]: r["status"] for r in fp32 if r["status"] != "pass"},
        }
    return out


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2g}"
    return str(value)


def _markdown(env: dict[str, Any], summary: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    lines = [
        "# onnx and openvino against eager on tiny Hugging Face architectures",
        "",
        f"CPU: {env['cpu']} (family {env['cpu_family']}, ISA {env['isa']}, native BF16: "
        f"{', '.join(env['native_bf16']) or 'none'}), {env['threads']} thread(s); torch {env['torch']}, "
        f"transformers {env['transformers']}, onnxruntime {env.get('onnxruntime')}, openvino {env.get('openvino')}. "
        f"{env['note']}.",
        "",
        "| mode | fp32 pass | max abs diff (fp32, passing) | round trip without torch | bf16 | not pass (fp32) |",
        "|---|---|---|---|---|---|",
    ]
    for mode, s in summary.items():
        not_pass = ", ".join(f"{m}: {st}" for m, st in s["not_pass"].items()) or "-"
        lines.append(
            f"| `{mode}` | {s['fp32_pass']}/{s['models']} | {_fmt(s['fp32_max_abs_diff'])} | "
            f"{s['serializable']}/{s['fp32_pass']} | {', '.join(s['bf16'])} | {not_pass} |"
        )
    lines += [
        "",
        "Latencies (noisy on a shared machine) are in the JSON file only.",
        "",
        "| model | mode | dtype | status | max abs diff | independent diff | serializable | reason |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        reason = (r["reason"] or "").replace("|", "\\|")[:160]
        lines.append(
            f"| {r['model']} | {r['mode']} | {r['dtype']} | {r['status']} | {_fmt(r['max_abs_diff'])} | "
            f"{_fmt(r['independent_max_abs_diff'])} | {_fmt(r['serializable'])} | {reason} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
