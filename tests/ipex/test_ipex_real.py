"""The ipex mode with the real Intel Extension for PyTorch (tox env ``ipex``: torch 2.8.0 + IPEX 2.8.0).

Skipped, with IPEX's reason, where IPEX is not usable (the default env); in the ``ipex`` env the variable
PYTEST_JITCPU_TESTS_NEED_IPEX=1 turns that skip into a failure, so CI cannot pass by skipping.
"""

from __future__ import annotations

import os

import pytest
import tiny_models as tm
import torch
from plugin_runs import load_json, outcomes, records_by_test, run
from transformers import BertConfig, BertModel

from pytest_jitcpu import engine, environment
from pytest_jitcpu.backends import ipex

REASON = ipex.unavailable_reason()
if REASON and os.environ.get("PYTEST_JITCPU_TESTS_NEED_IPEX") == "1":
    pytest.fail(f"this env must have a usable IPEX: {REASON}", pytrace=False)
if REASON:
    pytest.skip(f"IPEX not usable here: {REASON}", allow_module_level=True)

# The MHA fusion matches the eager attention code path, not SDPA.
INNER = """
import pytest
import torch
from transformers import BertConfig, BertModel, DistilBertConfig, DistilBertModel, GPT2Config, GPT2Model, ViTConfig, ViTModel

import tiny_models as tm

EAGER = {"attn_implementation": "eager"}


def test_bert(jitcpu):
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=tm.VOCAB, **tm.SMALL, **EAGER)).eval()
    jitcpu.check(model, tm.text_batch())


def test_distilbert(jitcpu):
    torch.manual_seed(0)
    config = DistilBertConfig(vocab_size=tm.VOCAB, dim=32, n_layers=2, n_heads=2, hidden_dim=37, **EAGER)
    jitcpu.check(DistilBertModel(config).eval(), tm.text_batch())


def test_vit(jitcpu):
    torch.manual_seed(0)
    model = ViTModel(ViTConfig(image_size=16, patch_size=4, num_channels=3, **tm.SMALL, **EAGER)).eval()
    jitcpu.check(model, {"pixel_values": torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))})


def test_gpt2(jitcpu):
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=tm.VOCAB, n_embd=32, n_layer=2, n_head=2, n_positions=32, use_cache=False,
        bos_token_id=0, eos_token_id=0, **EAGER,
    )
    jitcpu.check(GPT2Model(config).eval(), tm.text_batch())
"""

# The guide's fusions IPEX applies to each architecture in fp32 (seen on AVX2 and AVX-512 machines).
EXPECTED_FUSIONS = {
    "BertModel": {"MHA", "concat linear", "add+layernorm"},
    "DistilBertModel": {"MHA", "concat linear", "add+layernorm"},
    "ViTModel": {"concat linear", "add+layernorm"},
    "GPT2Model": {"MHA", "add+layernorm"},
}


def test_ipex_mode_on_tiny_models(jitcpu_pytester: pytest.Pytester) -> None:
    jitcpu_pytester.makepyfile(test_inner=INNER)
    jitcpu_pytester.makeini("[pytest]\nfilterwarnings = error\n")
    result = run(
        jitcpu_pytester,
        "-rA",
        "--jitcpu-modes=eager",
        "--jitcpu-ipex",
        "--jitcpu-examples=3",
        "--jitcpu-serialize=false",
        "--jitcpu-report=out/r.json",
        "--jitcpu-report=out/r.md",
        fast=False,
    )
    assert outcomes(result) == dict.fromkeys(("test_bert", "test_distilbert", "test_vit", "test_gpt2"), "PASSED")
    assert [line for line in result.outlines if line.startswith("jitcpu: ipex")] == ["jitcpu: ipex usable"]
    report = load_json(jitcpu_pytester.path / "out" / "r.json")
    assert report["environment"]["ipex"] == ipex.version()
    bf16_reason = ipex.bf16_unavailable_reason()
    found = records_by_test(report)
    assert len(found) == 4
    for records in found.values():
        by_key = {(r["mode"], r["dtype"]): r for r in records}
        assert set(by_key) == {("eager", "fp32"), ("eager", "bf16"), ("ipex", "fp32"), ("ipex", "bf16")}
        fp32 = by_key["ipex", "fp32"]
        model = fp32["model"]
        assert fp32["status"] == "pass", (model, fp32["reason"])
        assert fp32["frozen"] is True and fp32["max_abs_diff"] <= fp32["atol"]
        assert EXPECTED_FUSIONS[model] <= set(ipex.guide_fusions(fp32["fused_ops"])), (model, fp32["fused_ops"])
        assert all(op.split(" ")[0].split("+")[0].startswith(("ipex::", "ipex_prepack::")) for op in fp32["fused_ops"])
        bf16 = by_key["ipex", "bf16"]
        if bf16_reason:  # decided from this CPU's flags, as the engine does
            assert bf16["status"] == "unavailable" and bf16["reason"] == bf16_reason
            assert "BF16 weight prepack needs avx_ne_convert" in bf16["reason"]
        else:
            assert bf16["status"] == "pass", (model, bf16["reason"])
            assert bf16["fused_ops"], model
    markdown = (jitcpu_pytester.path / "out" / "r.md").read_text(encoding="utf-8")
    assert "ipex::add_layernorm (add+layernorm)" in markdown


