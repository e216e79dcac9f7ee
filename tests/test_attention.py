"""The attention modes (attn-eager, attn-sdpa, attn-flex: BetterTransformer's successors): each runs a copy
of the model switched with transformers' ``set_attn_implementation``, compared with the model as given.

Issue 18 measured it on a tiny BERT: sdpa and flex_attention equal eager attention to ~5e-7 on real rows
and differ by a few hundredths on a fully masked row. The pytester run below shows that difference as a
user sees it, and that a padded batch without a fully masked row passes (the search's padding variations
included). The unavailable paths use real transformers classes that refuse a switch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tiny_models as tm
import torch
from inference_models import SENTENCES, encoder, mean_pooled
from plugin_runs import load_json, no_internal_error, outcomes, records_by_test, schema_errors

import pytest_jitcpu
from pytest_jitcpu.backends import attention
from pytest_jitcpu.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def _no_search(modes: list[str]) -> Settings:
    """fp32, the divergence search off: these tests are about the example's verdict."""
    return Settings().updated(modes=modes, dtypes=["fp32"], examples=0)


PADDED = """
import pytest
import torch

import tiny_models as tm


def batch(fully_masked):
    model, _ = tm.tiny_bert()
    ids = torch.arange(3, 27).reshape(3, 8) % tm.VOCAB
    mask = torch.ones(3, 8, dtype=torch.long)
    mask[1, 5:] = 0  # a padded row
    mask[2, 3 if not fully_masked else 0 :] = 0  # a padded row, or a fully masked one
    return model, {"input_ids": ids, "attention_mask": mask}


@pytest.mark.jitcpu
def test_fully_masked_row(jitcpu):
    model, inputs = batch(fully_masked=True)
    jitcpu.check(model, inputs)


@pytest.mark.jitcpu
def test_padded_rows_only(jitcpu):
    model, inputs = batch(fully_masked=False)
    result = jitcpu.check(model, inputs)
    assert model.config._attn_implementation == "sdpa"  # the user's model keeps its own
    assert result.record("attn-eager").generalization["verdict"] == "tested"
"""


def test_a_fully_masked_row_shows_the_attention_difference(jitcpu_pytester: pytest.Pytester) -> None:
    jitcpu_pytester.makepyfile(test_padded=PADDED)
    result = jitcpu_pytester.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        "--jitcpu-modes=eager,attn-eager,attn-sdpa",
        "--jitcpu-dtypes=fp32",
        "--jitcpu-serialize=false",
        "--jitcpu-report=out/report.json",
        "--jitcpu-report=out/report.md",
        "-rA",
    )
    no_internal_error(result)
    assert outcomes(result) == {"test_fully_masked_row": "FAILED", "test_padded_rows_only": "PASSED"}
    # The failure names the mode, the numbers, where, the attention each mode ran, and the known cause.
    result.stdout.fnmatch_lines(
        [
            "*attn-eager*fp32*mismatch*last_hidden_state[[]2,*exceeds atol*fully masked*",
            "attention: sdpa (eager, attn-sdpa); eager (attn-eager)",
        ]
    )
    report = load_json(jitcpu_pytester.path / "out" / "report.json")
    assert schema_errors(report) == []
    records = {(r["mode"], name): r for name, recs in records_by_test(report).items() for r in recs}
    masked_eager = records[("attn-eager", "test_fully_masked_row")]
    assert masked_eager["status"] == "mismatch"
    assert masked_eager["worst"].startswith("last_hidden_state[2,")  # the fully masked row
    assert 1e-3 < masked_eager["max_abs_diff"] < 1.0
    # sdpa is what BERT runs as given: the same program as the reference, equal.
    assert records[("attn-sdpa", "test_fully_masked_row")]["status"] == "pass"
    assert records[("attn-sdpa", "test_fully_masked_row")]["max_abs_diff"] == 0.0
    padded_eager = records[("attn-eager", "test_padded_rows_only")]
    assert padded_eager["status"] == "pass" and padded_eager["max_abs_diff"] < 1e-5
    assert "padding" in padded_eager["generalization"]["kinds"]  # the padding variations ran on it
    for (mode, _), rec in records.items():
        assert rec["attn_implementation"] == {"eager": "sdpa", "attn-eager": "eager", "attn-sdpa": "sdpa"}[mode]
    # The Markdown matrix names the attention the model runs as given, after the model.
    markdown = (jitcpu_pytester.path / "out" / "report.md").read_text(encoding="utf-8")
    rows = [line for line in markdown.splitlines() if line.startswith("| ") and "`test_padded.py::" in line]
    assert rows and all(" | BertModel (sdpa attention) | " in row for row in rows[:2]), rows


