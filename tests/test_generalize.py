"""Generalization checks (issue 4): a trace that matches on the example inputs but not on other inputs
must come out as ``diverges``, with a small counterexample and the TracerWarnings that explain it.

Each trap is a tiny module with one of the known ways tracing freezes Python into constants. The
controls (tiny BERT and DistilBERT from configs, a sequence conv that eager rejects on short inputs)
must stay ``pass``.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any

import pytest
import tiny_models as tm
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from plugin_runs import load_json, outcomes, records_by_test, run
from torch import nn

from pytest_jitcpu import engine
from pytest_jitcpu.inputs import normalize
from pytest_jitcpu.record import CheckResult
from pytest_jitcpu.search import strategies
from pytest_jitcpu.settings import Settings, UsageError

TRACES = ("trace-dict", "trace-tuple")
SETTINGS = Settings(modes=("eager", *TRACES), dtypes=("fp32",), examples=10, serialize=False)
SOURCE = Path(__file__).read_text(encoding="utf-8").splitlines()


def line_of(tag: str) -> int:
    """The line of this file that carries ``# <tag>`` (where a trap's TracerWarning must point)."""
    return next(i for i, text in enumerate(SOURCE, start=1) if text.rstrip().endswith(f"# {tag}"))


def check(model: nn.Module, inputs: Any, **changes: Any) -> CheckResult:
    settings = SETTINGS.updated(**changes) if changes else SETTINGS
    return engine.check(model.eval(), inputs, settings=settings)


def ids_batch(batch: int = 2, length: int = 6) -> dict[str, torch.Tensor]:
    ids = torch.randint(1, 20, (batch, length), generator=torch.Generator().manual_seed(0))
    return {"input_ids": ids}


def floats(batch: int = 2, width: int = 4) -> tuple[torch.Tensor]:
    return (torch.randn(batch, width, generator=torch.Generator().manual_seed(1)),)


# --- the traps ------------------------------------------------------------------------------------------


class ItemBaked(nn.Module):
    """``.item()``: the example's maximum becomes a constant."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / x.abs().max().item()  # TRAP-ITEM


class ShapeToInt(nn.Module):
    """``int(x.shape[1])``: the example's sequence length becomes a constant."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(20, 4)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        length = int(input_ids.shape[1])  # TRAP-INT
        return self.embed(input_ids).sum(dim=1) / length


class LenBaked(nn.Module):
    """``len(x)`` in an ``arange``: the example's batch size becomes a constant."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(len(x))  # TRAP-LEN
        return x + rows.unsqueeze(1)


class DataDependentBranch(nn.Module):
    """``if x.sum() > 0``: the branch the example took is the only one recorded."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # TRAP-BRANCH
            return x * 2
        return -x


class LoopOverSequence(nn.Module):
    """A Python loop over the sequence dimension: unrolled for the example's length."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(20, 4)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        hidden = self.embed(input_ids)
        total = hidden[:, 0]
        for i in range(1, input_ids.shape[1]):
            total = total + hidden[:, i]
        return total


class MaskShortcut(nn.Module):
    """Tensor-to-bool: skip the mask when it is all ones (traced on an unpadded batch, padding is ignored)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(20, 4)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.embed(input_ids)
        if bool(attention_mask.all()):  # TRAP-BOOL
            return hidden.mean(dim=1)
        weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1)


def unpadded() -> dict[str, torch.Tensor]:
    batch = ids_batch()
    batch["attention_mask"] = torch.ones_like(batch["input_ids"])
    return batch


TRAPS = [
    pytest.param(ItemBaked, floats, "TRAP-ITEM", id="item"),
    pytest.param(ShapeToInt, ids_batch, "TRAP-INT", id="int-shape"),
    pytest.param(LenBaked, floats, "TRAP-LEN", id="len"),
    pytest.param(DataDependentBranch, floats, "TRAP-BRANCH", id="branch"),
    pytest.param(LoopOverSequence, ids_batch, None, id="loop"),
    pytest.param(MaskShortcut, unpadded, "TRAP-BOOL", id="tensor-to-bool"),
]


