"""int8 candidates behind an accuracy budget (docs/quantization.md): the budget flags, auto's candidates
with and without one, the per-row gate and its numbers, calibration rows kept apart from the gate's rows,
--verify-all, the portable int8 programs, and the plugin's int8 modes under the user's tolerance."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from inference_models import SENTENCES, WORDS, classifier, encoder, mean_pooled
from plugin_runs import load_json, no_internal_error, schema_errors
from portable_child import run_in_child

from pytest_jitcpu import backends, engine
from pytest_jitcpu.backends import table
from pytest_jitcpu.backends.base import Built, Unavailable
from pytest_jitcpu.inference import Predictor, rows, run, selection
from pytest_jitcpu.inference.gate import Budget, Gate
from pytest_jitcpu.inputs import normalize
from pytest_jitcpu.settings import Settings, parse_modes

pytest_plugins = ["pytester"]

INT8 = ("onnx-int8", "openvino-int8", "openvino-int8-dynamic")


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("quant-models")
    return {"st": encoder(root / "st"), "cls": classifier(root / "cls")}


def distinct_sentences(count: int) -> list[str]:
    """``count`` different rows of varied length (the vocabulary's words), so rows can be told apart."""
    return [
        f"{SENTENCES[i % len(SENTENCES)]} {WORDS[i % len(WORDS)]} {WORDS[(i * 7) % len(WORDS)]}" for i in range(count)
    ]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


# -- the budget flags -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["--min-cosine", "abc"], "--min-cosine"),
        (["--min-cosine", "0"], "--min-cosine"),
        (["--min-cosine", "1.5"], "--min-cosine"),
        (["--min-agreement", "-0.2"], "--min-agreement"),
        (["--min-agreement", "inf"], "--min-agreement"),
        (["--verify-all"], "--verify-all"),
        (["--mode", "onnx-int8"], "--mode"),
        (["--candidates", "eager,openvino-int8"], "--candidates"),
    ],
)
def test_bad_budget_flags_are_one_line_usage_errors(folders, tmp_path, args, flag):
    given = tmp_path / "rows.txt"
    given.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    argv = [sys.executable, "-m", "pytest_jitcpu.cli", "run", str(folders["st"]), "--input", str(given)]
    proc = subprocess.run(
        [*argv, "--output", str(tmp_path / "out.npy"), *args], check=False, capture_output=True, text=True, timeout=300
    )
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("jitcpu run: error: ") and flag in lines[0], proc.stderr
    assert not (tmp_path / "out.npy").exists()


def test_a_budget_of_the_wrong_kind_for_the_task_names_the_other_flag(folders):
    with pytest.raises(Exception, match=r"--min-cosine measures feature-extraction.*use --min-agreement"):
        Predictor(folders["cls"], "text-classification", min_cosine=0.99, log=False)


def test_all_modes_leave_the_int8_ones_out_unless_named():
    assert not set(INT8) & set(parse_modes("all"))
    assert parse_modes("eager,onnx-int8") == ("eager", "onnx-int8")
    assert set(INT8) == set(table.QUANTIZED_MODES)
    assert not set(INT8) & set(table.AUTO_CANDIDATES)


# -- auto with and without a budget -----------------------------------------------------------------
def test_auto_without_a_budget_never_tries_int8(folders, monkeypatch):
    built: list[str] = []
    real = backends.builder

    def spy(mode):
        built.append(mode)
        return real(mode)

    monkeypatch.setattr(backends, "builder", spy)
    lines: list[str] = []
    result = run(
        folders["st"], rows=distinct_sentences(40), mode="auto", dtype="fp32", batch_size=4, log=lines.append, verbose=1
    )
    tried = {c.base for c in result.decision.candidates}
    assert not tried & set(INT8) and not set(built) & set(INT8)
    assert result.summary.gate is None and result.decision.gate is None
    assert any(f"{', '.join(INT8)}: int8, only under an accuracy budget" in line for line in lines)


def test_a_budget_tries_int8_and_reports_worst_row_p1_and_rows_covered(folders):
    lines: list[str] = []
    p = Predictor(
        folders["st"], mode="auto", dtype="fp32", batch_size=2, min_cosine=0.5, log=lines.append,
        candidates=",".join(("eager", *INT8)), cache=False, verbose=1,
    )  # fmt: skip
    result = p.predict(distinct_sentences(40))
    by_mode = {c.base: c for c in result.decision.candidates}
    for mode in INT8:
        c = by_mode[mode]
        assert c.status == "pass", (c.name, c.reason)
        assert c.gate is not None and c.gate.rows >= 6 and 0.5 <= c.gate.worst <= c.gate.low <= 1.0
    text = "\n".join(lines)
    assert "onnx-int8/fp32" in text and "worst row cosine" in text and "p1" in text
    assert "a sample bounds the rest only statistically" in text
    gate = result.summary.gate
    assert gate is not None and gate["metric"] == "cosine" and gate["budget"] == 0.5 and gate["rows"] > 0
    assert "gate --min-cosine 0.5: worst row" in result.summary.line()
    # the gate's numbers are the truth about the rows it covered: every output row here is within the budget
    # of an independent fp32 computation (statistically for unmeasured rows; these are tiny, calm models)
    assert cosines(result.embeddings, mean_pooled(folders["st"], distinct_sentences(40)).numpy()).min() >= 0.5


