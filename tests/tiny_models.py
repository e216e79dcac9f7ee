"""Tiny models and input batches shared by the tests (and copied into pytester runs as ``tiny_models``).

Hand-written modules are each built to show one behaviour of the engine (a mismatch, a fallback, a
tuple-order gap, ...). Hugging Face architectures are built from configs (no hub): hidden size 32,
2 layers, vocabulary 99, so a check of one takes well under a second on one CPU thread.
``transformers`` is imported lazily: a run that only uses hand-written modules skips its import.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

VOCAB = 99
SMALL = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 37}


def text_batch(batch: int = 2, length: int = 8, vocab_size: int = VOCAB) -> dict[str, torch.Tensor]:
    """``input_ids`` and an ``attention_mask`` with one padded row, from a fixed seed."""
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1, vocab_size, (batch, length), generator=generator)
    mask = torch.ones_like(ids)
    mask[-1, -2:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def features(batch: int = 2, width: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, width, generator=torch.Generator().manual_seed(seed))


# --- hand-written modules ------------------------------------------------------------------------------


class TinyMLP(nn.Module):
    """A plain traceable model: ``forward(x) -> tensor``."""

    def __init__(self, width: int = 4) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.lin(x))


class RecordsPid(nn.Module):
    """Appends the id of the process each forward() runs in to ``path`` (which process ran the model)."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.path = path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(f"{os.getpid()}\n")
        return self.lin(x)


class TinyText(nn.Module):
    """HF-like: ``forward(input_ids, attention_mask=None)`` returning a dict with ``logits``."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(VOCAB, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> dict[str, Any]:
        hidden = self.embed(input_ids)
        if attention_mask is not None:
            hidden = hidden * attention_mask.unsqueeze(-1)
        return {"logits": self.head(hidden), "pooled": hidden.mean(dim=1)}


class TracingDependent(nn.Module):
    """Computes something else while being traced: every trace mode must come out as ``mismatch``."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.lin(x)
        return y + 1.0 if torch.jit.is_tracing() else y


class InfWhenTraced(nn.Module):
    """Returns infinities once traced: the diff is not a finite number (strict JSON must write null)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.lin(x)
        return y * float("inf") if torch.jit.is_tracing() else y


# A switch read in forward(): flipping it between the eager reference and the trace makes the traced
# graph compute something the reference did not (tracing freezes Python values into constants).
FLAG = {"double": False}


class FlagDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.lin(x)
        return y * 2 if FLAG["double"] else y


class PythonObjectOutput(nn.Module):
    """Returns a Python object next to a tensor: torch.jit.trace refuses it (``fallback``)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> dict[str, Any]:
        return {"out": self.lin(x), "meta": object()}


class Gap(nn.Module):
    """``skipped`` sits between ``a`` and ``c`` with a None default: no faithful positional tuple exists."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(4, 4)

    def forward(
        self, a: torch.Tensor, skipped: torch.Tensor | None = None, c: torch.Tensor | None = None
    ) -> torch.Tensor:
        y = self.lin(a)
        if skipped is not None:
            y = y + skipped
        return y - 2 * c


class GapTensorDefault(nn.Module):
    """Like Gap, but the skipped parameter has a tensor default, which trace-tuple can pass."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(4, 4)

    def forward(self, a: torch.Tensor, skipped: torch.Tensor = torch.ones(4), c: torch.Tensor | None = None):  # noqa: B008
        return self.lin(a) + skipped - 2 * c


class OrderSensitive(nn.Module):
    """``a - 2 b``: binding the inputs to the wrong parameters changes the result."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(4, 4)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.lin(a) - 2 * b


class KeywordOnly(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, a: torch.Tensor, *, b: torch.Tensor) -> torch.Tensor:
        return self.lin(a) + b


class RandomForward(nn.Module):
    """Adds fresh noise on every call: the eager reference differs from itself (``error``)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x) + torch.rand_like(x)


class WithDropout(nn.Module):
    """Dropout makes training mode random; the engine checks in eval mode and restores training."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(4, 4)
        self.drop = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.lin(x))


class ShrinksItself(nn.Module):
    """Like Swin's ``set_shift_and_window_size``: clamps ``self.window`` to the batch for good, counts its
    calls in a buffer and remembers the batch sizes it saw; the output's width is the window."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(4, 4)
        self.window = 4
        self.seen: list[int] = []
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.seen.append(int(x.shape[0]))
        if x.shape[0] < self.window:
            self.window = int(x.shape[0])
        return self.lin(x)[:, : self.window]


