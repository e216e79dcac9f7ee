"""Serialization round trip (issue 4): torch.jit.save, then torch.jit.load and run in a fresh Python
that cannot import transformers; ``serializable`` per trace record, never a change of ``status``.

A round trip costs a subprocess (the child's ``import torch``), so the real architectures share one:
``serialize.batched()`` around several checks runs all their round trips together.
"""

from __future__ import annotations

import subprocess
import warnings
from pathlib import Path

import pytest
import tiny_models as tm
import torch
from torch import nn

from pytest_jitcpu import engine, options, serialize
from pytest_jitcpu.record import Record
from pytest_jitcpu.reports.markdown import markdown
from pytest_jitcpu.settings import Settings

TRACES = ("trace-dict", "trace-tuple")
FP32 = Settings(modes=("eager", *TRACES), dtypes=("fp32",), examples=0, serialize=True)


def test_hf_architectures_round_trip_without_transformers() -> None:
    with serialize.batched():  # one subprocess for all of them
        results = [
            engine.check(*tm.tiny_bert(), settings=FP32.updated(dtypes=("fp32", "bf16"))),
            engine.check(*tm.tiny_distilbert(), settings=FP32),
            engine.check(*tm.tiny_vit(), settings=FP32),
        ]
    for result in results:
        for rec in result:
            if rec.mode == "eager":
                assert rec.serializable is None
                continue
            assert rec.status == "pass", result.table()
            assert (rec.serializable, rec.serializable_reason) == (True, None), (result.model, rec.mode, rec.dtype)


def test_the_subprocess_cannot_import_transformers(tmp_path: Path) -> None:
    """The loader as serialize starts it: a job whose program imports transformers fails with the block's
    reason, and the loader reports nothing of transformers loaded."""
    from pytest_jitcpu.children import launch, protocol

    class ImportsTransformers(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + 1

    with warnings.catch_warnings():  # torch.jit.script / save are deprecated; the loader is for what they make
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(ImportsTransformers()), str(tmp_path / "m.pt"))
    jobs = [
        {
            "path": str(tmp_path / "m.pt"),
            "args": [torch.ones(2)],
            "kwargs": {},
            "dtype": "fp32",
            "runs": 1,
            "imports": [],
        },
        {
            "path": str(tmp_path / "m.pt"),
            "args": [torch.ones(2)],
            "kwargs": {},
            "dtype": "fp32",
            "runs": 1,
            "imports": ["transformers"],
        },
    ]
    torch.save(jobs, tmp_path / "jobs.pt")
    proc = subprocess.run(
        launch.command("torchscript"),
        input=protocol.request(str(tmp_path / "jobs.pt"), str(tmp_path / "results.pt")),
        env=launch.environment(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == protocol.DONE + "\n"
    data = torch.load(tmp_path / "results.pt")
    assert data["loaded"] == []
    first, second = data["results"]
    assert first["ok"] and torch.equal(first["output"], torch.full((2,), 2.0))
    assert second == {
        "ok": False,
        "error": "ImportError: transformers is blocked: a saved TorchScript program must run without it",
    }


@torch.library.custom_op("jitcpu_test::twice", mutates_args=())
def twice(x: torch.Tensor) -> torch.Tensor:
    return x * 2


class PythonCustomOp(nn.Module):
    """Traces and runs in-process, but the op is registered by this Python file: a fresh process lacks it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return twice(x) + 1


class Double(torch.autograd.Function):
    @staticmethod
    def forward(ctx: object, x: torch.Tensor) -> torch.Tensor:
        return x * 2

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> torch.Tensor:
        return grad * 2


class PythonFunction(nn.Module):
    """A custom autograd Function is a Python call in the trace: torch.jit.save refuses it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return Double.apply(x) + 1


def test_programs_that_need_python_are_not_serializable_but_still_pass() -> None:
    """(And positional calls round-trip: tuple inputs, a tensor default filled in by trace-tuple.)"""
    x = (torch.randn(2, 3, generator=torch.Generator().manual_seed(0)),)
    gap_inputs = {
        "a": tm.features(),
        "c": tm.features(seed=1),
    }  # trace-tuple fills the skipped parameter with its tensor default
    with serialize.batched():
        custom = engine.check(PythonCustomOp(), x, settings=FP32)
        function = engine.check(PythonFunction(), x, settings=FP32)
        gap = engine.check(tm.GapTensorDefault().eval(), gap_inputs, settings=FP32)
    assert [(r.mode, r.serializable) for r in gap] == [("eager", None), ("trace-dict", True), ("trace-tuple", True)]
    for mode in TRACES:
        rec = custom.record(mode)
        assert (rec.status, rec.serializable) == ("pass", False), custom.table()
        assert "without transformers failed" in rec.serializable_reason
        assert "Unknown builtin op: jitcpu_test::twice" in rec.serializable_reason
        rec = function.record(mode)
        assert (rec.status, rec.serializable) == ("pass", False), function.table()
        assert rec.serializable_reason.startswith(
            "torch.jit.save failed: RuntimeError: Could not export Python function"
        )


def test_serialize_off_leaves_the_field_unset() -> None:
    result = engine.check(tm.TinyMLP(), (tm.features(),), settings=FP32.updated(serialize=False))
    assert all(rec.serializable is None and rec.serializable_reason is None for rec in result)


def test_serialize_option_parsing(pytester: pytest.Pytester) -> None:
    config = pytester.parseconfig("--jitcpu-serialize=false", "--jitcpu-derandomize=no")
    settings = options.session_settings(config)
    assert (settings.serialize, settings.derandomize) == (False, False)
    assert options.session_settings(pytester.parseconfig()).serialize is True
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "--jitcpu-serialize=maybe")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--jitcpu-serialize*'maybe' is not a boolean*"])


def test_markdown_lists_what_is_not_serializable() -> None:
    records = [
        Record("t.py::test_a", "M", "trace-dict", "fp32", "pass", serializable=False, serializable_reason="no | op"),
        Record("t.py::test_a", "M", "trace-tuple", "fp32", "pass", serializable=True),
    ]
    md = markdown(records, {})
    assert "### Not serializable (torch.jit.save / load round trip)" in md
    assert "| `t.py::test_a` | M | trace-dict | fp32 | no \\| op |" in md
    assert "trace-tuple | fp32 | no" not in md
