"""The 26 tiny models of ``benchmarks/check_cost.py`` and the hand-written check a user would write without
the plugin (copied next to the generated test files as ``check_cost_models``).

Hugging Face architectures are built from their config classes (hidden size 32, 2 layers, vocabulary
99: no hub), plain ``nn.Module`` s cover what configs do not (an MLP on ``[batch, seq, features]``, a
conv net, an LSTM, ...), and three traps trace one branch or one shape of their example that other
inputs do not take (the plugin's search reports them as ``diverges``; the hand-written check, which
only compares the example, passes them). Every builder returns ``(model, inputs)`` with the inputs in
``forward()``'s parameter order, so ``tuple(inputs.values())`` is the positional call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

VOCAB = 99
SMALL = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 37}


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def text_batch(batch: int = 2, length: int = 8) -> dict[str, torch.Tensor]:
    """``input_ids`` and an ``attention_mask`` with the last row padded."""
    ids = torch.randint(1, VOCAB, (batch, length), generator=_gen())
    mask = torch.ones_like(ids)
    mask[-1, -2:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def pixels(size: int = 16, channels: int = 3) -> dict[str, torch.Tensor]:
    return {"pixel_values": torch.randn(2, channels, size, size, generator=_gen())}


# --- Hugging Face architectures from config classes ------------------------------------------------------


def bert() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    return BertModel(BertConfig(vocab_size=VOCAB, **SMALL)).eval(), text_batch()


def roberta() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    from transformers import RobertaConfig, RobertaModel

    torch.manual_seed(0)
    return RobertaModel(RobertaConfig(vocab_size=VOCAB, **SMALL)).eval(), text_batch()


def distilbert() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    from transformers import DistilBertConfig, DistilBertModel

    torch.manual_seed(0)
    config = DistilBertConfig(vocab_size=VOCAB, dim=32, n_layers=2, n_heads=2, hidden_dim=37)
    return DistilBertModel(config).eval(), text_batch()


def albert() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    from transformers import AlbertConfig, AlbertModel

    torch.manual_seed(0)
    return AlbertModel(AlbertConfig(vocab_size=VOCAB, embedding_size=16, **SMALL)).eval(), text_batch()


def electra() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    from transformers import ElectraConfig, ElectraModel

    torch.manual_seed(0)
    return ElectraModel(ElectraConfig(vocab_size=VOCAB, embedding_size=16, **SMALL)).eval(), text_batch()


def mpnet() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    from transformers import MPNetConfig, MPNetModel

    torch.manual_seed(0)
    return MPNetModel(MPNetConfig(vocab_size=VOCAB, **SMALL)).eval(), text_batch()


def gpt2() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    from transformers import GPT2Config, GPT2Model

    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=VOCAB,
        n_embd=32,
        n_layer=2,
        n_head=2,
        n_positions=32,
        use_cache=False,
        bos_token_id=0,
        eos_token_id=0,
    )
    # input_ids only: GPT-2's forward() puts past_key_values before attention_mask
    return GPT2Model(config).eval(), {"input_ids": text_batch()["input_ids"]}


def qwen2() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    from transformers import Qwen2Config, Qwen2Model

    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=VOCAB,
        num_key_value_heads=1,
        max_position_embeddings=64,
        use_cache=False,
        bos_token_id=0,
        eos_token_id=0,
        **SMALL,
    )
    return Qwen2Model(config).eval(), text_batch()


def llama() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    from transformers import LlamaConfig, LlamaModel

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB,
        num_key_value_heads=2,
        max_position_embeddings=64,
        use_cache=False,
        bos_token_id=0,
        eos_token_id=0,
        **SMALL,
    )
    return LlamaModel(config).eval(), text_batch()


def t5_encoder() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(0)
    config = T5Config(vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=2, use_cache=False)
    return T5EncoderModel(config).eval(), text_batch()


def bart_encoder() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    from transformers import BartConfig, BartModel

    torch.manual_seed(0)
    config = BartConfig(
        vocab_size=VOCAB,
        d_model=32,
        encoder_layers=2,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=37,
        decoder_ffn_dim=37,
        max_position_embeddings=64,
        use_cache=False,
    )
    return BartModel(config).get_encoder().eval(), text_batch()


def vit() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(0)
    return ViTModel(ViTConfig(image_size=16, patch_size=4, num_channels=3, **SMALL)).eval(), pixels()


def deit() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    from transformers import DeiTConfig, DeiTModel

    torch.manual_seed(0)
    return DeiTModel(DeiTConfig(image_size=16, patch_size=4, num_channels=3, **SMALL)).eval(), pixels()


def convnext() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    from transformers import ConvNextConfig, ConvNextModel

    torch.manual_seed(0)
    config = ConvNextConfig(num_channels=3, hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, patch_size=2)
    return ConvNextModel(config).eval(), pixels()


def resnet() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    from transformers import ResNetConfig, ResNetModel

    torch.manual_seed(0)
    config = ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic")
    return ResNetModel(config).eval(), pixels(32)


def wav2vec2() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    torch.manual_seed(0)
    config = Wav2Vec2Config(
        vocab_size=VOCAB,
        conv_dim=(16, 16),
        conv_stride=(5, 2),
        conv_kernel=(10, 3),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        **SMALL,
    )
    return Wav2Vec2Model(config).eval(), {"input_values": torch.randn(2, 400, generator=_gen())}


def whisper_encoder() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    torch.manual_seed(0)
    config = WhisperConfig(
        vocab_size=VOCAB,
        num_mel_bins=8,
        d_model=32,
        encoder_layers=2,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=37,
        decoder_ffn_dim=37,
        max_source_positions=16,
        max_target_positions=16,
        use_cache=False,
        pad_token_id=0,
        bos_token_id=0,
        eos_token_id=0,
        decoder_start_token_id=0,
    )
    # The encoder takes exactly 2 * max_source_positions frames: eager rejects every other length.
    return WhisperEncoder(config).eval(), {"input_features": torch.randn(2, 8, 32, generator=_gen())}


def clip_text() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    config = CLIPTextConfig(vocab_size=VOCAB, max_position_embeddings=16, bos_token_id=0, eos_token_id=2, **SMALL)
    return CLIPTextModel(config).eval(), text_batch()


# --- plain modules -----------------------------------------------------------------------------------------


class SeqMLP(nn.Module):
    """Three layers on a float ``[batch, seq, features]`` input."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 32), nn.GELU(), nn.Linear(32, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 16, 3), nn.ReLU()
        )
        self.head = nn.Linear(16, 10)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(pixel_values).mean(dim=(2, 3)))