def test_ipex_checks_leave_the_model_and_the_plain_trace_modes_alone() -> None:
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=tm.VOCAB, **tm.SMALL, attn_implementation="eager")).eval()
    batch = tm.text_batch()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modules = [type(m) for m in model.modules()]
    result = engine.check(model, batch, modes=["eager", "trace-dict", "ipex"], dtypes=["fp32", "bf16"])
    rec = result.record("ipex")
    assert rec.status == "pass" and "ipex::mha_scores_calc_v2 (MHA)" in rec.fused_ops
    # IPEX's import turns its graph rewrites on for every frozen graph; they stay off outside the ipex
    # mode, so trace-dict checks plain TorchScript (in bf16 on a CPU without BF16 IPEX kernels, the
    # rewritten graph would fail to run).
    assert result.status("trace-dict", "bf16") == "pass", result.record("trace-dict", "bf16").reason
    assert not ipex.load()[0]._C.get_jit_opt()
    assert [type(m) for m in model.modules()] == modules  # ipex.optimize swaps modules: only in its copy
    assert model.state_dict().keys() == before.keys()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.skipif(environment.bf16_weight_prepack(), reason="this CPU can prepack BF16 weights")
def test_ipex_bf16_error_at_run_time_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    """CPU flags that claim BF16 support (as a VM may) do not turn IPEX's refusal into an error."""
    monkeypatch.setattr(environment, "bf16_weight_prepack", lambda: True)
    model, batch = tm.tiny_bert()
    rec = engine.check(model, batch, modes=["eager", "ipex"], dtypes=["bf16"]).record("ipex", "bf16")
    assert rec.status == "unavailable"
    assert rec.reason.startswith("IPEX bf16 is not supported on this CPU: AssertionError: BF16 weight prepack needs")


CRASHES_UNDER_IPEX = """
import os
import signal

import torch
import tiny_models as tm


class CrashesWhenTraced(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(4, 4)

    def forward(self, x):
        # ipex.optimize FX-traces the copy (x is a Proxy), then the mode jit-traces the result
        if isinstance(x, torch.fx.Proxy) or torch.jit.is_tracing():
            os.kill(os.getpid(), signal.SIGSEGV)
        return self.lin(x)


def test_crashes(jitcpu):
    jitcpu.check(CrashesWhenTraced(), {"x": tm.features()})


def test_after(jitcpu):
    jitcpu.check(tm.TinyMLP(), {"x": tm.features()})
"""


def test_a_crash_under_ipex_is_an_error_record_and_the_session_goes_on(jitcpu_pytester: pytest.Pytester) -> None:
    jitcpu_pytester.makepyfile(test_crashes=CRASHES_UNDER_IPEX)
    result = run(
        jitcpu_pytester,
        "-rA",
        "--jitcpu-modes=eager",
        "--jitcpu-ipex",
        "--jitcpu-dtypes=fp32",
        "--jitcpu-examples=3",
        "--jitcpu-serialize=false",
        "--jitcpu-report=r.json",
        fast=False,
    )
    assert outcomes(result) == {"test_crashes": "FAILED", "test_after": "PASSED"}
    found = records_by_test(load_json(jitcpu_pytester.path / "r.json"))
    crashed = {r["mode"]: r for r in found["test_crashes"]}
    assert crashed["eager"]["status"] == "pass"
    assert crashed["ipex"]["status"] == "error"
    assert crashed["ipex"]["reason"].startswith("crashed: signal 11 (SIGSEGV) while building ipex/fp32")
    assert {r["status"] for r in found["test_after"]} == {"pass"}
    assert not any("not crash-isolated" in n for r in found["test_after"] for n in r["notes"])
