"""The deployment runtimes: ``onnx`` (torch.onnx.export, dynamo, in ONNX Runtime) and ``openvino``
(openvino.convert_model compiled for CPU), checked like the other modes: verdict against eager, the
divergence search, the round trip in a process without torch, fallback and unavailable reasons.

Exports cost seconds on 2 shared cores: one pytester run checks a tiny BERT in both modes; the other
cases use hand-written modules built once per module.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tiny_models as tm
import torch
from plugin_runs import load_json, records_by_test, run, statuses
from portable_child import run_in_child

from pytest_jitcpu import backends, engine, environment, serialize
from pytest_jitcpu.backends import base, onnx, openvino
from pytest_jitcpu.backends.base import Fallback, Unavailable
from pytest_jitcpu.children import portable
from pytest_jitcpu.compare import Tolerance
from pytest_jitcpu.inputs import normalize
from pytest_jitcpu.record import Record

RUNTIMES = ["onnx", "openvino"]


class BranchOnValue(torch.nn.Module):
    """Python control flow on a tensor's value: torch.export refuses it (onnx: ``fallback``); OpenVINO's
    TorchScript tracing bakes the branch taken on the example in (``diverges`` on other values)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.lin(x)
        if y.sum() > 0:
            return y * 2
        return y - 1


class IntOutput(torch.nn.Module):
    """Returns a Python int next to a tensor: torch.export captures it, the ONNX conversion cannot."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> dict[str, Any]:
        return {"y": self.lin(x), "n": 3}


class Warns(torch.nn.Module):
    """Warns from its own forward(): that warning belongs in the record, the exporter's chatter does not."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        warnings.warn("the model's own warning", UserWarning, stacklevel=1)
        return self.lin(x)


class Nested(torch.nn.Module):
    """A tuple input and nested outputs: inputs keep their names or order, outputs get eager's structure."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(4, 4)

    def forward(self, x: torch.Tensor, pair: tuple[torch.Tensor, torch.Tensor], c: torch.Tensor) -> Any:
        a, b = pair
        return self.lin(x) + a, {"b": b * 2, "c": torch.tanh(x - c)}


class MixedDictOutput(torch.nn.Module):
    """A dict output holding a tensor and a tuple: TorchScript's tracer (under OpenVINO) refuses it."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(4, 4)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> Any:
        return {"y": self.lin(x) - 2 * c, "z": (x * c, torch.tanh(c))}


@pytest.fixture(scope="module")
def mlp_built() -> dict[str, base.Built]:
    """TinyMLP built once per runtime (fp32), shared by the round-trip tests."""
    batch = normalize((tm.features(),))
    return {mode: backends.build(mode, tm.TinyMLP(), batch, "fp32") for mode in RUNTIMES}


def test_tiny_bert_in_both_runtimes_through_the_plugin(jitcpu_pytester: pytest.Pytester) -> None:
    # The user's `filterwarnings = error` must stay safe: the exporters and tracers warn a lot.
    jitcpu_pytester.makeini("[pytest]\nfilterwarnings = error\n")
    jitcpu_pytester.makepyfile(
        test_inner="""
        import tiny_models as tm


        def test_bert(jitcpu):
            model, batch = tm.tiny_bert()
            jitcpu.check(model, batch)
        """
    )
    result = run(
        jitcpu_pytester,
        "-rA",
        "--jitcpu-modes=eager,onnx,openvino",
        "--jitcpu-dtypes=fp32",  # bf16 (unavailable in onnx, CPU-dependent in openvino) is checked below
        "--jitcpu-examples=3",
        "--jitcpu-report=r.json",
        fast=False,
    )
    result.assert_outcomes(passed=1)
    report = load_json(jitcpu_pytester.path / "r.json")
    found = {(r["mode"], r["dtype"]): r for r in records_by_test(report)["test_bert"]}
    assert statuses(records_by_test(report)["test_bert"]) == {
        ("BertModel", "eager", "fp32"): "pass",
        ("BertModel", "onnx", "fp32"): "pass",
        ("BertModel", "openvino", "fp32"): "pass",
    }
    for mode in RUNTIMES:
        rec = found[(mode, "fp32")]
        assert rec["max_abs_diff"] <= 1e-5 and rec["serializable"] is True, rec
        # The divergence search ran: the variations of the example, then 3 generated inputs.
        assert rec["examples"] >= 3 and rec["generalization"]["verdict"] == "tested", rec
        assert "generated" in rec["generalization"]["kinds"], rec
    assert "onnx: dynamic batch, seq (<= 512)" in found[("onnx", "fp32")]["notes"]
    assert "openvino: every input dim dynamic (covers the input domain)" in found[("openvino", "fp32")]["notes"]
    assert any(w.startswith("TracerWarning") for w in found[("openvino", "fp32")]["warnings"])
    assert report["environment"]["onnxruntime"] and report["environment"]["openvino"]


