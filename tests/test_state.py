"""Models that change their own Python state in forward(): every mode checks the model as given, the
model is left as it was found, and the records say what forward() changed (issue 9)."""

from __future__ import annotations

import json

import pytest
import tiny_models as tm
import torch
from plugin_runs import load_json, records_by_test, run

from pytest_jitcpu import engine, state
from pytest_jitcpu.settings import Settings


def fingerprint(model: torch.nn.Module) -> tuple[list[object], dict[str, torch.Tensor]]:
    """What a user would compare: every submodule's type and plain attributes, and every tensor."""
    modules = []
    for name, module in model.named_modules():
        attrs = {
            k: (tuple(v.shape) if isinstance(v, torch.Tensor) else repr(v))
            for k, v in vars(module).items()
            if not k.startswith("_") and not isinstance(v, torch.nn.Module)
        }
        modules.append((name, type(module).__name__, sorted(attrs.items())))
    return modules, {k: v.clone() for k, v in model.state_dict().items()}


def same(a: tuple[list[object], dict[str, torch.Tensor]], b: tuple[list[object], dict[str, torch.Tensor]]) -> bool:
    return a[0] == b[0] and a[1].keys() == b[1].keys() and all(torch.equal(a[1][k], b[1][k]) for k in a[1])


class Holder(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = torch.nn.Linear(2, 2)
        self.mode = "sparse"
        self.sizes: list[int] = []
        self.options = {"depth": 2}
        self.register_buffer("count", torch.zeros(3))


def test_restore_puts_back_attributes_submodules_containers_and_buffers() -> None:
    model = Holder()
    inner, before = model.inner, fingerprint(model)
    snap = state.take(model)
    model.mode = "full"
    model.inner = torch.nn.Linear(2, 2)  # a swapped submodule, as BigBird swaps its attention
    model.added = 7
    model.sizes.append(3)
    model.options["depth"] = 1
    model.count += 1  # in place: the same tensor object, another value
    changes = {c.path: (c.before, c.after) for c in snap.restore()}
    assert changes["mode"] == ("'sparse'", "'full'")
    assert changes["inner"] == ("Linear", "Linear")
    assert changes["added"] == ("(absent)", "7")
    assert changes["sizes"] == ("[]", "[3]")
    assert changes["options.depth"] == ("2", "1")
    assert changes["count"] == ("as given", "changed in place")
    assert model.inner is inner and not hasattr(model, "added")
    assert same(fingerprint(model), before)
    assert snap.restore() == [], "a second restore finds nothing to do"
    assert set(snap.seen) == set(changes), "every change is remembered for the record's note"


def test_check_leaves_a_self_changing_model_as_given_and_notes_it() -> None:
    model, x = tm.ShrinksItself(), {"x": tm.features(batch=2)}
    before = fingerprint(model)
    result = engine.check(model, x, settings=Settings(dtypes=("fp32",), examples=5, serialize=False))
    assert same(fingerprint(model), before), "jitcpu.check left the model changed"
    assert model.window == 4 and model.seen == [] and int(model.calls) == 0
    for rec in result:
        assert any(n.startswith("forward() changed model attributes: window 4 -> 2") for n in rec.notes), rec.notes
        assert any("calls as given -> changed in place" in n for n in rec.notes), rec.notes
    # Each mode traced the model as given (window 4, clamped to 2 by the example): without the restore,
    # the search of trace-dict on batch 1 left window 1 behind and trace-tuple was a mismatch.
    for mode in ("trace-dict", "trace-tuple"):
        rec = result.record(mode)
        # diverges, not mismatch: it matched on the example, then the search found the width baked in
        assert rec.status == "diverges", rec
        assert rec.counterexample is not None and rec.counterexample.startswith("x=float32[1, 4]"), rec
        assert "eager rejected" not in " ".join(rec.notes)


def test_a_model_that_does_not_change_gets_no_note() -> None:
    result = engine.check(tm.TinyMLP(), {"x": tm.features()}, settings=Settings(dtypes=("fp32",), examples=3))
    assert not any("forward() changed" in n for rec in result for n in rec.notes)


SUITE = """
import json
import pytest
import torch
import tiny_models as tm
from test_helpers import fingerprint, same

UNCHANGED = {}


@pytest.fixture(scope="module", autouse=True)
def _write():
    yield
    with open("unchanged.json", "w") as f:
        json.dump(UNCHANGED, f)


def checked(request, jitcpu, model, inputs):
    before = fingerprint(model)
    try:
        jitcpu.check(model, inputs)
    finally:
        UNCHANGED[request.node.name] = same(fingerprint(model), before)


def test_bigbird(request, jitcpu):
    checked(request, jitcpu, *tm.tiny_bigbird())


def test_clvp(request, jitcpu):
    checked(request, jitcpu, *tm.tiny_clvp())


def test_toy(request, jitcpu):
    checked(request, jitcpu, tm.ShrinksItself(), {"x": tm.features()})


def test_swin(request, jitcpu):
    model, inputs = tm.tiny_swin()
    fresh, _ = tm.tiny_swin()
    with torch.no_grad():  # a plain frozen trace of the model as built, on the positional input
        traced = torch.jit.freeze(torch.jit.trace(fresh, (inputs["pixel_values"],), strict=False))
        out = traced(inputs["pixel_values"])["last_hidden_state"]  # strict=False: a dict
        plain = (out - fresh(**inputs).last_hidden_state).abs().max().item()
    UNCHANGED["swin_plain_trace_diff"] = plain
    checked(request, jitcpu, model, inputs)
"""


def test_real_models_that_change_themselves_are_checked_as_given(jitcpu_pytester: pytest.Pytester) -> None:
    """BigBird, ClvpEncoder, Swin (tiny, from configs) and the toy, through the plugin as a user runs it."""
    jitcpu_pytester.makepyfile(test_suite=SUITE, test_helpers=_helpers_source())
    run(jitcpu_pytester, "--jitcpu-dtypes=fp32", "--jitcpu-examples=4", "--jitcpu-report=out.json", "-rA", fast=False)
    unchanged = json.loads((jitcpu_pytester.path / "unchanged.json").read_text())
    for name in ("test_bigbird", "test_clvp", "test_toy", "test_swin"):
        assert unchanged[name] is True, f"{name}: jitcpu.check left the model changed"
    records = records_by_test(load_json(jitcpu_pytester.path / "out.json"))
    notes = {name: " ".join(n for r in recs for n in r["notes"]) for name, recs in records.items()}
    assert "attention_type 'block_sparse' -> 'original_full'" in notes["test_bigbird"]
    assert "cached_sequence_length None -> 10" in notes["test_clvp"]
    assert "window 4 -> 2" in notes["test_toy"]
    assert "window_size 2 -> 1" in notes["test_swin"]
    by_mode = {r["mode"]: r for r in records["test_swin"]}
    swin = by_mode["trace-tuple"]
    # As a plain frozen trace of the fresh model: it matches on the example (it used to fall back with
    # "output with shape [128, 1, 1, 1] doesn't match the broadcast shape [128, 1, 4, 4]").
    assert swin["status"] in ("pass", "diverges"), swin
    assert swin["max_abs_diff"] <= unchanged["swin_plain_trace_diff"] + 1e-6, swin
    assert "eager rejected every generated input" not in notes["test_swin"]
    bigbird = {r["mode"]: r for r in records["test_bigbird"]}
    assert bigbird["trace-tuple"]["status"] != "mismatch", bigbird["trace-tuple"]


def _helpers_source() -> str:
    import inspect

    return "import torch\n\n" + inspect.getsource(fingerprint) + "\n\n" + inspect.getsource(same)
