"""One row per ``jitcpu run`` task: the only list of tasks. Everything that names a task reads its row.

Loading (:mod:`.models`: the Auto class, the head wrapper, which config.architectures mean the task, the
default window, whether it needs a trained head or a fast tokenizer), reading rows (:mod:`.rows`: the
fields a row must give), the task's code (:mod:`.tasks`: encode, reduce, combine), the outputs
(:mod:`.writers`: whether it can be written as ``.npy``; :mod:`.raydata`: the output columns and their
types), ``jitcpu check``'s sample rows (:mod:`.check`) and the command line's choices. Adding a task is a
Task class in a module under ``inference/`` and one row here (as optimum's TasksManager keeps one table).

Imports nothing heavy (no torch, transformers or pyarrow): a row names its classes, imported when used.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# An output column's type, as :mod:`.raydata` maps it to Arrow: "vector" is one float32 list a row.
COLUMN_TYPES: tuple[str, ...] = ("vector", "string", "float64", "int64", "entities")
# The fields a row may carry (rows.Row's attributes).
ROW_FIELDS: tuple[str, ...] = ("text", "text_pair", "question", "context")


@dataclass(frozen=True)
class TaskRow:
    """One task ``jitcpu run`` can serve."""

    name: str  # --task
    impl: str  # "module.Class" under pytest_jitcpu.inference: the Task that encodes, reduces, combines
    auto_class: str  # the transformers Auto class that loads the model
    head: str  # the wrapper in models.py whose forward() returns what reduce() takes
    columns: tuple[tuple[str, str], ...]  # the output object's fields and their COLUMN_TYPES
    samples: tuple[Any, ...]  # built-in rows `jitcpu check` runs on without --input (texts or mappings)
    architectures: tuple[str, ...] = ()  # config.architectures suffixes that mean this task (no --task)
    fields: tuple[str, ...] = ("text",)  # what an input row must give (plain text lines give "text")
    optional_fields: tuple[str, ...] = ()  # what a row may give besides (a sentence pair's second text)
    pooled: bool = False  # the head pools token states into one vector (--pooling, --normalize)
    trained_head: bool = True  # a bare encoder cannot serve it: its head would be random weights
    fast_tokenizer: bool = False  # needs character offsets (a tokenizer.json)
    windows: bool = False  # long rows are split into windows overlapping by --doc-stride
    max_seq_length: int | None = None  # the default window when the model's folder does not say
    npy_column: str | None = None  # the vector column `--output x.npy` writes, one row of it per input row

    @property
    def label(self) -> str:
        """How messages name it: "question answering"."""
        return self.name.replace("-", " ")

    @property
    def plain_text(self) -> bool:
        """Whether a plain text file (one row a line) can feed it."""
        return self.fields == ("text",)

    def __post_init__(self) -> None:
        unknown = [t for _, t in self.columns if t not in COLUMN_TYPES]
        fields = [f for f in (*self.fields, *self.optional_fields) if f not in ROW_FIELDS]
        if unknown or fields:
            raise ValueError(f"task {self.name!r}: unknown column types {unknown} or row fields {fields}")


_TEXTS = (
    "The quick brown fox jumps over the lazy dog.",
    "Tracing freezes Python control flow into the graph.",
    "A short one.",
    "CPU inference with TorchScript, IPEX, torch.export and torch.compile, checked against eager before it is "
    "trusted with real traffic from many users in several languages.",
    "Hello world",
    "Sentence embeddings are compared with cosine similarity.",
    "Padding and attention masks must not change the result of a row.",
    "Paris is the capital of France.",
)
_QA: tuple[Mapping[str, str], ...] = (
    {"question": "What is the capital of France?", "context": "Paris is the capital and largest city of France."},
    {"question": "What does tracing freeze?", "context": "Tracing freezes Python control flow into the graph."},
    {"question": "Who jumps?", "context": "The quick brown fox jumps over the lazy dog while the cat sleeps."},
)

TASKS_TABLE: tuple[TaskRow, ...] = (
    TaskRow(
        "feature-extraction",
        "tasks.FeatureExtraction",
        "AutoModel",
        "Embedder",
        columns=(("embedding", "vector"),),
        samples=_TEXTS,
        pooled=True,
        trained_head=False,
        npy_column="embedding",
    ),
    TaskRow(
        "text-classification",
        "tasks.TextClassification",
        "AutoModelForSequenceClassification",
        "Logits",
        columns=(("label", "string"), ("score", "float64")),
        samples=_TEXTS,
        architectures=("ForSequenceClassification",),
        optional_fields=("text_pair",),
    ),
    TaskRow(
        "token-classification",
        "tasks.TokenClassification",
        "AutoModelForTokenClassification",
        "Logits",
        columns=(("entities", "entities"),),
        samples=_TEXTS,
        architectures=("ForTokenClassification",),
        fast_tokenizer=True,
    ),
    TaskRow(
        "question-answering",
        "tasks.QuestionAnswering",
        "AutoModelForQuestionAnswering",
        "SpanLogits",
        columns=(("answer", "string"), ("start", "int64"), ("end", "int64"), ("score", "float64")),
        samples=_QA,
        architectures=("ForQuestionAnswering",),
        fields=("question", "context"),
        fast_tokenizer=True,
        windows=True,
        max_seq_length=384,  # the guide's SQuAD run
    ),
)

_BY_NAME = {t.name: t for t in TASKS_TABLE}
TASKS: tuple[str, ...] = tuple(t.name for t in TASKS_TABLE)
DEFAULT_TASK = "feature-extraction"  # a bare encoder's, when the folder names no head
# config.architectures suffix -> task, to pick a task when none is given.
HEADS: dict[str, str] = {suffix: t.name for t in TASKS_TABLE for suffix in t.architectures}
# Every field an input row can carry, in a stable order (Ray Data's read schema).
INPUT_FIELDS: tuple[str, ...] = tuple(dict.fromkeys(f for t in TASKS_TABLE for f in (*t.fields, *t.optional_fields)))


def task_row(name: str) -> TaskRow:
    """The row of task ``name`` (KeyError for an unknown one: callers validate names first)."""
    return _BY_NAME[name]