def test_a_branch_on_a_value_is_a_fallback_in_onnx_and_diverges_in_openvino() -> None:
    result = engine.check(BranchOnValue(), (tm.features(),), modes=["eager", *RUNTIMES], dtypes=["fp32"])
    onnx_rec, ov_rec = result.record("onnx"), result.record("openvino")
    assert onnx_rec.status == "fallback"
    assert onnx_rec.reason.startswith("GuardOnDataDependentSymNode: Could not guard on data-dependent expression")
    assert "\n" not in onnx_rec.reason
    assert ov_rec.status == "diverges", ov_rec
    assert ov_rec.reason.startswith("differs from eager on a generated input")
    assert ov_rec.counterexample and any("TracerWarning" in w for w in ov_rec.warnings)


def test_an_export_failure_is_a_fallback_with_the_exporters_real_reason() -> None:
    with pytest.raises(Fallback) as caught:
        onnx.build(IntOutput(), normalize((tm.features(),)), "fp32")
    # The innermost cause, then which step of the exporter failed; one line, no ANSI colours.
    assert caught.value.reason == (
        "AttributeError: 'int' object has no attribute 'name' "
        "(torch.onnx.export: Failed to convert the exported program to an ONNX model)"
    )
    result = engine.check(tm.PythonObjectOutput(), (tm.features(),), modes=["eager", *RUNTIMES], dtypes=["fp32"])
    assert result.record("onnx").status == "fallback"
    assert result.record("onnx").reason.startswith("RuntimeError: Found <class 'object'> in output")
    assert result.record("openvino").status == "fallback"
    assert result.record("openvino").reason.startswith("forward() returns values that are not tensors (object)")


def test_openvino_conversion_errors_lose_the_cpp_boilerplate() -> None:
    message = (
        "Check 'false' failed at src/frontends/common_translators/src/unconverted_ops_report.cpp:151:\n"
        "FrontEnd API failed with OpConversionFailure:\nModel wasn't fully converted. Failed operations detailed "
        "log:\n-- prim::Constant with a message:\nNone constant cannot be converted\nSummary:\n"
        "-- No conversion rule found for operations: aten::diff\n-- Conversion is failed for: prim::Constant\n"
    )
    assert openvino.conversion_reason(RuntimeError(message)) == (
        "OpConversionFailure: Model wasn't fully converted: No conversion rule found for operations: aten::diff; "
        "Conversion is failed for: prim::Constant"
    )


@pytest.mark.parametrize("mode", RUNTIMES)
def test_inputs_keep_their_names_and_outputs_eagers_structure(mode: str) -> None:
    x, a, b, c = (tm.features(seed=i) for i in range(4))
    # A dict not in forward()'s order (bound by name), and a positional tuple with a nested pair.
    for model, inputs in [(Nested(), {"c": c, "pair": (a, b), "x": x}), (Nested(), (x, (a, b), c))]:
        rec = engine.check(model, inputs, modes=["eager", mode], dtypes=["fp32"]).record(mode)
        assert rec.serializable is True, rec
        if mode == "onnx":
            # The nested pair makes the dynamic-batch export fall back to static shapes (its note says so):
            # the ONNX model runs the example's batch only, and the batch-1 variation of the example shows it.
            assert any("exported with static shapes" in note for note in rec.notes), rec.notes
            assert rec.status == "diverges" and rec.generalization["diverged_on"] == "batch-1", rec
            assert "Got invalid dimensions for input" in rec.reason
        else:
            assert rec.status == "pass", rec


