"""Every known cause in hints.HINTS (and the cross-mode TorchScript-only row) reproduced by a real model:
its record's reason ends with the fix, and where the fix is cheap to apply, applying it makes the check pass."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
import tiny_models as tm
import torch
from torch import nn

from pytest_jitcpu import engine, hints
from pytest_jitcpu.record import CheckResult
from pytest_jitcpu.settings import Settings

FAST = Settings(dtypes=("fp32",), examples=0, serialize=False)


def check(model: nn.Module, inputs: dict, *modes: str, examples: int = 0) -> CheckResult:
    settings = FAST.updated(modes=["eager", *modes], examples=examples)
    return engine.check(model.eval(), inputs, settings=settings)


def fix(name: str) -> str:
    return next(h.fix for h in hints.HINTS if h.name == name)


class Branch(nn.Module):
    """``if x.sum() > 0``: tracing keeps the example's branch; torch.export refuses to guess."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return x * 2
        return -x


class BranchWithCond(nn.Module):
    """Branch, rewritten as the hint says."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cond(x.sum() > 0, lambda t: t * 2, lambda t: -t, (x,))


class TensorAndNone(nn.Module):
    """``(y, None)``: torch.jit.trace refuses a None output, torch.export takes it."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.lin(x), None


def dynamic_cache() -> None:
    model, inputs = tm.tiny_gpt2(use_cache=True)
    rec = check(model, inputs, "trace-dict").record("trace-dict")
    assert rec.status == "fallback" and "DynamicCache" in rec.reason
    assert rec.reason.endswith(hints.FIX + fix("dynamic-cache")), rec.reason
    model.config.use_cache = False  # the fix
    assert check(model, inputs, "trace-dict").status("trace-dict") == "pass"


def non_tensor_output() -> None:
    rec = check(tm.PythonObjectOutput(), {"x": tm.features()}, "trace-dict").record("trace-dict")
    assert rec.status == "fallback" and "Tracer cannot infer type" in rec.reason
    assert rec.reason.endswith(hints.FIX + fix("non-tensor-output")), rec.reason


def data_dependent_branch_export() -> None:
    rec = check(Branch(), {"x": tm.features()}, "export").record("export")
    assert rec.status == "fallback" and "data-dependent" in rec.reason
    assert rec.reason.endswith(hints.FIX + fix("data-dependent-branch-export")), rec.reason
    assert check(BranchWithCond(), {"x": tm.features()}, "export").status("export") == "pass"


def data_dependent_branch_trace() -> None:
    inputs = {"x": torch.randn(2, 4, generator=torch.Generator().manual_seed(1))}
    rec = check(Branch(), inputs, "trace-dict", examples=10).record("trace-dict")
    assert rec.status == "diverges", rec.reason
    assert rec.reason.endswith(hints.FIX + fix("data-dependent-branch-trace")), rec.reason


class BatchBakedIn(nn.Module):
    """``torch.zeros(int(x.shape[0]), 3)``: the trace keeps the example's batch size in its output shape."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(int(x.shape[0]), 3) + x.sum()


def shape_divergence() -> None:
    rec = check(BatchBakedIn(), {"x": tm.features()}, "trace-dict", examples=5).record("trace-dict")
    assert rec.status == "diverges", rec.reason
    assert re.match(r"diverges on batch \d \(the example's 2\): it differs\. ", rec.reason), rec.reason
    assert "torch.cond" not in rec.reason  # a shape, not a branch on a value
    assert rec.reason.endswith(
        "; fix: the program baked a size of batch in; deploy with the export or onnx modes, which keep the input "
        "domain's dims dynamic, or, if the model only ever sees this size, narrow the input domain: "
        "dynamic={'x': None}"
    ), rec.reason
    narrowed = FAST.updated(modes=["eager", "trace-dict"], examples=5, dynamic={"x": None})
    fixed = engine.check(BatchBakedIn().eval(), {"x": tm.features()}, settings=narrowed).record("trace-dict")
    assert fixed.status == "pass" and fixed.generalization["verdict"] == "tested", fixed.generalization


def torchscript_only() -> None:
    result = check(TensorAndNone(), {"x": tm.features()}, "trace-tuple", "export")
    assert result.status("export") == "pass"
    rec = result.record("trace-tuple")
    assert rec.status == "fallback" and "Only tensors" in rec.reason
    assert rec.reason.endswith(
        "; this is a TorchScript-only failure: export passed on this model; deploy with the export mode instead"
    ), rec.reason
    # without export in the check there is no evidence, so no such claim
    alone = check(TensorAndNone(), {"x": tm.features()}, "trace-tuple").record("trace-tuple")
    assert "TorchScript-only" not in alone.reason


def fully_masked_row() -> None:
    model, inputs = tm.tiny_bert()  # runs sdpa as given
    inputs["attention_mask"][1] = 0
    rec = check(model, inputs, "attn-eager").record("attn-eager")
    assert rec.status == "mismatch" and rec.worst.startswith("last_hidden_state[1,"), rec.reason
    assert rec.reason.endswith(hints.FIX + fix("fully-masked-row")), rec.reason
    kept = {name: value[:1] for name, value in inputs.items()}  # the fix: the fully masked row left out
    assert check(model, kept, "attn-eager").status("attn-eager") == "pass"


def int8_error() -> None:
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    torch.manual_seed(0)
    inputs = {"input": torch.randn(8, 16, generator=torch.Generator().manual_seed(0))}
    rec = check(model, inputs, "onnx-int8").record("onnx-int8")
    assert rec.status == "mismatch", rec.reason
    assert rec.reason.endswith(hints.FIX + fix("int8-error")), rec.reason
    # the fix: the error the user accepts, stated
    settings = FAST.updated(modes=["eager", "onnx-int8"], atol=0.2, rtol=0.2)
    assert engine.check(model.eval(), inputs, settings=settings).status("onnx-int8") == "pass"


REPRODUCERS: dict[str, Callable[[], None]] = {
    "int8-error": int8_error,
    "dynamic-cache": dynamic_cache,
    "non-tensor-output": non_tensor_output,
    "data-dependent-branch-export": data_dependent_branch_export,
    "data-dependent-branch-trace": data_dependent_branch_trace,
    "torchscript-only": torchscript_only,
    "shape-divergence": shape_divergence,
    "fully-masked-row": fully_masked_row,
}


def test_every_known_cause_has_a_reproducer() -> None:
    assert set(REPRODUCERS) == {h.name for h in hints.HINTS} | {"torchscript-only"}


@pytest.mark.parametrize("name", list(REPRODUCERS))
def test_known_cause_ends_with_its_fix(name: str) -> None:
    REPRODUCERS[name]()


def test_a_passing_model_gets_no_hint() -> None:
    result = check(tm.TinyMLP(), {"x": tm.features()}, "trace-dict", "export")
    assert all(r.status == "pass" and r.reason is None for r in result.records)
