"""What each task does around the model: rows -> token features (encode), a batch's tensors -> small
per-feature results (reduce), a row's feature results -> its output object (combine).

Reducing right after each batch keeps memory flat: no per-token tensors are kept for a whole window.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .models import LoadedModel
from .rows import Row
from .task_table import task_row

MAX_ANSWER_TOKENS = 30  # run_qa's --max_answer_length default


@dataclass
class Feature:
    """One model input sequence. A question-answering row gives several (its context windows)."""

    row: int  # position of the row in its window
    input_ids: list[int]
    token_type_ids: list[int] | None = None
    extra: Any = None  # task data: offsets, word ids, context positions

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class Encoded:
    """A window's features, plus per-row notes: truncated rows and rows that cannot be encoded."""

    features: list[Feature] = field(default_factory=list)
    truncated: list[int] = field(default_factory=list)  # window positions of rows cut to max_seq_length
    errors: dict[int, str] = field(default_factory=dict)  # window position -> reason


def _softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    shifted = x - x.max(axis=axis, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=axis, keepdims=True)


class Task:
    name = ""

    def __init__(self, loaded: LoadedModel, max_seq_length: int, doc_stride: int = 128) -> None:
        self.loaded = loaded
        self.tokenizer = loaded.tokenizer
        self.max_len = max_seq_length
        self.doc_stride = doc_stride
        self.types = "token_type_ids" in loaded.input_names

    # -- encode ------------------------------------------------------------------------------------
    def encode(self, rows: Sequence[Row]) -> Encoded:
        encoded = Encoded()
        good = [(pos, r) for pos, r in enumerate(rows) if r.ok]
        singles = [(pos, r) for pos, r in good if r.text_pair is None]
        pairs = [(pos, r) for pos, r in good if r.text_pair is not None]
        for group in (singles, pairs):
            if group:
                self._encode_texts(group, encoded)
        encoded.features.sort(key=lambda f: f.row)
        return encoded

    def _call(self, texts: list[str], pairs: list[str] | None, truncate: bool) -> Any:
        return self.tokenizer(
            texts,
            pairs,
            truncation=truncate,
            max_length=self.max_len if truncate else None,
            padding=False,
            return_attention_mask=False,
            return_token_type_ids=self.types,
            return_offsets_mapping=self.offsets,
            verbose=False,
        )

    offsets = False

    def _encode_texts(self, group: list[tuple[int, Row]], encoded: Encoded) -> None:
        """Tokenize in full, then once more with truncation only the rows that are too long (so the
        truncation can be counted and reported, with any tokenizer)."""
        texts = [r.text or "" for _, r in group]
        pairs = [r.text_pair or "" for _, r in group] if group[0][1].text_pair is not None else None
        full = self._call(texts, pairs, truncate=False)
        long = [i for i, ids in enumerate(full["input_ids"]) if len(ids) > self.max_len]
        cut = None
        if long:
            cut = self._call([texts[i] for i in long], [pairs[i] for i in long] if pairs else None, truncate=True)
        where = {i: j for j, i in enumerate(long)}
        for i, (pos, _) in enumerate(group):
            source, k = (cut, where[i]) if i in where else (full, i)
            if i in where:
                encoded.truncated.append(pos)
            encoded.features.append(
                Feature(
                    row=pos,
                    input_ids=list(source["input_ids"][k]),
                    token_type_ids=list(source["token_type_ids"][k]) if self.types else None,
                    extra=self._extra(source, k),
                )
            )

    def _extra(self, enc: Any, k: int) -> Any:
        return None

    # -- reduce and combine ------------------------------------------------------------------------
    def reduce(self, output: Any, features: Sequence[Feature]) -> list[Any]:
        raise NotImplementedError

    def combine(self, row: Row, parts: list[Any]) -> dict[str, Any]:
        raise NotImplementedError


class FeatureExtraction(Task):
    name = "feature-extraction"

    def reduce(self, output: Any, features: Sequence[Feature]) -> list[Any]:
        array = output.detach().float().numpy().astype(np.float32, copy=False)
        return [array[i].copy() for i in range(len(features))]

    def combine(self, row: Row, parts: list[Any]) -> dict[str, Any]:
        return {"embedding": parts[0]}


class TextClassification(Task):
    name = "text-classification"

    def __init__(self, loaded: LoadedModel, max_seq_length: int, doc_stride: int = 128) -> None:
        super().__init__(loaded, max_seq_length, doc_stride)
        config = getattr(getattr(loaded.module, "model", None), "config", None)
        self.multi_label = getattr(config, "problem_type", None) == "multi_label_classification"

    def reduce(self, output: Any, features: Sequence[Feature]) -> list[Any]:
        logits = output.detach().float().numpy()
        probs = 1 / (1 + np.exp(-logits)) if self.multi_label else _softmax(logits)
        best = probs.argmax(axis=-1)
        return [(int(best[i]), float(probs[i, best[i]])) for i in range(len(features))]

    def combine(self, row: Row, parts: list[Any]) -> dict[str, Any]:
        label, score = parts[0]
        return {"label": self.loaded.id2label.get(label, f"LABEL_{label}"), "score": score}


