"""How ``--mode auto`` chooses: the batches it runs are the run's own (each row computed once, in order),
its effort follows the input's size, its candidates come from the backends table, bf16 is tried only
where the CPU has native BF16, and a cached decision is still verified on the new input."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from inference_models import SENTENCES, encoder, mean_pooled, tokenizer

from pytest_jitcpu import environment
from pytest_jitcpu.backends import eager, table
from pytest_jitcpu.backends import trace as trace_backend
from pytest_jitcpu.backends.base import Built
from pytest_jitcpu.inference import Predictor, cache, run, selection

# 40 rows, batches of 4: 10 batches, so the verification (3) and timing (3) batches are all different
TEXTS = [f"{s} {w}" for s in SENTENCES for w in ("cat", "dog", "river", "city")]


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return encoder(tmp_path_factory.mktemp("models") / "st")


def quiet(_: str) -> None:
    pass


def _rows_of(batch) -> list[tuple[int, ...]]:
    ids, mask = batch.kwargs["input_ids"], batch.kwargs["attention_mask"]
    return [tuple(ids[i][mask[i].bool()].tolist()) for i in range(ids.shape[0])]


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> dict[str, Counter]:
    """Every row each mode computes: eager fp32 (the reference and the run's eager) and a stand-in trace
    (eager underneath, counted apart), keyed by the row's tokens."""
    seen: dict[str, Counter] = {"eager": Counter(), "trace": Counter()}
    real = eager.build

    def counting(name: str):
        def build(model, inputs, dtype):
            built = real(model, inputs, dtype)
            plain = built.run

            def run_(batch):
                seen[name].update(_rows_of(batch))
                return plain(batch)

            return Built("trace-dict" if name == "trace" else "eager", dtype, run_, module=model)

        return build

    monkeypatch.setattr(eager, "build", counting("eager"))
    monkeypatch.setattr(trace_backend, "build_dict", counting("trace"))
    return seen


def _tokens(texts: list[str]) -> Counter:
    return Counter(tuple(ids) for ids in tokenizer()(texts)["input_ids"])


def test_selection_batches_are_the_runs_own_each_row_computed_once_in_order(model, counted, monkeypatch):
    monkeypatch.setattr(selection, "MIN_GAIN", float("inf"))  # eager wins whatever the timing says
    rows = [{"id": i, "text": t} for i, t in enumerate(TEXTS)]
    result = run(model, rows=rows, dtype="fp32", candidates="eager,trace", batch_size=4, log=quiet)
    assert result.decision.name == "eager/fp32"
    # verification ran trace on 3 batches, timing on 3 more: eager ran those as the run's output
    assert sum(counted["trace"].values()) == 6 * 4 and result.summary.batches == 10
    # every row went through eager exactly once: selection's batches were not computed again
    assert counted["eager"] == _tokens(TEXTS)
    assert [o["id"] for o in result] == list(range(len(TEXTS)))
    np.testing.assert_allclose(result.embeddings, mean_pooled(model, TEXTS).numpy(), atol=2e-5)


def test_when_the_candidate_wins_the_run_continues_in_it_without_repeating_a_row(model, counted, monkeypatch):
    real_time = selection._time

    def trace_is_faster(candidates, *args):
        real_time(candidates, *args)  # the runs happen (eager's are kept); only the clock is overruled
        for c in candidates:
            c.ms = 2.0 if c.mode == "eager" else 1.0

    monkeypatch.setattr(selection, "_time", trace_is_faster)
    result = run(model, rows=TEXTS, dtype="fp32", candidates="eager,trace", batch_size=4, log=quiet)
    assert result.decision.name == "trace/fp32"
    kept = _tokens(TEXTS) - counted["eager"]
    assert sum(counted["eager"].values()) == 6 * 4  # the kept batches, once each
    assert sum(counted["trace"].values()) == 6 * 4 + 4 * 4  # verification + timing, then the 4 others
    assert sum(kept.values()) == 4 * 4
    np.testing.assert_allclose(result.embeddings, mean_pooled(model, TEXTS).numpy(), atol=2e-5)


def test_a_few_dozen_rows_build_nothing_but_eager(model, monkeypatch):
    built: list[str] = []
    real = selection.build

    def spy(mode, module, inputs, dtype):
        built.append(f"{mode}/{dtype}")
        return real(mode, module, inputs, dtype)

    monkeypatch.setattr(selection, "build", spy)
    lines: list[str] = []
    result = run(model, rows=TEXTS, batch_size=4, log=lines.append)  # default candidates: budgeted
    assert built == [] and result.decision.name == "eager/fp32"
    tried = {c.name: c.status for c in result.decision.candidates if c.mode != "eager" or c.dtype != "fp32"}
    # redundant: an attention mode switching to the attention the model already runs (nothing to build)
    assert tried and set(tried.values()) <= {"skipped", "unavailable", "redundant"}
    assert "this input is small" in result.decision.reason
    assert all("budget for choosing" in c.reason for c in result.decision.candidates if c.status == "skipped")
    # quiet by default: the decision in one line, no candidate table
    assert [line for line in lines if line.startswith("jitcpu: running")] == [
        f"jitcpu: running eager/fp32: {result.decision.reason} (sdpa attention)"  # the attention it runs
    ]
    assert not any("not tried: ~" in line or line.startswith("  ") for line in lines)
    assert len(result) == len(TEXTS)


def test_verbose_lists_every_candidate_with_its_reason(model):
    lines: list[str] = []
    result = run(model, rows=TEXTS, batch_size=4, log=lines.append, verbose=1)
    table_lines = [line for line in lines if line.startswith("  ")]
    for c in result.decision.candidates:
        assert any(line.split()[:2] == [c.name, c.status] for line in table_lines), (c.name, lines)
    assert any("not tried: ~" in line and "budget for choosing" in line for line in table_lines)
    assert any(line.startswith("jitcpu: mode auto: checked ") for line in lines)
    assert any(line.startswith("jitcpu: pooling: ") for line in lines)  # the model's notes come with -v


def test_the_build_estimate_of_a_tiny_input_is_on_the_scale_of_its_eager_pass(model):
    """Two short rows: a build is priced in passes of the batch it is built on, not scaled up to 32 x 128
    tokens from a per-token time that on two rows is nearly all fixed overhead (once ~276 s for a trace)."""
    decision = Predictor(model, "feature-extraction", dtype="fp32", log=quiet).decide(["a cat", "a dog"])
    eager_s = decision.kept[0][1] / 1000  # the first (and only) batch's eager time
    skipped = [c for c in decision.candidates if c.status == "skipped"]
    assert skipped, [(c.name, c.status, c.reason) for c in decision.candidates]
    most = table.UNMEASURED_BUILD_COST + selection.FUSION_COST + 3  # + its verification and timing runs
    for c in skipped:
        value, unit = re.search(r"~([0-9.e+-]+) (ms|s) to build", c.reason).groups()
        cost = float(value) / (1000 if unit == "ms" else 1)
        assert 0 < cost <= most * eager_s * 1.05, (c.name, c.reason, eager_s)  # 2 digits printed


def test_the_build_unit_scales_large_batches_down_and_never_small_ones_up():
    ref = selection.REFERENCE_TOKENS
    assert selection.build_unit_s(2.0, 2 * ref) == pytest.approx(1.0)  # per token, as before
    assert selection.build_unit_s(0.4, 20) == pytest.approx(0.4)  # was 0.4 / 20 * 4096 = 81.9 s
    assert selection.build_unit_s(0.5, ref) == pytest.approx(0.5)
    assert [selection.seconds(s) for s in (0.00031, 0.042, 6.71)] == ["0.31 ms", "42 ms", "6.7 s"]


def test_a_large_input_pays_for_trying_the_candidates(model, monkeypatch):
    """The same window, but the input is known to be 100000x longer: the budget covers the candidates."""
    monkeypatch.setattr(environment, "native_bf16", lambda: False)
    # the default (budgeted) candidates, without the exports that take a minute on 2 busy cores
    monkeypatch.setattr(selection, "auto_modes", lambda: ("eager", "trace-dict", "trace-dict+onednn"))
    p = Predictor(model, "feature-extraction", batch_size=4, log=quiet)
    assert not p.explicit_candidates
    p.expected_rows = 100_000 * len(TEXTS)
    p.predict(TEXTS)
    statuses = {c.name: c.status for c in p.decision.candidates}
    # tried, all of them (the fused trace may differ in the last bits: then it is a mismatch, still tried)
    assert statuses["trace/fp32"] == "pass", p.decision.lines()
    assert statuses["trace+onednn/fp32"] in ("pass", "mismatch", "diverges"), p.decision.lines()
    assert "skipped" not in statuses.values() and p.decision.budget_s is not None


def test_candidates_come_from_the_backends_table(monkeypatch):
    rows = [b.name for b in table.BACKENDS if b.auto]
    assert [m for m in selection.auto_modes() if "+" not in m] == rows
    assert [m for m in selection.auto_modes() if "+" in m] == ["trace-dict+onednn"]
    # a row's auto flag is what puts it in (or takes it out of) auto's candidates
    flipped = tuple(dataclasses.replace(b, auto=b.name != "trace-dict" and b.auto) for b in table.BACKENDS)
    monkeypatch.setattr(table, "BACKENDS", flipped)
    assert "trace-dict" not in selection.auto_modes() and "trace-dict+onednn" not in selection.auto_modes()
    assert "eager" in selection.auto_modes()


def test_candidates_parse_table_names_and_the_fused_trace_only():
    assert selection.parse_candidates("trace,trace+onednn") == ("eager", "trace-dict", "trace-dict+onednn")
    with pytest.raises(selection.UsageError, match="unknown mode 'export\\+onednn'; choose from eager, "):
        selection.parse_candidates("export+onednn")


@pytest.mark.parametrize(
    ("native", "dtype", "expected"),
    [
        (True, None, ["fp32", "bf16"]),
        (False, None, ["fp32"]),
        (True, "fp32", ["fp32"]),
        (False, "auto", ["fp32", "bf16"]),
    ],
)
def test_bf16_is_tried_only_with_native_bf16_or_when_asked(model, monkeypatch, native, dtype, expected):
    monkeypatch.setattr(environment, "native_bf16", lambda: native)
    p = Predictor(model, "feature-extraction", dtype=dtype, candidates="eager,trace", log=quiet)
    p.predict(SENTENCES)
    assert sorted({c.dtype for c in p.decision.candidates}) == sorted(expected)


def test_fused_trace_matches_eager_and_leaves_the_switch_as_it_was(model):
    result = run(model, rows=TEXTS, dtype="fp32", candidates="trace+onednn", batch_size=4, log=quiet)
    fused = next(c for c in result.decision.candidates if c.mode == "trace-dict+onednn")
    assert fused.status == "pass", fused.reason
    assert torch.jit.onednn_fusion_enabled() is False
    np.testing.assert_allclose(result.embeddings, mean_pooled(model, TEXTS).numpy(), atol=2e-5)


def _wrong_after_cache(model, inputs, dtype):
    def run_(x):
        return torch.zeros(x.kwargs["input_ids"].shape[0], 32)

    return Built("trace-dict", dtype, run_, module=model)


def test_a_cached_decision_is_verified_on_the_new_input(model, tmp_path, monkeypatch):
    monkeypatch.setenv("JITCPU_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(selection, "MIN_GAIN", 0.0)
    monkeypatch.setattr(environment, "native_bf16", lambda: False)
    options = {"dtype": "fp32", "candidates": "eager,trace", "batch_size": 4, "cache": True, "log": quiet}
    first = run(model, rows=TEXTS, **options)
    entries = json.loads((tmp_path / "cache" / cache.FILE).read_text())["entries"]
    assert [(e["mode"], e["dtype"]) for e in entries.values()] == [(first.decision.mode, "fp32")]
    # force the cached pick to be the trace, then run again: only it is built, and it is verified
    (key,) = entries
    cache.put(key, {"mode": "trace-dict", "dtype": "fp32"})
    second = run(model, rows=TEXTS, **options)
    assert second.decision.cache_hit and second.decision.name == "trace/fp32"
    assert [c.name for c in second.decision.candidates] == ["eager/fp32", "trace/fp32"]
    assert second.decision.candidates[1].max_abs_diff is not None  # compared with eager on this input
    # a cached mode that is wrong on this input is rejected, forgotten, and the choice runs in full
    monkeypatch.setattr(trace_backend, "build_dict", _wrong_after_cache)
    lines: list[str] = []
    third = run(model, rows=TEXTS, **{**options, "log": lines.append})
    assert not third.decision.cache_hit and third.decision.name == "eager/fp32"
    assert any("the cached decision trace/fp32 is mismatch on this input" in line for line in lines)
    np.testing.assert_allclose(third.embeddings, mean_pooled(model, TEXTS).numpy(), atol=2e-5)
    entries = json.loads((tmp_path / "cache" / cache.FILE).read_text())["entries"]
    assert entries[key]["mode"] == "eager"  # the full choice replaced the stale entry


def test_cache_key_changes_with_the_model_weights(model, tmp_path):
    copy = shutil.copytree(model, tmp_path / "copy")
    assert cache.fingerprint(copy) == cache.fingerprint(model)
    weights = next(copy.glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert cache.fingerprint(copy) != cache.fingerprint(model)


@pytest.mark.parametrize("verbosity", ["", "-v", "-q"])
def test_command_line_auto_on_a_tiny_input_says_it_kept_eager(model, tmp_path, verbosity):
    src = tmp_path / "in.txt"
    src.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    out = tmp_path / "out.npy"
    argv = [sys.executable, "-m", "pytest_jitcpu.cli", "run", str(model), "--task", "feature-extraction"]
    argv += ["--input", str(src), "--output", str(out), "--batch-size", "4", "--no-progress"]
    proc = subprocess.run(
        [*argv, *([verbosity] if verbosity else [])],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines[-2 if verbosity != "-q" else -1].startswith(f"jitcpu run: {len(TEXTS)} rows ({len(TEXTS)} ok)")
    decision = [line for line in lines if line.startswith("jitcpu: running eager/fp32: this input is small")]
    table_lines = [line for line in lines if line.startswith("  ")]
    if verbosity == "-v":  # the candidate table, each skipped one with its estimate, and the model's notes
        assert "kept the outputs of 1 batch:" in proc.stderr and len(decision) == 1
        assert any("not tried: ~" in line for line in table_lines)
        assert any(line.startswith("jitcpu: pooling: ") for line in lines)
    elif verbosity == "":  # the decision in one line, then the final lines
        assert len(decision) == 1 and not table_lines and "kept the outputs" not in proc.stderr
        assert lines == [decision[0], lines[-2], f"jitcpu run: wrote {out}"], proc.stderr
    else:  # -q: the final line only
        assert len(lines) == 1, proc.stderr
    np.testing.assert_allclose(np.load(out), mean_pooled(model, TEXTS).numpy(), atol=2e-5)
