"""An example model suite using pytest-jitcpu: copy this file into your project's tests.

Run: pytest examples --jitcpu-report=out/report.json --jitcpu-report=out/report.md
"""

import pytest
import torch
from transformers import (
    BertConfig,
    BertModel,
    DistilBertConfig,
    DistilBertModel,
    GPT2Config,
    GPT2Model,
    ViTConfig,
    ViTModel,
)

SMALL = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 37}


def text_batch(vocab_size: int = 99, batch: int = 2, length: int = 8) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1, vocab_size, (batch, length), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, -2:] = 0  # one padded row
    return {"input_ids": ids, "attention_mask": mask}


@pytest.mark.jitcpu
def test_bert(jitcpu):
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=99, **SMALL)).eval()
    result = jitcpu.check(model, text_batch())
    assert result.status("trace-dict") == "pass"


@pytest.mark.jitcpu(dtypes=["fp32"])
def test_distilbert(jitcpu):
    torch.manual_seed(0)
    config = DistilBertConfig(vocab_size=99, dim=32, n_layers=2, n_heads=2, hidden_dim=37)
    jitcpu.check(DistilBertModel(config).eval(), text_batch())


@pytest.mark.jitcpu(dtypes=["fp32"])
def test_vit(jitcpu):
    torch.manual_seed(0)
    config = ViTConfig(image_size=16, patch_size=4, num_channels=3, **SMALL)
    jitcpu.check(ViTModel(config).eval(), {"pixel_values": torch.randn(2, 3, 16, 16)})


@pytest.mark.jitcpu(dtypes=["fp32"], fallback="expect")
def test_gpt2_with_cache_cannot_be_traced(jitcpu):
    # GPT-2 returns a DynamicCache unless use_cache=False: tracing falls back, as expected here.
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=99, n_embd=32, n_layer=2, n_head=2, n_positions=32)
    jitcpu.check(GPT2Model(config).eval(), {"input_ids": text_batch()["input_ids"]})


@pytest.mark.jitcpu(dtypes=["fp32"])
def test_gpt2_without_cache(jitcpu):
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=99, n_embd=32, n_layer=2, n_head=2, n_positions=32, use_cache=False)
    # input_ids only: GPT-2's forward() puts `cache` before `attention_mask`, so a positional tuple of
    # (input_ids, attention_mask) cannot be built; trace-tuple would report that as a fallback.
    jitcpu.check(GPT2Model(config).eval(), {"input_ids": text_batch()["input_ids"]})