class TextClassifier(nn.Module):
    """Embedding, masked mean pooling, a head; returns a dict like Hugging Face models."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(VOCAB, 16)
        self.head = nn.Linear(16, 3)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        hidden = self.embed(input_ids) * attention_mask.unsqueeze(-1)
        pooled = hidden.sum(dim=1) / attention_mask.sum(dim=1, keepdim=True).clamp(min=1)
        return {"logits": self.head(pooled), "pooled": pooled}


class LSTMTagger(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(VOCAB, 16)
        self.lstm = nn.LSTM(16, 16, batch_first=True)
        self.head = nn.Linear(16, 5)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.embed(input_ids))
        return self.head(out)


class EncoderStack(nn.Module):
    """``nn.TransformerEncoder`` on a float ``[batch, seq, features]`` input."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        layer = nn.TransformerEncoderLayer(32, 2, dim_feedforward=37, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)


class ValueBranch(nn.Module):
    """Trap: a branch on the data (``if x.mean() > 0``): a trace keeps the example's branch."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.lin(x)
        if y.mean() > 0:
            return y * 2
        return y - 1


class BakedBatch(nn.Module):
    """Trap: ``int(x.shape[0])`` becomes a constant in a trace: other batch sizes raise."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(16, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = int(x.shape[0])
        return self.lin(x).reshape(rows, -1).sum(dim=1)


