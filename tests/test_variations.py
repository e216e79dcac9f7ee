"""Structure-keeping variations of the example (issue 9): rows, padding and values changed without
breaking the coupling of multimodal inputs, tried before free generation, judged by eager."""

from __future__ import annotations

from typing import Any

import pytest
import tiny_models as tm
import torch

from pytest_jitcpu import engine
from pytest_jitcpu.inputs import normalize
from pytest_jitcpu.record import CheckResult
from pytest_jitcpu.search import variations
from pytest_jitcpu.settings import Settings

SETTINGS = Settings(modes=("eager", "trace-dict", "trace-tuple"), dtypes=("fp32",), examples=10, serialize=False)


def check(model: torch.nn.Module, inputs: Any, **changes: Any) -> CheckResult:
    return engine.check(model.eval(), inputs, settings=SETTINGS.updated(**changes) if changes else SETTINGS)


def by_kind(batch: dict[str, Any]) -> dict[str, list[variations.Variation]]:
    found: dict[str, list[variations.Variation]] = {}
    for v in variations.variations(normalize(batch)):
        found.setdefault(v.kind, []).append(v)
    return found


def test_rows_are_taken_from_every_tensor_of_the_batch_the_same_way() -> None:
    batch = tm.coupled_batch(batch=3)
    found = by_kind(batch)
    assert list(found) == ["batch-1", "more-rows", "permuted-rows", "padding", "values"]
    one = found["batch-1"][0].inputs.kwargs
    assert {k: tuple(v.shape) for k, v in one.items()} == {
        "input_ids": (1, 8),
        "pixel_values": (1, 3, 4),
        "attention_mask": (1, 8),
    }
    assert all(torch.equal(one[k][0], batch[k][0]) for k in batch)
    permuted = found["permuted-rows"][0].inputs.kwargs
    assert all(torch.equal(permuted[k], batch[k].flip(0)) for k in batch)
    sizes = [v.inputs.kwargs["input_ids"].shape[0] for v in found["more-rows"]]
    assert sizes == [4, 6]  # one more row, then the example twice
    twice = found["more-rows"][1].inputs.kwargs
    assert all(torch.equal(twice[k], torch.cat([batch[k], batch[k]])) for k in batch)


def test_a_batch_of_one_gets_more_rows() -> None:
    found = by_kind(tm.coupled_batch(batch=1))
    assert "batch-1" not in found and "permuted-rows" not in found
    assert [v.inputs.kwargs["pixel_values"].shape[0] for v in found["more-rows"]] == [2]


def test_a_tensor_of_k_entries_per_row_is_indexed_in_groups() -> None:
    """Qwen2-VL's flattened pixel_values: 4 patches per image, one image per row, image_grid_thw per row."""
    ids = torch.arange(12).reshape(2, 6)
    patches = torch.arange(8 * 3, dtype=torch.float32).reshape(8, 3)
    grid = torch.tensor([[1, 2, 2], [1, 2, 2]])
    batch = normalize({"input_ids": ids, "pixel_values": patches, "image_grid_thw": grid})
    first = variations.variations(batch)[0]
    assert first.kind == "batch-1" and "rows [0]" in first.detail
    assert torch.equal(first.inputs.kwargs["pixel_values"], patches[:4])  # image 0's 4 patches
    assert torch.equal(first.inputs.kwargs["image_grid_thw"], grid[:1])
    second = variations.variations(batch)[1]  # in case dim 0 = 8 was a coincidence: left as it was
    assert second.kind == "batch-1" and torch.equal(second.inputs.kwargs["pixel_values"], patches)
    reversed_rows = next(v for v in variations.variations(batch) if v.kind == "permuted-rows")
    assert torch.equal(reversed_rows.inputs.kwargs["pixel_values"], torch.cat([patches[4:], patches[:4]]))