@pytest.mark.parametrize(("trap", "inputs", "tag"), TRAPS)
def test_trap_diverges_with_a_counterexample_and_the_warning_line(trap: type, inputs: Any, tag: str | None) -> None:
    result = check(trap(), inputs())
    assert result.status("eager") == "pass"
    for mode in TRACES:
        rec = result.record(mode)
        assert rec.status == "diverges", result.table()
        assert rec.counterexample and "[" in rec.counterexample
        assert rec.reason and ("generated input" in rec.reason or "variation of the example" in rec.reason)
        assert rec.generalization["verdict"] == "tested" and rec.generalization["diverged_on"]
        assert rec.examples is not None and rec.examples >= 1
        if tag is not None:
            where = f"{Path(__file__).resolve()}:{line_of(tag)}"
            assert any(where in w for w in rec.warnings), rec.warnings  # the user's line, not torch's
            assert f"test_generalize.py:{line_of(tag)}" in rec.reason


class PaddedEmbedding(nn.Module):
    """``F.embedding`` compares ``padding_idx`` with a traced size: a TracerWarning raised in torch's code."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(20, 4, padding_idx=1)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.embed(input_ids)  # TORCH-WARNING


def test_a_tracer_warning_raised_inside_torch_points_at_the_model_line() -> None:
    rec = check(PaddedEmbedding(), ids_batch()).record("trace-dict")
    assert rec.status == "pass"
    assert rec.warnings and not [w for w in rec.warnings if os.path.dirname(torch.__file__) in w], rec.warnings
    assert any(f"{Path(__file__).resolve()}:{line_of('TORCH-WARNING')})" in w for w in rec.warnings), rec.warnings


def test_value_divergence_reports_the_diff_on_the_counterexample() -> None:
    rec = check(ShapeToInt(), ids_batch()).record("trace-dict")
    assert rec.status == "diverges"
    assert re.fullmatch(r"input_ids=int64\[\d+, \d+\] \[\[[\d, \[\]]+\]\]", rec.counterexample), rec.counterexample
    assert rec.max_abs_diff is not None and rec.atol is not None and rec.max_abs_diff > rec.atol
    assert "max abs diff" in rec.reason


def test_shrinks_to_a_small_counterexample() -> None:
    rec = check(LenBaked(), floats(batch=3)).record("trace-dict")
    assert rec.status == "diverges"
    # The batch size is what the trace froze: any other batch shows it; shrinking goes to batch 1.
    assert rec.counterexample.startswith("float32[1, "), rec.counterexample


def test_bf16_trace_is_compared_with_the_fp32_eager_reference() -> None:
    result = check(DataDependentBranch(), floats(), dtypes=("fp32", "bf16"))
    assert result.status("trace-dict", "bf16") == "diverges", result.table()


def test_same_run_twice_gives_the_same_statuses_and_counterexamples() -> None:
    first = check(MaskShortcut(), unpadded(), modes=("eager", "trace-dict"))
    second = check(MaskShortcut(), unpadded(), modes=("eager", "trace-dict"))
    assert first.status("trace-dict") == "diverges"
    assert [(r.status, r.counterexample, r.reason, r.examples) for r in first] == [
        (r.status, r.counterexample, r.reason, r.examples) for r in second
    ]


def test_generalizing_hf_models_stay_pass() -> None:
    model, inputs = tm.tiny_bert()
    result = check(model, inputs, dtypes=("fp32", "bf16"))
    assert all(r.status == "pass" for r in result), result.table()
    for rec in result:
        if rec.mode != "eager":
            # The variations of the example (rows, padding, values), then 10 generated inputs.
            g = rec.generalization
            assert g["verdict"] == "tested" and g["why_none"] is None, g
            assert g["kinds"] == [
                "batch-1",
                "more-rows",
                "permuted-rows",
                "padding",
                "values",
                "generated",
                "resized",
            ], g
            assert rec.examples == g["matched"] and rec.examples > 10, result.table()
            assert any("batch 1..4" in note and "seq 1..12" in note for note in rec.notes), rec.notes
    model, inputs = tm.tiny_distilbert()
    result = check(model, inputs)
    assert all(r.status == "pass" for r in result), result.table()


class SequenceConv(nn.Module):
    """Takes any length >= 3 (kernel 3): shorter generated inputs are rejected by eager, never blamed."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv1d(4, 4, kernel_size=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean(dim=-1)