class FailsEager(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise ValueError("this model cannot run")


# --- Hugging Face architectures built tiny from configs -------------------------------------------------


def tiny_bert() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    return BertModel(BertConfig(vocab_size=VOCAB, **SMALL)).eval(), text_batch()


def tiny_roberta() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    from transformers import RobertaConfig, RobertaModel

    torch.manual_seed(0)
    return RobertaModel(RobertaConfig(vocab_size=VOCAB, **SMALL)).eval(), text_batch()


def tiny_distilbert() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    from transformers import DistilBertConfig, DistilBertModel

    torch.manual_seed(0)
    config = DistilBertConfig(vocab_size=VOCAB, dim=32, n_layers=2, n_heads=2, hidden_dim=37)
    return DistilBertModel(config).eval(), text_batch()


def tiny_gpt2(use_cache: bool = False) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    from transformers import GPT2Config, GPT2Model

    torch.manual_seed(0)
    # bos/eos inside the tiny vocabulary (GPT-2's 50256 would make transformers log a warning).
    config = GPT2Config(
        vocab_size=VOCAB,
        n_embd=32,
        n_layer=2,
        n_head=2,
        n_positions=32,
        use_cache=use_cache,
        bos_token_id=0,
        eos_token_id=0,
    )
    return GPT2Model(config).eval(), {"input_ids": text_batch()["input_ids"]}


def tiny_t5() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """T5Model is an encoder-decoder: it needs ``decoder_input_ids``; no cache so it can be traced."""
    from transformers import T5Config, T5Model

    torch.manual_seed(0)
    config = T5Config(vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=2, use_cache=False)
    batch = text_batch()
    batch["decoder_input_ids"] = batch["input_ids"][:, :5]
    return T5Model(config).eval(), batch


def tiny_vit() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(0)
    config = ViTConfig(image_size=16, patch_size=4, num_channels=3, **SMALL)
    pixels = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    return ViTModel(config).eval(), {"pixel_values": pixels}


def tiny_wav2vec2() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    torch.manual_seed(0)
    config = Wav2Vec2Config(
        vocab_size=VOCAB,
        **SMALL,
        conv_dim=(16, 16),
        conv_stride=(5, 2),
        conv_kernel=(10, 3),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
    )
    audio = torch.randn(2, 400, generator=torch.Generator().manual_seed(0))
    return Wav2Vec2Model(config).eval(), {"input_values": audio}


# --- models that change their own Python state inside forward() (issue 9) ---------------------------


def tiny_bigbird() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """block_sparse attention on a sequence too short for it: forward() switches the model to
    ``original_full`` for good (and swaps its attention submodules)."""
    from transformers import BigBirdConfig, BigBirdModel

    torch.manual_seed(0)
    config = BigBirdConfig(vocab_size=VOCAB, attention_type="block_sparse", block_size=2, num_random_blocks=2, **SMALL)
    return BigBirdModel(config).eval(), text_batch()


def tiny_swin() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """Swin clamps ``window_size``/``shift_size`` to small inputs inside forward()."""
    from transformers import SwinConfig, SwinModel

    torch.manual_seed(0)
    config = SwinConfig(
        image_size=16, patch_size=2, num_channels=3, embed_dim=16, depths=[1, 1], num_heads=[2, 2], window_size=2
    )
    pixels = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    return SwinModel(config).eval(), {"pixel_values": pixels}


def tiny_clvp() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """ClvpEncoder's rotary embedding caches the last sequence length and its table (head dim >= 32)."""
    from transformers import ClvpEncoder, ClvpEncoderConfig

    torch.manual_seed(0)
    config = ClvpEncoderConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        projection_dim=16,
    )
    ids = torch.randint(1, VOCAB, (3, 10), generator=torch.Generator().manual_seed(0))
    return ClvpEncoder(config).eval(), {"input_ids": ids}


# --- coupled multimodal inputs (issue 9): image tokens in input_ids must match pixel_values ------------

IMAGE_TOKEN = 7