class TokenClassification(Task):
    """Labels per word (first sub-token), merged into entities the way the pipeline's "simple"
    aggregation does: B-X starts an entity, I-X continues one of type X, O is dropped."""

    name = "token-classification"
    offsets = True

    def _extra(self, enc: Any, k: int) -> Any:
        return (enc.word_ids(k), list(enc["offset_mapping"][k]))

    def reduce(self, output: Any, features: Sequence[Feature]) -> list[Any]:
        probs = _softmax(output.detach().float().numpy())
        results = []
        for i, feature in enumerate(features):
            word_ids, offsets = feature.extra
            p = probs[i, : len(feature)]
            words: dict[int, list[Any]] = {}
            for t, word in enumerate(word_ids):
                if word is None:
                    continue
                start, end = offsets[t]
                if word not in words:
                    label = int(p[t].argmax())
                    words[word] = [label, float(p[t, label]), int(start), int(end)]
                else:
                    words[word][3] = int(end)
            results.append([tuple(words[w]) for w in sorted(words)])
        return results

    def combine(self, row: Row, parts: list[Any]) -> dict[str, Any]:
        text = row.text or ""
        entities: list[dict[str, Any]] = []
        current: dict[str, Any] | None = None
        scores: list[float] = []
        for label_id, score, start, end in parts[0]:
            label = self.loaded.id2label.get(label_id, f"LABEL_{label_id}")
            if label == "O":
                current = None
                continue
            begins = label.startswith("B-")
            kind = label[2:] if label[:2] in ("B-", "I-") else label
            if current is not None and not begins and current["entity"] == kind:
                current["end"] = end
                scores.append(score)
                current["score"] = float(np.mean(scores))
                current["word"] = text[current["start"] : end]
                continue
            scores = [score]
            current = {"entity": kind, "word": text[start:end], "start": start, "end": end, "score": score}
            entities.append(current)
        return {"entities": entities}


class QuestionAnswering(Task):
    """Context windows of ``max_seq_length`` tokens overlapping by ``doc_stride`` (as the guide's run_qa);
    the answer is the best span over all windows: start/end probabilities over the context tokens,
    end >= start, at most MAX_ANSWER_TOKENS long."""

    name = "question-answering"

    def encode(self, rows: Sequence[Row]) -> Encoded:
        encoded = Encoded()
        tok = self.tokenizer
        question_first = tok.padding_side == "right"
        special = tok.num_special_tokens_to_add(pair=True)
        good: list[tuple[int, Row]] = []
        for pos, row in enumerate(rows):
            if not row.ok:
                continue
            question = (row.question or "").lstrip()  # run_qa strips leading spaces (they break windows)
            q_len = len(tok(question, add_special_tokens=False, verbose=False)["input_ids"])
            room = self.max_len - q_len - special
            if room <= self.doc_stride:
                encoded.errors[pos] = (
                    f"question is {q_len} tokens: too long for --max-seq-length {self.max_len} with "
                    f"--doc-stride {self.doc_stride} (the context needs more than {self.doc_stride} tokens a window)"
                )
                continue
            good.append((pos, row))
        if not good:
            return encoded
        questions = [(r.question or "").lstrip() for _, r in good]
        contexts = [r.context or "" for _, r in good]
        first, second = (questions, contexts) if question_first else (contexts, questions)
        enc = tok(
            first,
            second,
            truncation="only_second" if question_first else "only_first",
            max_length=self.max_len,
            stride=self.doc_stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
            return_token_type_ids=self.types,
            return_attention_mask=False,
            padding=False,
            verbose=False,
        )
        context_id = 1 if question_first else 0
        windows: dict[int, int] = {}
        for k, sample in enumerate(enc["overflow_to_sample_mapping"]):
            pos = good[sample][0]
            windows[pos] = windows.get(pos, 0) + 1
            sequence_ids = enc.sequence_ids(k)
            offsets = enc["offset_mapping"][k]
            context = [t for t, s in enumerate(sequence_ids) if s == context_id]
            encoded.features.append(
                Feature(
                    row=pos,
                    input_ids=list(enc["input_ids"][k]),
                    token_type_ids=list(enc["token_type_ids"][k]) if self.types else None,
                    extra=(context, [tuple(offsets[t]) for t in context]),
                )
            )
        return encoded

    def reduce(self, output: Any, features: Sequence[Feature]) -> list[Any]:
        starts = output[0].detach().float().numpy()
        ends = output[1].detach().float().numpy()
        results = []
        for i, feature in enumerate(features):
            context, offsets = feature.extra
            if not context:
                results.append((0.0, 0, 0))
                continue
            p_start = _softmax(starts[i, context])
            p_end = _softmax(ends[i, context])
            scores = np.triu(np.outer(p_start, p_end))
            scores = np.tril(scores, MAX_ANSWER_TOKENS - 1)
            s, e = np.unravel_index(int(scores.argmax()), scores.shape)
            results.append((float(scores[s, e]), int(offsets[s][0]), int(offsets[e][1])))
        return results

    def combine(self, row: Row, parts: list[Any]) -> dict[str, Any]:
        score, start, end = max(parts, key=lambda p: p[0])
        context = row.context or ""
        return {"answer": context[start:end], "start": start, "end": end, "score": score}


def task_class(name: str) -> type[Task]:
    """The Task class a task's row names ("module.Class" under pytest_jitcpu.inference)."""
    module, _, cls = task_row(name).impl.rpartition(".")
    return getattr(importlib.import_module(f"{__package__}.{module}"), cls)


def make(loaded: LoadedModel, max_seq_length: int | None = None, doc_stride: int = 128) -> Task:
    return task_class(loaded.task)(loaded, max_seq_length or loaded.max_seq_length, doc_stride)