def test_a_budget_that_cannot_be_met_is_a_mismatch_with_numbers_and_a_non_quantized_pick(folders):
    result = run(
        folders["st"], rows=distinct_sentences(24), mode="auto", dtype="fp32", batch_size=4, log=False,
        candidates="eager,onnx-int8", min_cosine=1.0, cache=False,
    )  # fmt: skip
    int8 = next(c for c in result.decision.candidates if c.base == "onnx-int8")
    assert int8.status == "mismatch" and "misses --min-cosine 1" in int8.reason
    assert int8.gate is not None and int8.gate.worst < 1.0 and int8.gate.under > 0
    assert f"worst row cosine {int8.gate.worst:.4f}" in "\n".join(result.decision.lines())
    assert result.decision.name == "eager/fp32" and result.summary.gate["worst"] == 1.0


def test_label_agreement_gates_a_classifier(folders):
    result = run(
        folders["cls"], "text-classification", rows=distinct_sentences(24), mode="auto", dtype="fp32",
        batch_size=4, log=False, candidates="eager,onnx-int8", min_agreement=0.5, cache=False,
    )  # fmt: skip
    int8 = next(c for c in result.decision.candidates if c.base == "onnx-int8")
    assert int8.gate is not None and int8.gate.budget.metric == "agreement" and int8.gate.rows > 0
    assert (int8.status == "pass") == (int8.gate.agreement >= 0.5)
    assert result.summary.gate["metric"] == "agreement"


# -- calibration rows are never gate rows -----------------------------------------------------------
def _rows_of(batch) -> set[tuple[int, ...]]:
    ids, mask = batch.kwargs["input_ids"], batch.kwargs["attention_mask"]
    return {tuple(int(t) for t, m in zip(row, keep, strict=True) if m) for row, keep in zip(ids, mask, strict=True)}


def test_calibration_rows_are_disjoint_from_the_rows_the_gate_measures(folders, monkeypatch):
    calibrated: set[tuple[int, ...]] = set()
    measured: set[tuple[int, ...]] = set()
    real_build, real_score = backends.build, selection.per_row

    def build(mode, model, inputs, dtype, calibration=None):
        for batch in calibration or ():
            calibrated.update(_rows_of(batch))
        return real_build(mode, model, inputs, dtype, calibration=calibration)

    def score(budget, reference, output, batch):
        measured.update(_rows_of(batch))
        return real_score(budget, reference, output, batch)

    monkeypatch.setattr(backends, "build", build)
    monkeypatch.setattr(selection, "per_row", score)
    result = run(
        folders["st"], rows=distinct_sentences(40), mode="auto", dtype="fp32", batch_size=2, log=False,
        candidates="eager,openvino-int8", min_cosine=0.5, cache=False,
    )  # fmt: skip
    assert calibrated and measured and not calibrated & measured
    assert len(calibrated) + len(measured) <= 40
    if result.decision.mode == "openvino-int8":
        assert result.decision.calibration_rows == len(calibrated)


def test_calibration_needs_rows_the_gate_does_not_measure(folders):
    result = run(
        folders["st"], rows=SENTENCES[:4], mode="auto", dtype="fp32", batch_size=2, log=False,
        candidates="eager,openvino-int8", min_cosine=0.5, cache=False,
    )  # fmt: skip
    c = next(c for c in result.decision.candidates if c.base == "openvino-int8")
    assert c.status == "skipped" and "no rows left to set aside for calibration" in c.reason


# -- --verify-all -----------------------------------------------------------------------------------
def _drifting_int8(armed: dict[str, bool]):
    """An `onnx-int8` that matches eager while auto chooses, then (armed) turns each batch's first row
    around: the rows a sample never saw."""

    def make(model, inputs, dtype, **_options):
        def go(batch):
            with torch.no_grad():
                out = batch.call(model).clone()
            if armed["on"]:
                out[0] = -out[0]
            return out

        return Built("onnx-int8", dtype, go)

    return make