class CoupledImageText(nn.Module):
    """Each row of ``input_ids`` holds one image token (id 7) per patch of ``pixel_values`` [batch,
    patches, 4]; eager raises otherwise, as LLaVA does when its placeholders and image features differ.
    ``bake_batch``: a reshape by the example's batch size read as a Python int (frozen by a trace)."""

    def __init__(self, bake_batch: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(20, 8)
        self.patch = nn.Linear(4, 8)
        self.bake_batch = bake_batch

    def forward(
        self, input_ids: torch.Tensor, pixel_values: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        image = input_ids == IMAGE_TOKEN
        if not bool((image.sum(dim=1) == pixel_values.shape[1]).all()):
            raise ValueError("image tokens and image patches do not match")
        hidden = self.embed(input_ids).masked_scatter(image.unsqueeze(-1), self.patch(pixel_values))
        hidden = hidden * attention_mask.unsqueeze(-1)
        if self.bake_batch:
            rows = int(input_ids.shape[0])
            return hidden.reshape(rows, -1).sum(dim=1)
        return hidden.sum(dim=(1, 2))


def coupled_batch(batch: int = 2, length: int = 8, patches: int = 3) -> dict[str, torch.Tensor]:
    """Inputs for :class:`CoupledImageText`: ``patches`` image tokens in every row, the last row padded."""
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(8, 20, (batch, length), generator=generator)
    ids[:, 1 : 1 + patches] = IMAGE_TOKEN
    mask = torch.ones_like(ids)
    mask[-1, -1:] = 0
    pixels = torch.randn(batch, patches, 4, generator=generator)
    return {"input_ids": ids, "pixel_values": pixels, "attention_mask": mask}


class OnlyTheExample(nn.Module):
    """Eager accepts the example and nothing else: no other valid input exists (an untested pass)."""

    def __init__(self, example: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("example", example.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape != self.example.shape or not bool(torch.equal(x, self.example)):
            raise ValueError("only the example is a valid input")
        return x * 2


class LogitsOnly(nn.Module):
    """A Hugging Face model's ``logits`` alone (what one deploys; a trace cannot output its ModelOutput)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, input_ids: torch.Tensor, pixel_values: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        return self.model(input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask).logits


def tiny_llava(batch: int = 2, length: int = 10) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """A LLaVA from config classes (CLIP vision 8x8 image, patch 4: 4 image tokens per row; Llama text)."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    vision = CLIPVisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=8, patch_size=4
    )
    text = LlamaConfig(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        vocab_size=40,
        max_position_embeddings=64,
        use_cache=False,
    )
    config = LlavaConfig(
        vision_config=vision, text_config=text, image_token_id=IMAGE_TOKEN, vision_feature_select_strategy="default"
    )
    torch.manual_seed(0)
    model = LogitsOnly(LlavaForConditionalGeneration(config)).eval()
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(8, 40, (batch, length), generator=generator)
    ids[:, 1:5] = IMAGE_TOKEN  # (8 / 4) ** 2 patches
    pixels = torch.randn(batch, 3, 8, 8, generator=generator)
    return model, {"input_ids": ids, "pixel_values": pixels, "attention_mask": torch.ones_like(ids)}


class Qwen2VLLogits(nn.Module):
    """A Qwen2-VL's ``logits`` alone, from its five coupled inputs."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pixel_values: torch.Tensor,
        image_grid_thw: torch.Tensor,
        mm_token_type_ids: torch.Tensor,
    ) -> torch.Tensor:
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            pixel_values=pixel_values,
            image_grid_thw=image_grid_thw,
            mm_token_type_ids=mm_token_type_ids,
        )
        return out.logits


def tiny_qwen2_vl(batch: int = 2, length: int = 12) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """A Qwen2-VL from config classes: one 2x2-patch image per row, its 4 patches flattened into
    ``pixel_values`` [batch * 4, 12] (dim 0 a multiple of the batch), ``image_grid_thw`` [batch, 3]."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    text = {
        "hidden_size": 32,
        "intermediate_size": 37,
        "num_hidden_layers": 1,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": VOCAB,
        "max_position_embeddings": 128,
        "rope_scaling": {"type": "mrope", "mrope_section": [1, 1, 2]},
        "use_cache": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
    }
    vision = {
        "depth": 1,
        "embed_dim": 32,
        "hidden_size": 32,
        "num_heads": 4,
        "patch_size": 2,
        "spatial_merge_size": 1,
        "temporal_patch_size": 1,
        "in_channels": 3,
    }
    config = Qwen2VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=IMAGE_TOKEN,
        video_token_id=8,
        vision_start_token_id=5,
        vision_end_token_id=6,
        bos_token_id=1,
        eos_token_id=2,
    )
    torch.manual_seed(0)
    model = Qwen2VLLogits(Qwen2VLForConditionalGeneration(config)).eval()
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(10, VOCAB, (batch, length), generator=generator)
    ids[:, 1], ids[:, 2:6], ids[:, 6] = 5, IMAGE_TOKEN, 6  # <vision_start> 4 image tokens <vision_end>
    inputs = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "pixel_values": torch.randn(batch * 4, 3 * 2 * 2, generator=generator),
        "image_grid_thw": torch.tensor([[1, 2, 2]] * batch),
        "mm_token_type_ids": (ids == IMAGE_TOKEN).long(),
    }
    return model, inputs
