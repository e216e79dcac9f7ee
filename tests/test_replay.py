"""A ``diverges`` record's replay snippet: in the JSON record, the failure message and the Markdown, and
run by hand (a fresh Python process with the same model) it shows the same divergence."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from plugin_runs import load_json, records_by_test, run, schema_errors

from pytest_jitcpu.inputs import Inputs
from pytest_jitcpu.search import replay

MODELS = '''
import torch
from torch import nn


class ShapeToInt(nn.Module):
    """int(x.shape[1]) becomes a constant when traced."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(20, 4)

    def forward(self, input_ids, attention_mask):
        length = int(input_ids.shape[1])
        return (self.embed(input_ids) * attention_mask.unsqueeze(-1)).sum(dim=1) / length


def long_batch():
    ids = torch.randint(1, 20, (4, 40), generator=torch.Generator().manual_seed(0))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def short_batch():
    ids = torch.randint(1, 20, (2, 3), generator=torch.Generator().manual_seed(0))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
'''

SUITE = """
import pytest
import models


@pytest.mark.jitcpu(modes=["trace-dict"], dtypes=["fp32"], examples=10)
def test_long(jitcpu):
    jitcpu.check(models.ShapeToInt(), models.long_batch())


@pytest.mark.jitcpu(modes=["trace-tuple"], dtypes=["fp32"], examples=10)
def test_short(jitcpu):
    jitcpu.check(models.ShapeToInt(), models.short_batch())
"""

REPLAY = """
import sys
import torch
import pytest_jitcpu as jitcpu
import models

model = models.ShapeToInt()
exec(open(sys.argv[1], encoding="utf-8").read())
print("replayed", result.status(*sys.argv[2:4]))
"""


def test_the_replay_snippet_reproduces_the_divergence_in_a_fresh_process(jitcpu_pytester: pytest.Pytester) -> None:
    jitcpu_pytester.makepyfile(models=MODELS, test_suite=SUITE, replay_it=REPLAY)
    result = run(jitcpu_pytester, "--jitcpu-report=r.json", "--jitcpu-report=r.md", "-rA")  # examples: marker
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*pytest-jitcpu replay: ShapeToInt trace-dict/fp32 differs from eager*"])
    data = load_json(jitcpu_pytester.path / "r.json")
    assert schema_errors(data) == []
    md = (jitcpu_pytester.path / "r.md").read_text(encoding="utf-8")
    by_test = records_by_test(data)
    for test, mode in (("test_long", "trace-dict"), ("test_short", "trace-tuple")):
        rec = next(r for r in by_test[test] if r["mode"] == mode)
        assert rec["status"] == "diverges" and rec["replay"], rec
        snippet = rec["replay"]
        assert f"```python\n{snippet.rstrip()}\n```" in md
        if test == "test_long":  # 160 ids: a seeded generator call; the all-ones mask: torch.full
            assert "torch.randint(1, 20, (4, 40), generator=torch.Generator().manual_seed(0)" in snippet
            assert "torch.full((4, 40), 1, dtype=torch.int64)" in snippet
        else:  # small: written out
            assert "'input_ids': torch.tensor([[" in snippet
        path = jitcpu_pytester.path / f"{test}.py"
        path.write_text(snippet, encoding="utf-8")
        proc = subprocess.run(
            [sys.executable, "replay_it.py", str(path), mode, "fp32"],
            cwd=jitcpu_pytester.path,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert proc.stdout.strip().splitlines()[-1] == "replayed diverges"


@pytest.mark.parametrize(
    "tensor",
    [
        torch.randn(3, 4, generator=torch.Generator().manual_seed(0)),
        torch.randn(5, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16),
        torch.tensor([1e-30, -0.0, float("inf"), float("-inf"), float("nan")]),
        torch.randn(2, 2, dtype=torch.float64),
        torch.tensor([[3, -7], [2**40, 0]]),
        torch.tensor([True, False]),
        torch.tensor(2.5),
        torch.empty(0, 3),
    ],
)
def test_a_written_out_tensor_reads_back_exactly(tensor: torch.Tensor) -> None:
    back = eval(replay.literal(tensor), {"torch": torch, "float": float})
    assert back.dtype == tensor.dtype and back.shape == tensor.shape
    assert torch.equal(back.nan_to_num(), tensor.nan_to_num()) and torch.equal(back.isnan(), tensor.isnan())


def test_a_compact_snippet_that_does_not_reproduce_is_written_out_in_full() -> None:
    big = torch.randint(0, 9, (4, 10), generator=torch.Generator().manual_seed(5))  # not what seed 0 makes
    example, counter = Inputs(kwargs={"x": big}), Inputs(kwargs={"x": big[:1, :2]})
    tried: list[Inputs] = []

    def only_the_exact_values(ex: Inputs, ce: Inputs) -> bool:
        tried.append(ex)
        return torch.equal(ex.kwargs["x"], big)

    text = replay.snippet(
        example, counter, model="M", mode="trace-dict", dtype="fp32", tolerances={}, reproduces=only_the_exact_values
    )
    assert len(tried) == 2 and "torch.randint" not in text and "not confirmed" not in text
    assert f"'x': torch.tensor({big.tolist()}, dtype=torch.int64)" in text
    never = replay.snippet(
        example,
        counter,
        model="M",
        mode="trace-dict",
        dtype="fp32",
        tolerances={"atol": 0.1},
        reproduces=lambda *a: False,
    )
    assert "# (not confirmed when written" in never and "atol=0.1" in never
    compile(never, "<replay>", "exec")
    json.dumps(never)  # a plain string for the JSON record
    textwrap.dedent(never)