def test_a_model_given_with_eager_attention_differs_under_sdpa() -> None:
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=tm.VOCAB, attn_implementation="eager", **tm.SMALL)).eval()
    inputs = tm.text_batch(batch=2)
    inputs["attention_mask"][1] = 0
    result = pytest_jitcpu.check(model, inputs, settings=_no_search(["eager", "attn-sdpa"]))
    rec = result.record("attn-sdpa")
    assert (rec.status, rec.attn_implementation) == ("mismatch", "sdpa")
    assert result.record("eager").attn_implementation == "eager"
    assert rec.worst.startswith("last_hidden_state[1,") and rec.max_abs_diff > 1e-3
    assert model.config._attn_implementation == "eager"


def test_a_plain_module_is_unavailable_with_the_reason() -> None:
    result = pytest_jitcpu.check(tm.TinyMLP(), (tm.features(),), modes=["eager", "attn-eager", "attn-flex"])
    for dtype in ("fp32", "bf16"):
        assert result.record("eager", dtype).attn_implementation is None
        for mode, name in (("attn-eager", "'eager'"), ("attn-flex", "'flex_attention'")):
            rec = result.record(mode, dtype)
            assert rec.status == "unavailable" and rec.attn_implementation is None
            assert rec.reason == (
                f"not a transformers model (TinyMLP holds no PreTrainedModel): there is no attn_implementation "
                f"to set to {name}"
            )
    assert result.ok  # unavailable is not a failure


def test_a_class_that_refuses_flex_is_unavailable_with_transformers_reason() -> None:
    model, inputs = tm.tiny_gpt2()
    result = pytest_jitcpu.check(model, inputs, modes=["eager", "attn-flex", "attn-eager"], dtypes=["fp32"])
    flex = result.record("attn-flex")
    assert flex.status == "unavailable"
    assert flex.reason == (
        "transformers: ValueError: GPT2Model does not support an attention implementation through torch's "
        "flex_attention."
    )
    assert result.record("attn-eager").status == "pass"
    assert model.config._attn_implementation == "sdpa"


def test_a_class_that_cannot_switch_at_run_time_is_unavailable() -> None:
    # MPNet has no AttentionInterface: transformers only logs that it cannot switch, and keeps eager.
    from transformers import MPNetConfig, MPNetModel

    torch.manual_seed(0)
    config = MPNetConfig(vocab_size=tm.VOCAB, max_position_embeddings=40, **tm.SMALL)
    model = MPNetModel(config).eval()
    result = pytest_jitcpu.check(model, tm.text_batch(), modes=["eager", "attn-sdpa", "attn-eager"], dtypes=["fp32"])
    sdpa = result.record("attn-sdpa")
    assert sdpa.status == "unavailable"
    assert sdpa.reason == (
        "transformers: MPNetModel does not support setting its attention implementation dynamically "
        "(it runs eager, not sdpa)"
    )
    same = result.record("attn-eager")
    assert same.status == "pass" and same.max_abs_diff == 0.0
    assert "the model as given already runs eager attention: this is the eager reference's program" in same.notes