@pytest.mark.parametrize("verify_all", [False, True])
def test_verify_all_recomputes_in_fp32_the_rows_that_miss_the_budget(folders, monkeypatch, verify_all):
    armed = {"on": False}
    real = backends.builder
    monkeypatch.setattr(backends, "builder", lambda mode: _drifting_int8(armed) if mode == "onnx-int8" else real(mode))

    def log(line: str) -> None:
        if line.startswith("jitcpu: running "):
            armed["on"] = True  # the choice is made: from here on the run's batches drift

    texts = distinct_sentences(30)
    result = run(
        folders["st"], rows=texts, mode="onnx-int8", batch_size=3, log=log, min_cosine=0.99,
        verify_all=verify_all, cache=False,
    )  # fmt: skip
    assert result.decision.name == "onnx-int8/fp32"
    worst = cosines(result.embeddings, mean_pooled(folders["st"], texts).numpy()).min()
    if verify_all:
        v = result.summary.verified
        assert worst >= 0.99 and v["rows"] == 30 and v["recomputed"] > 0 and v["worst_before"] < 0
        assert "--verify-all: 30 rows checked" in result.summary.line()
    else:
        assert worst < 0 and result.summary.verified is None  # what the sample did not see


def example_batch(folder: Path, count: int):
    p = Predictor(folder, mode="eager", log=False)
    return p.make_inputs(p.task.encode(list(rows.from_iterable(SENTENCES[:count], "feature-extraction"))).features)


# -- the int8 programs are portable (what an artifact cache saves) -----------------------------------
@pytest.mark.parametrize("mode", INT8)
def test_int8_builds_save_a_program_their_runtime_runs_alike(folders, tmp_path, mode):
    batch = example_batch(folders["st"], 4)
    built = backends.build(mode, Predictor(folders["st"], mode="eager", log=False).loaded.module, batch, "fp32")
    assert built.portable is not None and any(mode in note for note in built.notes)
    path = built.portable.save(tmp_path)
    assert path.is_file()
    ours = built.run(batch.clone()).numpy()
    arrays = dict(built.portable.feed(batch.clone()))
    if built.portable.runtime == "onnxruntime":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        theirs = session.run(None, arrays)[0]
    else:
        import openvino as ov

        # as the cache and the round trip do: with the properties the mode compiled it with (the group
        # size of openvino-int8-dynamic's run-time quantization; without it OpenVINO uses its default)
        config = {"INFERENCE_PRECISION_HINT": "f32", **built.portable.options.get("config", {})}
        compiled = ov.Core().compile_model(str(path), "CPU", config)
        theirs = compiled(list(arrays.values()))[compiled.outputs[0]]
    np.testing.assert_allclose(theirs, ours, atol=1e-5)


def test_int8_modes_are_unavailable_in_bf16_with_the_reason(folders):
    batch = example_batch(folders["st"], 2)
    for mode in INT8:
        with pytest.raises(Unavailable, match="check it in fp32"):
            backends.build(mode, Predictor(folders["st"], mode="eager", log=False).loaded.module, batch, "bf16")


def test_gate_numbers_follow_the_scores():
    gate = Gate(Budget("cosine", 0.99), np.array([0.999, 0.995, 0.985] + [0.998] * 97))
    assert gate.rows == 100 and gate.worst == 0.985 and gate.under == 1 and not gate.ok
    assert gate.low == pytest.approx(np.percentile(gate.scores, 1))
    agree = Gate(Budget("agreement", 0.9), np.array([1.0] * 95 + [0.0] * 5))
    assert agree.ok and agree.agreement == 0.95 and agree.under == 5
    json.dumps(gate.to_json(), allow_nan=False)


# -- the plugin: an int8 mode compares with the tolerance the user gives ------------------------------
def test_plugin_int8_mode_meets_the_users_tolerance_and_fails_the_fp32_default(pytester):
    pytester.makepyfile(
        """
        import pytest
        import torch

        def model():
            torch.manual_seed(0)
            return torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4)).eval()

        @pytest.mark.jitcpu(modes=["eager", "onnx-int8"], dtypes=["fp32"], atol=0.2, rtol=0.2)
        def test_with_a_tolerance(jitcpu):
            jitcpu.check(model(), (torch.randn(8, 16),))

        @pytest.mark.jitcpu(modes=["eager", "onnx-int8"], dtypes=["fp32"])
        def test_with_the_default(jitcpu):
            jitcpu.check(model(), (torch.randn(8, 16),))
        """
    )
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--jitcpu-examples=0", "--jitcpu-report=out.json", "-rA"
    )
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.no_fnmatch_line("*INTERNALERROR*")
    report = json.loads((pytester.path / "out.json").read_text(encoding="utf-8"))
    by_test = {r["nodeid"].split("::")[-1]: r for r in report["results"] if r["mode"] == "onnx-int8"}
    assert by_test["test_with_a_tolerance"]["status"] == "pass"
    assert by_test["test_with_a_tolerance"]["atol"] == 0.2
    assert 0 < by_test["test_with_a_tolerance"]["max_abs_diff"] <= 0.2 + 0.2 * 10  # int8 error is real, not 0
    failed = by_test["test_with_the_default"]
    assert failed["status"] == "mismatch" and "int8 differs from fp32 by design" in failed["reason"]


