"""Tiny models saved with save_pretrained (plus a tiny WordPiece tokenizer) for the inference tests:
no network, a second or two to build."""

from __future__ import annotations

import json
import string
from pathlib import Path

import torch
from transformers import (
    BertConfig,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
    BertTokenizer,
)

WORDS = (
    "the a an is of and to in it was on at for with by from cat dog fox bird quick brown jumps over lazy "
    "paris capital france london city river what where who when which why how . , ? !"
).split()
SMALL = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 37}
MAX_POSITIONS = 128

SENTENCES = [
    "the quick brown fox jumps over the lazy dog",
    "a cat",
    "paris is the capital of france",
    "what is the city on the river ?",
    "the dog was in the city with a bird and a cat and a fox",
    "london",
    "who jumps over the fox ?",
    "it was a lazy dog , it was a lazy cat , and it was a lazy bird on a lazy river at a lazy city",
    "an owl",
    "birds fly over rivers and cities",
]


def tokenizer() -> BertTokenizer:
    # Every lower-case word splits into known pieces (letters and ##letters), so nothing becomes [UNK].
    pieces = list(string.ascii_lowercase) + [f"##{c}" for c in string.ascii_lowercase]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *pieces]
    vocab = list(dict.fromkeys(vocab))
    return BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}, model_max_length=MAX_POSITIONS)


def config(**extra: object) -> BertConfig:
    return BertConfig(vocab_size=len(tokenizer()), max_position_embeddings=MAX_POSITIONS, **SMALL, **extra)


def save(model: torch.nn.Module, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer().save_pretrained(folder)
    return folder


def encoder(folder: Path, sentence_transformers: bool = True) -> Path:
    """A bare BERT encoder; with ``sentence_transformers``, the modules.json/1_Pooling layout of
    all-MiniLM-L6-v2 (mean pooling + Normalize)."""
    torch.manual_seed(0)
    save(BertModel(config()).eval(), folder)
    if sentence_transformers:
        modules = [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
        ]
        (folder / "modules.json").write_text(json.dumps(modules), encoding="utf-8")
        (folder / "1_Pooling").mkdir(exist_ok=True)
        (folder / "1_Pooling" / "config.json").write_text(
            json.dumps({"word_embedding_dimension": 32, "pooling_mode_mean_tokens": True}), encoding="utf-8"
        )
        (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 64}), encoding="utf-8")
    return folder


def classifier(folder: Path) -> Path:
    torch.manual_seed(1)
    labels = {0: "negative", 1: "neutral", 2: "positive"}
    model = BertForSequenceClassification(
        config(num_labels=3, id2label=labels, label2id={v: k for k, v in labels.items()})
    )
    return save(model.eval(), folder)


def tagger(folder: Path) -> Path:
    torch.manual_seed(2)
    labels = {0: "O", 1: "B-ANIMAL", 2: "I-ANIMAL", 3: "B-PLACE", 4: "I-PLACE"}
    model = BertForTokenClassification(
        config(num_labels=5, id2label=labels, label2id={v: k for k, v in labels.items()})
    )
    return save(model.eval(), folder)


def reader(folder: Path) -> Path:
    torch.manual_seed(3)
    return save(BertForQuestionAnswering(config()).eval(), folder)


def mean_pooled(folder: Path, texts: list[str], max_length: int = 64) -> torch.Tensor:
    """The independent reference: HF model, padded to the longest in input order, mean pooling, L2 norm."""
    tok = tokenizer()
    model = BertModel.from_pretrained(folder).eval()
    batch = tok(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, dim=1)