def test_flex_attention_compiles_on_this_cpu_and_matches_eager() -> None:
    # transformers compiles the flex kernel with inductor on the first call: timed, then compared.
    model, inputs = tm.tiny_bert()
    inputs["attention_mask"][1, 5:] = 0
    result = pytest_jitcpu.check(model, inputs, settings=_no_search(["eager", "attn-flex"]))
    rec = result.record("attn-flex")
    assert (rec.status, rec.attn_implementation) == ("pass", "flex_attention"), rec.reason
    assert rec.compile_time_ms is not None and rec.compile_time_ms > 0
    assert rec.max_abs_diff is not None and rec.max_abs_diff < 1e-5
    assert model.config._attn_implementation == "sdpa"


def test_the_switch_shares_the_weights_and_leaves_the_model() -> None:
    model, _ = tm.tiny_bert()
    twin = attention.switched(model, "eager")
    assert attention.implementation(twin) == "eager" and attention.implementation(model) == "sdpa"
    assert twin.embeddings.word_embeddings.weight is model.embeddings.word_embeddings.weight
    assert twin.config is not model.config


def test_a_wrapper_around_a_transformers_model_is_switched() -> None:
    model, inputs = tm.tiny_bert()

    class Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state.mean(1)

    wrapped = Pooled().eval()
    assert attention.implementation(wrapped) == "sdpa"
    result = pytest_jitcpu.check(wrapped, inputs, settings=_no_search(["eager", "attn-eager"]))
    assert result.record("attn-eager").status == "pass"
    assert result.record("attn-eager").attn_implementation == "eager"


def _jitcpu(*args: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "pytest_jitcpu.cli", *args],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


def test_jitcpu_run_auto_names_the_attention_it_chose(tmp_path: Path) -> None:
    folder = encoder(tmp_path / "st")
    texts = tmp_path / "in.txt"
    texts.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    proc = _jitcpu(
        "run",
        str(folder),
        "--task",
        "feature-extraction",
        "--input",
        str(texts),
        "--output",
        str(out),
        "--mode",
        "auto",
        "--dtype",
        "fp32",
        "--candidates",
        "attn-eager,attn-sdpa",
        "--threads",
        "1",
        "-v",  # every candidate with its status
        env_extra={"JITCPU_CACHE_DIR": str(tmp_path / "cache")},
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    candidates = {line.split()[0]: line for line in lines if line.startswith("  ") and "/fp32" in line}
    assert set(candidates) == {"eager/fp32", "attn-eager/fp32", "attn-sdpa/fp32"}
    assert candidates["attn-eager/fp32"].split()[1] == "pass"
    assert "redundant  (the model already runs sdpa attention: that is eager/fp32)" in candidates["attn-sdpa/fp32"]
    # Whichever was faster here, the decision and the summary name its attention implementation.
    decision = next(line for line in lines if line.startswith("jitcpu: running "))
    chosen = decision.split()[2].rstrip(":")
    expected = {"eager/fp32": "sdpa", "attn-eager/fp32": "eager"}[chosen]
    assert decision.startswith(f"jitcpu: running {chosen}: ") and decision.endswith(f" ({expected} attention)")
    final = next(line for line in lines if line.startswith("jitcpu run: 10 rows"))
    assert final.endswith(f"; mode {chosen} ({expected} attention)")
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    np.testing.assert_allclose(
        np.array([r["embedding"] for r in rows], dtype=np.float32), mean_pooled(folder, SENTENCES).numpy(), atol=2e-5
    )


def test_jitcpu_run_with_an_attention_mode_runs_it(tmp_path: Path) -> None:
    folder = encoder(tmp_path / "st")
    texts = tmp_path / "in.txt"
    texts.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    args = ["run", str(folder), "--task", "feature-extraction", "--input", str(texts), "--output", str(out)]
    proc = _jitcpu(*args, "--mode", "attn-eager", "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    decision = next(line for line in proc.stderr.splitlines() if line.startswith("jitcpu: running "))
    assert decision.startswith("jitcpu: running attn-eager/fp32: verified on ")
    assert decision.endswith(" batches of this input (eager attention)")
    assert proc.stderr.splitlines()[-2].endswith("; mode attn-eager/fp32 (eager attention)")
