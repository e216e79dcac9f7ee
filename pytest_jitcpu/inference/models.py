"""Find and load a model for a task: a local save_pretrained folder or the embedded all-MiniLM-L6-v2.

There is no model hub at run time: a name that is not a local folder is a usage error that says what to
pass instead. Each task's model is wrapped in a small module whose forward() takes the tokenizer's tensors
and returns plain tensors (embeddings, logits), so tracing covers the pooling too and every mode returns
the same structure.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..settings import UsageError
from .folders import (  # noqa: F401 - re-exported: models.resolve etc. as before
    DEFAULT_LABEL,
    DEFAULT_NAMES,
    POOLINGS,
    SentenceTransformersLayout,
    default_model_path,
    infer_task,
    parse_task,
    resolve,
    sentence_transformers_layout,
)
from .task_table import TASKS, task_row  # noqa: F401 - TASKS re-exported: models.TASKS as before


@dataclass
class LoadedModel:
    """A model ready for one task: the wrapped module, its tokenizer and what was decided while loading."""

    path: Path
    label: str
    task: str
    module: torch.nn.Module
    tokenizer: Any
    input_names: tuple[str, ...]
    max_seq_length: int
    id2label: dict[int, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # e.g. "pooling: mean + normalize (from modules.json)"


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """transformers prints a progress bar and config chatter while loading; a CLI run shows neither."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


class Embedder(torch.nn.Module):
    """Encoder + pooling (+ L2 normalization): one embedding per row, as sentence-transformers computes it."""

    def __init__(self, model: torch.nn.Module, pooling: str = "mean", normalize: bool = False) -> None:
        super().__init__()
        self.model = model
        self.pooling = pooling
        self.normalize = normalize

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        hidden = self.model(**_model_kwargs(input_ids, attention_mask, token_type_ids))[0].float()
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        elif self.pooling == "max":
            pooled = hidden.masked_fill(mask == 0, -1e9).max(dim=1).values
        else:
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        if self.normalize:
            pooled = torch.nn.functional.normalize(pooled, p=2.0, dim=1)
        return pooled


class Logits(torch.nn.Module):
    """A classification or token-classification head: the logits as fp32."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.model(**_model_kwargs(input_ids, attention_mask, token_type_ids))[0].float()


class SpanLogits(torch.nn.Module):
    """A question-answering head: (start_logits, end_logits) as fp32."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(**_model_kwargs(input_ids, attention_mask, token_type_ids))
        return out[0].float(), out[1].float()


# The head wrappers a task row can name (a pooled one is built with its pooling and normalization).
_HEAD_WRAPPERS: dict[str, Any] = {"Embedder": Embedder, "Logits": Logits, "SpanLogits": SpanLogits}


def _model_kwargs(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None
) -> dict[str, torch.Tensor]:
    kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
    if token_type_ids is not None:
        kwargs["token_type_ids"] = token_type_ids
    return kwargs


def _auto_class(task: str) -> Any:
    import transformers

    return getattr(transformers, task_row(task).auto_class)


def _accepts(model: torch.nn.Module, name: str) -> bool:
    import inspect

    try:
        return name in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def _check_vocabulary(label: str, tokenizer: Any, model: Any) -> None:
    """transformers 5 builds an empty tokenizer (only its special tokens) for a folder without tokenizer
    files; every word would become [UNK] and the run would write outputs of nothing. Refuse a tokenizer
    far smaller than the model's embedding (half: padded vocabularies differ by a few percent only)."""
    size = getattr(getattr(model, "config", None), "vocab_size", None)
    tokens = len(tokenizer)
    if isinstance(size, int) and size > 0 and tokens < size // 2:
        raise UsageError(
            f"{label}: its tokenizer has {tokens} tokens but the model's vocab_size is {size}: the folder has no "
            "(or the wrong) tokenizer files; save the model's tokenizer with tokenizer.save_pretrained(folder)"
        )