def test_padding_grows_on_the_padded_side_and_can_be_removed() -> None:
    mask = torch.tensor([[0, 1, 1, 1], [0, 0, 1, 1]])  # left padded
    batch = {"input_ids": torch.tensor([[3, 4, 5, 6], [3, 4, 5, 6]]), "attention_mask": mask}
    more, unpadded = by_kind(batch)["padding"]
    assert more.inputs.kwargs["attention_mask"].tolist() == [[0, 0, 1, 1], [0, 0, 0, 1]]
    assert unpadded.inputs.kwargs["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 1]]
    one = {"input_ids": torch.tensor([[3, 4]]), "attention_mask": torch.tensor([[1, 0]])}
    (kept,) = by_kind(one)["padding"][:1]  # a row keeps at least one attended position
    assert kept.inputs.kwargs["attention_mask"].tolist() == [[1, 0]]


def test_new_values_keep_the_image_tokens_of_every_row() -> None:
    batch = tm.coupled_batch()
    (values,) = by_kind(batch)["values"]
    ids = values.inputs.kwargs["input_ids"]
    assert not torch.equal(ids, batch["input_ids"])
    assert torch.equal(ids.sort(dim=1).values, batch["input_ids"].sort(dim=1).values)  # same ids per row
    assert not torch.equal(values.inputs.kwargs["pixel_values"], batch["pixel_values"])
    assert torch.equal(values.inputs.kwargs["attention_mask"], batch["attention_mask"])  # masks keep values


def test_values_vary_one_tensor_at_a_time_where_eager_rejects_them_all_at_once() -> None:
    batch = normalize(tm.coupled_batch())
    # An eager that rejects new ids: the pixel values still get new values alone.
    ids = batch.kwargs["input_ids"]
    found = variations.variations(batch, accepts=lambda x: torch.equal(x.kwargs["input_ids"], ids))
    values = [v for v in found if v.kind == "values"]
    assert [v.detail for v in values] == [
        "new values of input_ids, pixel_values",
        "new values of input_ids",
        "new values of pixel_values",
    ]


def test_the_batch_size_a_trace_baked_in_diverges_on_coupled_inputs() -> None:
    result = check(tm.CoupledImageText(bake_batch=True), tm.coupled_batch())
    for mode in ("trace-dict", "trace-tuple"):
        rec = result.record(mode)
        assert rec.status == "diverges", result.table()
        assert rec.generalization["diverged_on"] == "batch-1", rec.generalization
        assert "variation of the example (batch-1: rows [0] of the example)" in rec.reason
        assert rec.counterexample.startswith("input_ids=int64[1, 8]"), rec.counterexample


def test_a_coupled_model_that_generalizes_is_tested_on_its_variations() -> None:
    result = check(tm.CoupledImageText(), tm.coupled_batch())
    rec = result.record("trace-dict")
    assert rec.status == "pass" and not rec.untested, result.table()
    g = rec.generalization
    assert g["verdict"] == "tested" and g["why_none"] is None
    assert g["kinds"][:3] == ["batch-1", "more-rows", "permuted-rows"], g
    assert g["matched"] == rec.examples >= 6
    assert g["tried"] == g["matched"] + g["rejected_by_eager"]
    assert g["rejected_by_eager"] >= 1  # free generation breaks the coupling: eager rejects those


def test_without_the_variations_coupled_inputs_leave_the_trap_untested(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the variations add: free generation alone cannot keep the coupling, so the baked batch size
    passes untested (the 36 false passes of issue 9), and says why."""
    monkeypatch.setattr(variations, "variations", lambda batch, accepts=None: [])
    result = check(tm.CoupledImageText(bake_batch=True), tm.coupled_batch(), modes=("eager", "trace-dict"))
    rec = result.record("trace-dict")
    assert rec.status == "pass" and rec.untested, result.table()
    assert rec.generalization["matched"] == 0 and rec.generalization["rejected_by_eager"] >= 10
    assert rec.untested_reason.startswith("eager rejected every input tried"), rec.untested_reason
    assert result.untested == [rec]


def test_a_pass_with_no_other_valid_input_is_untested_and_says_why() -> None:
    x = tm.features(batch=2)
    result = check(tm.OnlyTheExample(x), (x,))
    for mode in ("trace-dict", "trace-tuple"):
        rec = result.record(mode)
        assert rec.status == "pass" and rec.untested, result.table()
        g = rec.generalization
        assert (g["verdict"], g["matched"], g["kinds"]) == ("untested", 0, [])
        assert g["rejected_by_eager"] == g["tried"] >= 4
        assert "eager rejected every input tried" in g["why_none"] and "variations of the example" in g["why_none"]
        assert rec.examples == 0
    assert "pass?" in result.table() and "untested: eager rejected" in result.table()
    assert not result.record("eager").untested and result.record("eager").generalization is None


def test_tiny_llava_bakes_its_batch_size() -> None:
    """A real coupled model: LLaVA's image tokens must match its image features. Free generation can
    build no valid input; the batch-1 variation shows that the trace only runs batch 2."""
    model, inputs = tm.tiny_llava()
    result = check(model, inputs, modes=("eager", "trace-dict"))
    rec = result.record("trace-dict")
    assert rec.status == "diverges", result.table()
    assert rec.generalization["diverged_on"] == "batch-1"
    assert "traced module failed on a variation of the example (batch-1" in rec.reason


def test_variations_are_shared_by_the_modes_of_a_check(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[int] = []
    real = variations.variations

    def counting(batch: Any, accepts: Any = None) -> list[variations.Variation]:
        made.append(1)
        return real(batch, accepts)

    monkeypatch.setattr(variations, "variations", counting)
    check(tm.CoupledImageText(), tm.coupled_batch(), dtypes=("fp32", "bf16"))
    assert len(made) == 1


def test_tiny_qwen2_vl_bakes_its_batch_size_in_its_flattened_patches() -> None:
    """Qwen2-VL flattens every image's patches into dim 0 of pixel_values: the batch-1 variation takes
    row 0's 4 patches with row 0's ids and grid, which eager accepts and the batch-2 trace does not."""
    model, inputs = tm.tiny_qwen2_vl()
    result = check(model, inputs, modes=("eager", "trace-dict"))
    rec = result.record("trace-dict")
    assert rec.status == "diverges", result.table()
    assert rec.generalization["diverged_on"] == "batch-1"
    assert "pixel_values=float32[4, 12]" in rec.counterexample, rec.counterexample
