"""The ``aoti`` mode: torch.export + AOTInductor package, checked against eager, searched, round-tripped in
a process without the model's code, with a shape contract that refuses what AOTInductor would run unchecked.

Every AOTInductor compile costs 10-60 s on 2 cores: one pytester run checks the clean models and the traps
together, and the contract's own tests share one package (module-scoped fixture).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tiny_models as tm
import torch
from inference_models import SENTENCES, encoder
from plugin_runs import load_json, records_by_test, run

from pytest_jitcpu.backends import aoti
from pytest_jitcpu.backends.aoti_package import ContractError, Package, contract_path
from pytest_jitcpu.inputs import Inputs

MATRIX = """
import pytest
import tiny_models as tm
import torch
from torch import nn


class ShapeTrap(nn.Module):
    # A branch on the sequence length: export keeps the branch it saw (seq > 4) and guards on it.
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(tm.VOCAB, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, input_ids, attention_mask):
        hidden = self.embed(input_ids) * attention_mask.unsqueeze(-1)
        if input_ids.shape[1] > 4:
            hidden = hidden * 2
        return self.head(hidden)


class BatchTrap(nn.Module):
    # A Python loop over the rows: export unrolls it for the example's batch size.
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        return torch.stack([self.lin(x[i]) * (i + 1) for i in range(x.shape[0])])


@pytest.mark.jitcpu(modes=["eager", "aoti"], dtypes=["fp32", "bf16"])
def test_text(jitcpu):
    jitcpu.check(tm.TinyText(), tm.text_batch())


@pytest.mark.jitcpu(modes=["eager", "aoti"])
def test_bert(jitcpu):
    model, batch = tm.tiny_bert()
    jitcpu.check(model, batch)


@pytest.mark.jitcpu(modes=["eager", "aoti"])
def test_shape_trap(jitcpu):
    jitcpu.check(ShapeTrap().eval(), tm.text_batch())


@pytest.mark.jitcpu(modes=["eager", "aoti"])
def test_batch_trap(jitcpu):
    jitcpu.check(BatchTrap().eval(), (tm.features(batch=2),))