# -- openvino-int8-dynamic: int8 weights, activations quantized per token at run time ------------------
def wide_mlp() -> torch.nn.Module:
    """64 input channels and more: OpenVINO quantizes activations in groups of 64 of them (narrower rows
    are one group of their own width, which would not tell a group size from another)."""
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 8)).eval()


def test_plugin_openvino_int8_dynamic_meets_the_users_tolerance_with_its_note_and_round_trip(pytester):
    pytester.makepyfile(
        """
        import torch

        def test_wide(jitcpu):
            torch.manual_seed(0)
            model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 8))
            jitcpu.check(model.eval(), (torch.randn(8, 64),))
        """
    )
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--jitcpu-examples=0", "--jitcpu-modes=eager,openvino-int8-dynamic",
        "--jitcpu-dtypes=fp32,bf16", "--jitcpu-atol=0.1", "--jitcpu-rtol=0.1", "--jitcpu-report=out.json", "-rA",
    )  # fmt: skip
    result.assert_outcomes(passed=1)
    no_internal_error(result)
    report = load_json(pytester.path / "out.json")
    assert not schema_errors(report)
    recs = {r["dtype"]: r for r in report["results"] if r["mode"] == "openvino-int8-dynamic"}
    fp32, bf16 = recs["fp32"], recs["bf16"]
    assert fp32["status"] == "pass", fp32["reason"]
    assert fp32["atol"] == 0.1 and 0 < fp32["max_abs_diff"] <= 0.1 + 0.1 * 10  # int8's error is real, not 0
    note = next(n for n in fp32["notes"] if n.startswith("openvino-int8-dynamic: "))
    assert "int8 weights (asymmetric, per output channel)" in note and "per token in groups of 64" in note
    # the saved IR ran in a Python that cannot import torch, compiled as checked
    assert fp32["serializable"] is True, fp32["serializable_reason"]
    assert bf16["status"] == "unavailable" and "check it in fp32" in bf16["reason"]


# in-process checks, no search and no round trip: what they test is the verdict
QUICK = Settings(dtypes=("fp32",), examples=0, serialize=False)


def test_openvino_int8_dynamic_fails_fp32s_default_tolerance_and_says_to_state_one():
    settings = QUICK.updated(modes=["eager", "openvino-int8-dynamic"])
    rec = engine.check(wide_mlp(), (torch.randn(8, 64),), settings=settings).record("openvino-int8-dynamic")
    assert rec.status == "mismatch" and "int8 differs from fp32 by design" in rec.reason, rec.reason


def test_nncf_missing_makes_openvino_int8_unavailable_with_the_install_hint_and_not_the_dynamic_one(monkeypatch):
    monkeypatch.setitem(sys.modules, "nncf", None)  # import raises ImportError, as when not installed
    settings = QUICK.updated(modes=["eager", "openvino-int8", "openvino-int8-dynamic"], atol=0.1, rtol=0.1)
    result = engine.check(wide_mlp(), (torch.randn(8, 64),), settings=settings)
    rec = result.record("openvino-int8")
    assert rec.status == "unavailable"
    assert rec.reason == "nncf is not installed (pip install 'pytest-jitcpu[quant]')"
    assert result.record("openvino-int8-dynamic").status == "pass"  # it quantizes its weights itself


def test_openvino_int8_dynamic_round_trip_without_torch_runs_the_program_that_was_checked(tmp_path):
    x = torch.randn(8, 64, generator=torch.Generator().manual_seed(1))
    built = backends.build("openvino-int8-dynamic", wide_mlp(), normalize((x,)), "fp32")
    assert built.portable is not None and built.portable.options["config"] == {"DYNAMIC_QUANTIZATION_GROUP_SIZE": "64"}
    [theirs] = run_in_child(built, normalize((x,)), tmp_path)
    ours = built.run(normalize((x,))).numpy()
    # The same program gives the same numbers; OpenVINO's default groups (32) would differ by ~5e-3 here.
    np.testing.assert_allclose(theirs, ours, atol=1e-6, rtol=1e-6)
    assert np.abs(ours - wide_mlp()(x).detach().numpy()).max() > 1e-4  # quantized for real