def load(
    model: str | Path | None,
    task: str | None = None,
    max_seq_length: int | None = None,
    pooling: str | None = None,
    normalize: bool | None = None,
) -> LoadedModel:
    """Load MODEL for TASK from local files only (no hub); raises UsageError with what to do instead."""
    path, label = resolve(model)
    task, task_note = parse_task(task, path)
    row = task_row(task)
    layout = sentence_transformers_layout(path) if row.pooled else None
    weights_dir = layout.transformer_dir if layout else path
    notes = [task_note] if task_note else []
    from transformers import AutoTokenizer

    with quiet_transformers():
        try:
            tokenizer = AutoTokenizer.from_pretrained(weights_dir, local_files_only=True)
        except Exception as exc:  # noqa: BLE001 - any loader failure is reported as a usage error
            raise UsageError(
                f"{label}: cannot load its tokenizer ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
                "save it into the folder with tokenizer.save_pretrained(folder)"
            ) from None
        try:
            loaded, info = _auto_class(task).from_pretrained(
                weights_dir, local_files_only=True, dtype=torch.float32, output_loading_info=True
            )
        except Exception as exc:  # noqa: BLE001 - any loader failure is reported as a usage error
            raise UsageError(
                f"{label}: cannot load a {task} model ({type(exc).__name__}: {str(exc).splitlines()[0][:300]})"
            ) from None
    missing = sorted(info.get("missing_keys") or [])
    if missing and row.trained_head:
        # A base encoder loaded for a task gets a randomly initialised head: its outputs would be noise.
        raise UsageError(
            f"{label}: has no trained {task} head (missing weights: {', '.join(missing[:4])}); pass a folder "
            f"saved from a model fine-tuned for {task}"
        )
    _check_vocabulary(label, tokenizer, loaded)
    loaded.eval()
    if row.fast_tokenizer and not getattr(tokenizer, "is_fast", False):
        raise UsageError(f"{label}: {task} needs a fast tokenizer (character offsets); save a tokenizer.json")
    input_names = tuple(
        name
        for name in ("input_ids", "attention_mask", "token_type_ids")
        if name in ("input_ids", "attention_mask") or (name in tokenizer.model_input_names and _accepts(loaded, name))
    )
    module: torch.nn.Module
    if row.pooled:
        mode = pooling or (layout.pooling if layout else "mean")
        if mode not in POOLINGS:
            raise UsageError(f"--pooling: unknown pooling {mode!r}; choose from {', '.join(POOLINGS)}")
        norm = normalize if normalize is not None else bool(layout and layout.normalize)
        source = "modules.json" if layout else "default for a plain encoder"
        notes.append(f"pooling: {mode}{' + L2 normalize' if norm else ''} ({source})")
        module = _HEAD_WRAPPERS[row.head](loaded, mode, norm)
    else:
        module = _HEAD_WRAPPERS[row.head](loaded)
    module.eval()
    limit = _max_length(loaded, tokenizer, layout, task)
    if max_seq_length is not None:
        if max_seq_length < 8:
            raise UsageError(f"--max-seq-length: {max_seq_length} is too small (at least 8 tokens)")
        if max_seq_length > _position_limit(loaded):
            raise UsageError(
                f"--max-seq-length: {max_seq_length} is more than the model's {_position_limit(loaded)} positions"
            )
        limit = max_seq_length
    id2label = {int(k): str(v) for k, v in (getattr(loaded.config, "id2label", None) or {}).items()}
    return LoadedModel(
        path=path,
        label=label,
        task=task,
        module=module,
        tokenizer=tokenizer,
        input_names=input_names,
        max_seq_length=limit,
        id2label=id2label,
        notes=notes,
    )


def _position_limit(model: torch.nn.Module) -> int:
    limit = getattr(model.config, "max_position_embeddings", None)
    return int(limit) if isinstance(limit, int) and limit > 0 else 512


def _max_length(model: torch.nn.Module, tokenizer: Any, layout: SentenceTransformersLayout | None, task: str) -> int:
    """sentence-transformers' max_seq_length, the task row's default (384 for question answering, the
    guide's SQuAD run), else the smaller of the tokenizer's and the position embeddings' limits."""
    positions = _position_limit(model)
    if layout and layout.max_seq_length:
        return min(layout.max_seq_length, positions)
    default = task_row(task).max_seq_length
    if default:
        return min(default, positions)
    tok_limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_limit, int) and 0 < tok_limit < 100_000:
        return min(tok_limit, positions)
    return positions