"""


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[tuple[str, str], dict]]:
    """One pytester-like run of MATRIX (a real test file, its own pytest process, round trip on)."""
    folder = tmp_path_factory.mktemp("matrix")
    tests = Path(__file__).resolve().parent.parent
    (folder / "tiny_models.py").write_text((tests / "tiny_models.py").read_text(encoding="utf-8"), encoding="utf-8")
    (folder / "test_matrix.py").write_text(MATRIX, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("JITCPU_")}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rA", "--jitcpu-report=report.json"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert "INTERNALERROR" not in proc.stdout + proc.stderr, proc.stdout[-3000:]
    data = load_json(folder / "report.json")
    return {"stdout": proc.stdout, "records": records_by_test(data)}


def by_mode(records: list[dict]) -> dict[tuple[str, str], dict]:
    return {(r["mode"], r["dtype"]): r for r in records}


def test_clean_models_pass_and_their_package_runs_without_the_model_code(matrix):
    for name, dtypes in (("test_text", ("fp32", "bf16")), ("test_bert", ("fp32",))):
        records = by_mode(matrix["records"][name])
        for dtype in dtypes:
            rec = records[("aoti", dtype)]
            assert rec["status"] == "pass", (name, dtype, rec["reason"])
            # the .pt2 loaded and run in a fresh Python that refuses transformers and the test module
            assert rec["serializable"] is True, (name, dtype, rec["serializable_reason"])
            assert rec["generalization"]["verdict"] == "tested" and rec["generalization"]["matched"] > 0
            assert rec["compile_time_ms"] > 0
            assert any(n.startswith("aoti: shape contract input_ids int64[") for n in rec["notes"]), rec["notes"]
    bf16 = by_mode(matrix["records"]["test_text"])[("aoti", "bf16")]
    assert any("autocast written into the program" in n for n in bf16["notes"])
    assert "PASSED test_matrix.py::test_text" in matrix["stdout"]
    assert "PASSED test_matrix.py::test_bert" in matrix["stdout"]


@pytest.mark.parametrize(
    ("name", "dim"),
    [("test_shape_trap", "'input_ids' dim 1"), ("test_batch_trap", "'args[0]' dim 0")],
)
def test_shape_and_batch_traps_do_not_pass_and_say_why(matrix, name, dim):
    rec = by_mode(matrix["records"][name])[("aoti", "fp32")]
    assert rec["status"] == "diverges", rec
    # the package refused an input of the domain that eager accepts: the record says which and why
    assert "that eager accepts" in rec["reason"] and "ContractError" in rec["reason"], rec["reason"]
    assert dim in rec["reason"] and "pytorch#151925" in rec["reason"], rec["reason"]
    assert f"FAILED test_matrix.py::{name}" in matrix["stdout"]


@pytest.fixture(scope="module")
def built() -> aoti.Built:
    return aoti.build(tm.TinyText(), Inputs(kwargs=tm.text_batch()), "fp32")


def test_the_package_runs_other_shapes_of_its_contract_like_eager(built):
    model = tm.TinyText()
    for batch, length in ((1, 3), (5, 11)):
        inputs = Inputs(kwargs=tm.text_batch(batch, length))
        got, want = built.run(inputs.clone()), inputs.call(model)
        torch.testing.assert_close(got["logits"], want["logits"], atol=1e-5, rtol=1e-5)


def test_an_input_outside_the_contract_is_refused_with_the_input_dim_and_range(built):
    ids, mask = tm.text_batch(2, 8)["input_ids"], tm.text_batch(2, 6)["attention_mask"]
    # AOTInductor itself runs it and returns something (pytorch#151925): the reason for the contract
    built.module.model(input_ids=ids, attention_mask=mask)
    with pytest.raises(ContractError) as caught:
        built.module(input_ids=ids, attention_mask=mask)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("aoti package input 'attention_mask' dim 1 is 6; the package needs it equal to")
    assert "'input_ids' dim 1 (8)" in message and "pytorch#151925" in message
    with pytest.raises(ContractError, match=r"'input_ids' is int32\[2, 8\]; the package takes int64 of rank 2"):
        built.module(input_ids=ids.int(), attention_mask=tm.text_batch(2, 8)["attention_mask"])
    with pytest.raises(
        ContractError, match=r"takes the inputs \(input_ids, attention_mask\); it was given \(input_ids\)"
    ):
        built.module(input_ids=ids)
    with pytest.raises(ContractError, match=r"input 'input_ids' dim 0 is 0; the package allows >= 1 there"):
        built.module(**{k: v[:0] for k, v in tm.text_batch(2, 8).items()})


def test_the_saved_package_carries_its_contract_inside_and_beside(built, tmp_path):
    path = built.portable.save(tmp_path)
    beside = json.loads(contract_path(path).read_text(encoding="utf-8"))
    assert [i["name"] for i in beside["inputs"]] == ["input_ids", "attention_mask"]
    contract_path(path).unlink()  # the package's own metadata still has it
    package = Package(path)
    assert package.contract == beside
    with pytest.raises(ContractError, match="dim 1 is 6"):
        package(**{**tm.text_batch(2, 8), "attention_mask": tm.text_batch(2, 6)["attention_mask"]})


def test_without_a_cxx_compiler_aoti_is_unavailable_with_the_fix(jitcpu_pytester, monkeypatch):
    monkeypatch.setenv("CXX", "/nonexistent/bin/g++")
    jitcpu_pytester.makepyfile(
        test_cxx="""
        import pytest
        import tiny_models as tm

        @pytest.mark.jitcpu(modes=["eager", "aoti"])
        def test_text(jitcpu):
            jitcpu.check(tm.TinyText(), tm.text_batch())
        """
    )
    result = run(jitcpu_pytester, "--jitcpu-report=report.json")
    rec = by_mode(records_by_test(load_json(jitcpu_pytester.path / "report.json"))["test_text"])
    aoti_rec = rec[("aoti", "fp32")]
    assert aoti_rec["status"] == "unavailable", aoti_rec
    assert "no C++ compiler was found (tried: /nonexistent/bin/g++)" in aoti_rec["reason"]
    assert "install g++" in aoti_rec["reason"] and "CXX" in aoti_rec["reason"]
    result.assert_outcomes(passed=1)


def test_jitcpu_run_mode_aoti_equals_eager(tmp_path):
    folder = encoder(tmp_path / "st")
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(SENTENCES * 2) + "\n", encoding="utf-8")
    outputs = {}
    for mode in ("eager", "aoti"):
        out, summary = tmp_path / f"{mode}.npy", tmp_path / f"{mode}.json"
        argv = [sys.executable, "-m", "pytest_jitcpu.cli", "run", str(folder), "--task", "feature-extraction"]
        argv += ["--input", str(texts), "--output", str(out), "--mode", mode, "--batch-size", "4"]
        argv += ["--summary", str(summary)]
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stderr[-2000:]
        outputs[mode] = np.load(out)
        assert json.loads(summary.read_text(encoding="utf-8"))["mode"] == mode
    np.testing.assert_allclose(outputs["aoti"], outputs["eager"], atol=1e-5, rtol=1e-4)