def test_openvino_cannot_trace_a_dict_of_mixed_outputs_and_says_why() -> None:
    x, c = tm.features(seed=0), tm.features(seed=1)
    rec = engine.check(MixedDictOutput(), {"x": x, "c": c}, modes=["eager", "openvino"], dtypes=["fp32"]).record(
        "openvino"
    )
    assert rec.status == "fallback"
    assert rec.reason.startswith(
        "RuntimeError: Couldn't get TorchScript module by tracing. Exception: Tracer cannot infer type of"
    )
    assert "Dictionary inputs to traced functions must have consistent type" in rec.reason


@pytest.mark.parametrize("mode", RUNTIMES)
def test_the_round_trip_runs_in_a_child_that_cannot_import_torch(
    mode: str, mlp_built: dict[str, base.Built], tmp_path: Path
) -> None:
    built = mlp_built[mode]
    [out] = run_in_child(built, normalize((tm.features(seed=4),)), tmp_path)
    got = torch.from_numpy(out)
    torch.testing.assert_close(got, tm.TinyMLP()(tm.features(seed=4)).detach(), atol=1e-6, rtol=1e-5)


def test_the_child_program_imports_nothing_heavy_before_its_block() -> None:
    # Started with -m: the package's __init__, children/__init__ and what the child imports at module level
    # load before the block is in place, so they must be the standard library and the block itself.
    children = Path(portable.__file__).parent
    for path in (children.parent / "__init__.py", children / "__init__.py", Path(portable.__file__)):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        top = {a.name for n in tree.body if isinstance(n, ast.Import) for a in n.names}
        top |= {n.module or "" for n in tree.body if isinstance(n, ast.ImportFrom) and n.level == 0}
        assert not top - {"__future__", "importlib", "json", "sys", "types", "typing"}, (path, top)
        relative = {n.module for n in tree.body if isinstance(n, ast.ImportFrom) and n.level}
        assert relative <= {"blocker", "protocol"}, (path, relative)
    for name in ("blocker", "protocol"):
        tree = ast.parse((children / f"{name}.py").read_text(encoding="utf-8"))
        assert not [n for n in tree.body if isinstance(n, ast.ImportFrom) and n.level], name
    # ... and its one `import torch` is the probe that must fail.
    assert set(portable.BLOCKED) == {"torch", "transformers"}


@pytest.mark.parametrize("mode", RUNTIMES)
def test_a_program_the_runtime_cannot_load_is_not_serializable(
    mode: str, mlp_built: dict[str, base.Built], tmp_path: Path
) -> None:
    built = mlp_built[mode]

    def corrupt(folder: Path) -> Path:
        path = folder / ("model.onnx" if mode == "onnx" else "model.xml")
        path.write_text("not a model", encoding="utf-8")
        return path

    broken = base.Built(
        mode,
        "fp32",
        built.run,
        portable=base.Portable(
            built.portable.runtime, corrupt, built.portable.feed, built.portable.outputs, built.portable.options
        ),
    )
    rec = Record(nodeid="", model="TinyMLP", mode=mode, dtype="fp32", status="pass")
    with serialize.batched():
        serialize.check(normalize((tm.features(),)), broken, rec, Tolerance("fp32", None, None))
    assert rec.serializable is False
    runtime = "onnxruntime" if mode == "onnx" else "openvino"
    assert rec.serializable_reason.startswith(
        f"{runtime} load and run in a fresh Python that cannot import torch or transformers failed: "
    ), rec.serializable_reason


def test_onnx_bf16_is_unavailable_because_ort_cpu_has_no_bf16_gemm() -> None:
    # Found by trying: if a later ONNX Runtime runs bf16 Gemm on CPU, this fails and bf16 onnx can be enabled.
    reason = onnx.bf16_unsupported()
    assert reason is not None and "Gemm" in reason and "NOT_IMPLEMENTED" in reason
    with pytest.raises(Unavailable, match="cannot run bf16 models"):
        onnx.build(tm.TinyMLP(), normalize((tm.features(),)), "bf16")