def test_inputs_eager_rejects_are_not_divergences() -> None:
    x = torch.randn(2, 4, 8, generator=torch.Generator().manual_seed(0))
    # A conv's [batch, channels, length]: its length is declared (the defaults take dim 1 of a 3-d float
    # input as the sequence, which the conv rejects: its channels).
    result = check(SequenceConv(), (x,), dynamic={0: {0: "batch", 2: "length"}})
    rec = result.record("trace-dict")
    assert rec.status == "pass", result.table()
    assert rec.examples is not None and rec.examples >= 1
    assert rec.generalization["rejected_by_eager"] >= 1  # the short ones
    # Channels stay 4 (not in the domain); batch and length vary.
    assert any("batch 1..4" in n and "length 1..12" in n for n in rec.notes), rec.notes
    assert rec.domain == {
        "inputs": {"args[0]": {"0": "batch", "2": "length"}},
        "ranges": {"batch": [1, 4], "length": [1, 12]},
        "fixed": {},
        "declared": True,
    }


def test_by_default_a_3d_float_input_varies_its_sequence_dim_not_its_features() -> None:
    x = torch.randn(2, 4, 8, generator=torch.Generator().manual_seed(0))
    rec = check(SequenceConv(), (x,)).record("trace-dict")
    # Dim 1 is the sequence by role; the conv rejects other sizes of it, so only the batch varies.
    assert rec.domain["inputs"] == {"args[0]": {"0": "batch", "1": "seq"}}
    assert rec.domain["fixed"] == {"seq": 4} and rec.domain["ranges"] == {"batch": [1, 4]}
    assert rec.status == "pass" and rec.generalization["verdict"] == "tested", rec.generalization


def test_a_fixed_feature_size_stays_fixed() -> None:
    plan = strategies.plan_for(normalize(floats()), None)
    mlp = tm.TinyMLP().eval()
    settled = strategies.settle(plan, lambda x: _runs(mlp, x))
    assert [(a.name, a.low, a.high) for a in settled.varying] == [("batch", 1, 4)]


def _runs(model: nn.Module, inputs: Any) -> bool:
    try:
        with torch.no_grad():
            inputs.call(model)
    except Exception:  # noqa: BLE001 - any error means eager rejects the input
        return False
    return True


def test_examples_zero_turns_the_search_off() -> None:
    rec = check(ShapeToInt(), ids_batch(), examples=0).record("trace-dict")
    assert rec.status == "pass"
    assert rec.examples is None
    assert rec.generalization["verdict"] == "off" and not rec.untested


# --- the strategy derived from an example ---------------------------------------------------------------


def test_plan_for_an_hf_batch() -> None:
    model, _ = tm.tiny_gpt2(use_cache=False)  # n_positions 32
    batch = normalize(tm.text_batch())
    plan = strategies.plan_for(batch, model)
    ids, mask = plan.specs
    assert (ids.kind, ids.low, ids.high) == ("ids", 0, tm.VOCAB - 1)  # the whole vocabulary
    assert (mask.kind, mask.padding) == ("mask", "right")
    assert [(a.name, a.low, a.high) for a in plan.axes] == [("batch", 1, 4), ("seq", 1, 12)]
    model.config.n_positions = 10
    capped = strategies.plan_for(batch, model)
    assert dict((a.name, a.high) for a in capped.axes)["seq"] <= 10