class ItemScale(nn.Module):
    """Trap: ``.item()`` freezes the example's scale into the trace."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = float(x.abs().max().item())
        return self.lin(x / scale)


def _features(*shape: int) -> dict[str, torch.Tensor]:
    return {"x": torch.randn(*shape, generator=_gen())}


def seq_mlp() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    return SeqMLP().eval(), _features(2, 8, 16)


def conv_net() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    return ConvNet().eval(), pixels()


def text_classifier() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    return TextClassifier().eval(), text_batch()


def lstm_tagger() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    return LSTMTagger().eval(), {"input_ids": text_batch()["input_ids"]}


def encoder_stack() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    return EncoderStack().eval(), _features(2, 8, 32)


def value_branch() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    return ValueBranch().eval(), _features(2, 16)


def baked_batch() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    return BakedBatch().eval(), _features(2, 4, 16)


def item_scale() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    return ItemScale().eval(), _features(2, 8, 16)


MODELS: dict[str, Callable[[], tuple[nn.Module, dict[str, torch.Tensor]]]] = {
    "bert": bert,
    "roberta": roberta,
    "distilbert": distilbert,
    "albert": albert,
    "electra": electra,
    "mpnet": mpnet,
    "gpt2": gpt2,
    "llama": llama,
    "qwen2": qwen2,
    "t5_encoder": t5_encoder,
    "bart_encoder": bart_encoder,
    "vit": vit,
    "deit": deit,
    "convnext": convnext,
    "resnet": resnet,
    "wav2vec2": wav2vec2,
    "whisper_encoder": whisper_encoder,
    "clip_text": clip_text,
    "seq_mlp": seq_mlp,
    "conv_net": conv_net,
    "text_classifier": text_classifier,
    "lstm_tagger": lstm_tagger,
    "encoder_stack": encoder_stack,
    "value_branch": value_branch,
    "baked_batch": baked_batch,
    "item_scale": item_scale,
}
TRAPS = ("value_branch", "baked_batch", "item_scale")


# --- the hand-written check ------------------------------------------------------------------------------

# The plugin's default tolerances (pytest_jitcpu/compare.py), per output tensor: atol scaled by the
# reference's largest magnitude, fp32 as torch.testing's float32 default, bf16 autocast against the fp32
# reference with a BF16 tolerance.
TOLERANCE = {"fp32": (1e-5, 1.3e-6), "bf16": (5e-2, 1.6e-2)}


def _close(got: list[torch.Tensor], reference: list[torch.Tensor], dtype: str) -> None:
    assert len(got) == len(reference), f"{len(got)} outputs, eager gave {len(reference)}"
    atol_scale, rtol = TOLERANCE[dtype]
    for out, ref in zip(got, reference, strict=True):
        scale = float(ref.abs().max()) if ref.is_floating_point() and ref.numel() else 0.0
        atol = atol_scale * scale if dtype == "bf16" else atol_scale * max(1.0, scale)
        got_float = out.float() if out.is_floating_point() else out
        torch.testing.assert_close(got_float, ref, atol=max(atol, 1e-6), rtol=rtol)


def _tensors(out: Any) -> list[torch.Tensor]:
    """The output's tensors in order (a ModelOutput or dict by value, tuples and lists in order)."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for v in out.values() for t in _tensors(v)]
    if isinstance(out, (tuple, list)):
        return [t for v in out for t in _tensors(v)]
    return []


def _precision(dtype: str) -> Any:
    if dtype == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False)
    return torch.autocast("cpu", enabled=False)


def hand_check(model: nn.Module, inputs: dict[str, torch.Tensor], dtypes: tuple[str, ...] = ("fp32", "bf16")) -> None:
    """What a user writes without the plugin: eager fp32 as the reference, then per dtype a
    ``torch.jit.trace`` with ``example_kwarg_inputs`` and one with the positional tuple, each frozen,
    run twice (TorchScript's profiling executor optimizes on the second run, which is compared) and
    compared with ``torch.testing.assert_close``."""
    positional = tuple(inputs.values())
    with torch.no_grad():
        reference = _tensors(model(**inputs))
        for dtype in dtypes:
            for example in ({"example_kwarg_inputs": inputs}, {"example_inputs": positional}):
                with _precision(dtype):
                    traced = torch.jit.trace(model, strict=False, check_trace=False, **example)
                    frozen = torch.jit.freeze(traced.eval())
                    for _ in range(2):
                        out = frozen(**inputs) if "example_kwarg_inputs" in example else frozen(*positional)
                _close(_tensors(out), reference, dtype)