def test_openvino_bf16_needs_native_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(environment, "cpu_flags", lambda: frozenset({"avx2", "avx512f"}))
    with pytest.raises(Unavailable, match=r"has no native BF16 \(avx512_bf16 or AMX\)"):
        openvino.build(tm.TinyMLP(), normalize((tm.features(),)), "bf16")


def test_openvino_bf16_runs_in_bf16_where_the_cpu_has_it() -> None:
    # Runs on every CPU: where OpenVINO has no native BF16 the record must say so instead of emulating.
    result = engine.check(tm.TinyMLP(), (tm.features(),), modes=["eager", "openvino"], dtypes=["fp32", "bf16"])
    fp32, bf16 = result.record("openvino", "fp32"), result.record("openvino", "bf16")
    assert fp32.status == "pass"
    assert fp32.max_abs_diff < 1e-5  # f32 is really f32 (the hint is set: the default on a BF16 CPU is bf16)
    native = bool({"avx512_bf16", "amx_bf16"} & environment.cpu_flags()) and "BF16" in openvino.capabilities()
    if native:
        assert bf16.status == "pass" and bf16.max_abs_diff > 1e-5, bf16  # bf16 really rounds
    else:
        assert bf16.status == "unavailable" and "has no native BF16" in bf16.reason, bf16


@pytest.mark.parametrize(
    ("mode", "package"), [("onnx", "onnxruntime"), ("onnx", "onnxscript"), ("openvino", "openvino")]
)
def test_a_missing_package_is_unavailable_with_an_install_hint(
    mode: str, package: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, package, None)  # import raises ImportError, as when not installed
    result = engine.check(tm.TinyMLP(), (tm.features(),), modes=["eager", mode], dtypes=["fp32"])
    rec = result.record(mode)
    assert rec.status == "unavailable"
    assert rec.reason == f"{package} is not installed (pip install 'pytest-jitcpu[{mode}]')"


@pytest.fixture(scope="module")
def encoder_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from inference_models import encoder

    return encoder(tmp_path_factory.mktemp("runtime-models") / "st")


def test_jitcpu_run_mode_onnx_gives_eagers_embeddings(encoder_folder: Path, tmp_path: Path) -> None:
    # `--mode openvino` takes the same path (the mode's table row); one subprocess keeps the suite fast.
    from inference_models import SENTENCES, mean_pooled

    mode = "onnx"
    source, out = tmp_path / "in.txt", tmp_path / "out.npy"
    source.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    argv = ["run", str(encoder_folder), "--input", str(source), "--output", str(out), "--mode", mode]
    proc = subprocess.run(
        [sys.executable, "-m", "pytest_jitcpu.cli", *argv], capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert f"jitcpu: running {mode}/fp32: verified on" in proc.stderr
    assert f"mode {mode}/fp32" in proc.stderr.splitlines()[-2]
    np.testing.assert_allclose(np.load(out), mean_pooled(encoder_folder, SENTENCES).numpy(), atol=2e-5)


def test_onnx_notes_say_what_stayed_static() -> None:
    built = onnx.build(tm.TinyText().eval(), normalize(tm.text_batch(batch=1)), "fp32")
    assert built.notes == ["onnx: dynamic seq; batch static (the inputs share no batch size > 1)"]
    longer = normalize(tm.text_batch(batch=1, length=11))
    assert built.run(longer)["logits"].shape == (1, 11, 3)  # the sequence really is dynamic in the ONNX model


def test_the_exporters_warnings_are_captured_and_the_models_own_kept() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # as under a user's filterwarnings = error
        built = onnx.build(Warns(), normalize((tm.features(),)), "fp32")
    assert built.warnings == [
        f"UserWarning: the model's own warning ({__file__}:{Warns.forward.__code__.co_firstlineno + 1})"
    ]