LEFT_PADDED = {
    "input_ids": torch.tensor([[5, 6, 7, 8], [0, 0, 3, 4]]),
    "attention_mask": torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1]]),
    "token_type_ids": torch.zeros(2, 4, dtype=torch.long),
    "pixel_scale": torch.rand(2, 4, generator=torch.Generator().manual_seed(0)),
}


@settings(max_examples=40, database=None, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
@given(strategies.strategy(strategies.plan_for(normalize(LEFT_PADDED), None)))
def test_generated_inputs_keep_the_example_domains(inputs: Any) -> None:
    kw = inputs.kwargs
    shape = kw["input_ids"].shape
    assert all(kw[name].shape == shape for name in ("attention_mask", "token_type_ids"))
    assert kw["pixel_scale"].shape == (shape[0], 4)  # a [batch, features] float: its features stay fixed
    assert 1 <= shape[0] <= 4 and 1 <= shape[1] <= 8
    assert kw["input_ids"].dtype == torch.int64 and 0 <= int(kw["input_ids"].min()) <= int(kw["input_ids"].max()) <= 8
    mask = kw["attention_mask"]
    assert set(mask.unique().tolist()) <= {0, 1} and bool((mask == 1).any(dim=1).all())
    assert bool((mask[:, -1] == 1).all())  # left padding, as in the example: the last position is kept
    assert set(kw["token_type_ids"].unique().tolist()) == {0}
    assert kw["pixel_scale"].dtype == torch.float32 and float(kw["pixel_scale"].min()) >= 0


def test_summary_and_digest() -> None:
    inputs = normalize({"input_ids": torch.tensor([[5, 9, 2]]), "x": torch.zeros(2, 3, 4), "flag": True})
    assert (
        strategies.summarize(inputs) == "input_ids=int64[1, 3] [[5, 9, 2]], x=float32[2, 3, 4] mean=0 std=0, flag=True"
    )
    same = normalize({"input_ids": torch.tensor([[5, 9, 2]]), "x": torch.zeros(2, 3, 4), "flag": True})
    other = normalize({"input_ids": torch.tensor([[5, 9, 3]]), "x": torch.zeros(2, 3, 4), "flag": True})
    assert strategies.digest(inputs) == strategies.digest(same) != strategies.digest(other)


# --- generate=: the user's own inputs --------------------------------------------------------------------


def _ids(length: int) -> dict[str, torch.Tensor]:
    return {"input_ids": torch.arange(1, length + 1).unsqueeze(0) % 20}


def _from_rng(rng: random.Random) -> dict[str, torch.Tensor]:
    return _ids(rng.randint(1, 9))


def _from_index(i: int) -> dict[str, torch.Tensor]:
    return _ids(i + 1)


@pytest.mark.parametrize(
    "generate",
    [
        pytest.param(st.integers(1, 9).map(_ids), id="strategy"),
        pytest.param(_from_rng, id="callable-rng"),
        pytest.param(_from_index, id="callable-index"),
        pytest.param([_ids(6), _ids(3)], id="list"),
    ],
)
def test_generate_hook(generate: Any) -> None:
    result = engine.check(ShapeToInt().eval(), ids_batch(), settings=SETTINGS, generate=generate)
    rec = result.record("trace-dict")
    assert rec.status == "diverges", result.table()
    assert rec.counterexample.startswith("input_ids=int64[1, ")


def test_generate_hook_replaces_the_default_inputs() -> None:
    same_length = st.integers(1, 19).map(lambda v: {"input_ids": torch.full((2, 6), v)})
    result = engine.check(ShapeToInt().eval(), ids_batch(), settings=SETTINGS, generate=same_length)
    assert result.status("trace-dict") == "pass", result.table()


def _broken(rng: random.Random) -> dict[str, torch.Tensor]:
    raise KeyError("no such length")


def test_bad_generate_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="generate: expected a Hypothesis strategy"):
        engine.check(ShapeToInt().eval(), ids_batch(), settings=SETTINGS, generate=42)
    with pytest.raises(UsageError, match="inputs: got a str; pass a dict of keyword arguments"):
        engine.check(ShapeToInt().eval(), ids_batch(), settings=SETTINGS, generate=lambda rng: "text")
    with pytest.raises(UsageError, match="generate: failed while making inputs: KeyError: 'no such length'"):
        engine.check(ShapeToInt().eval(), ids_batch(), settings=SETTINGS, generate=_broken)


# --- through the plugin ----------------------------------------------------------------------------------

TRAP_TESTS = """
import pytest
import torch
from torch import nn


class ShapeToInt(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(20, 4)

    def forward(self, input_ids):
        length = int(input_ids.shape[1])
        return self.embed(input_ids).sum(dim=1) / length


def batch():
    return {"input_ids": torch.randint(1, 20, (2, 6), generator=torch.Generator().manual_seed(0))}


@pytest.mark.jitcpu(modes=["trace-dict"], dtypes=["fp32"])
def test_trap(jitcpu):
    jitcpu.check(ShapeToInt().eval(), batch())


@pytest.mark.jitcpu(modes=["trace-dict"], dtypes=["fp32"], examples=0)
def test_trap_not_searched(jitcpu):
    jitcpu.check(ShapeToInt().eval(), batch())
"""


def test_plugin_reports_diverges(jitcpu_pytester: pytest.Pytester) -> None:
    jitcpu_pytester.makepyfile(test_traps=TRAP_TESTS.lstrip())
    # Default options: generated inputs and the serialization round trip are both on.
    result = run(jitcpu_pytester, "-rA", "--jitcpu-report=out.json", fast=False)
    assert result.ret == 1
    assert outcomes(result) == {"test_trap": "FAILED", "test_trap_not_searched": "PASSED"}
    result.stdout.fnmatch_lines(["*jitcpu: ShapeToInt: 1 check(s) failed: trace-dict/fp32 diverges*", "*DIVERGES*"])
    by_test = records_by_test(load_json(jitcpu_pytester.path / "out.json"))
    trap = next(r for r in by_test["test_trap"] if r["mode"] == "trace-dict")
    assert trap["status"] == "diverges"
    assert trap["counterexample"].startswith("input_ids=int64[1, ")
    assert trap["examples"] >= 1
    assert trap["serializable"] is True  # wrong for other inputs, yet it round-trips: a separate verdict
    line = TRAP_TESTS.lstrip().splitlines().index("        length = int(input_ids.shape[1])") + 1
    assert any(f"test_traps.py:{line})" in w for w in trap["warnings"]), trap["warnings"]
    off = next(r for r in by_test["test_trap_not_searched"] if r["mode"] == "trace-dict")
    assert (off["status"], off["examples"]) == ("pass", None)


def test_export_is_searched_too_and_compile_says_why_it_is_not() -> None:
    # torch.export specializes int(x.shape[1]) to the example's size: the exported program then
    # raises on other sizes that eager accepts, which is a divergence, not a pass.
    result = check(ShapeToInt(), ids_batch(), modes=["eager", "export"])
    rec = result.record("export")
    assert rec.status == "diverges", result.table()
    # Shrunk to batch 1 and length 1, the sequence alone is named: batch 1 alone held.
    assert rec.reason.startswith("diverges on sequence length 1 (the example's 6): it raises; batch holds ("), (
        rec.reason
    )
    assert "exported program failed on a generated input that eager accepts" in rec.reason
    assert rec.counterexample
    bert, inputs = tm.tiny_bert()
    assert check(bert, inputs, modes=["eager", "export"]).status("export") == "pass"
