"""The aoti package's shape contract, taken from an exported program (no AOTInductor compile: fast enough
for the default run; tests/aoti compile real packages): what it records, what it refuses, and how it says so."""

from __future__ import annotations

import pytest
import tiny_models as tm
import torch
from torch.export import Dim, export

from pytest_jitcpu.backends.aoti_package import ContractError, check, contract_of, describe


class Shifted(torch.nn.Module):
    """``prefix`` one longer than ``x``: a derived dim (s + 1)."""

    def forward(self, x: torch.Tensor, prefix: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        return torch.cat([prefix[:, :1], x], dim=1) * scale + prefix


class Pinned(torch.nn.Module):
    """Adds a buffer of width 4: the feature dim is static; seq has a maximum from an embedding table."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("pos", torch.zeros(16, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pos[: x.shape[1]]


def text_contract() -> dict:
    batch = tm.text_batch(2, 8)
    auto = {0: Dim.AUTO, 1: Dim.AUTO}
    exported = export(tm.TinyText(), (), batch, dynamic_shapes={k: auto for k in batch})
    return contract_of(exported, (), batch)


def named(batch: dict) -> list[tuple[str, object]]:
    return list(batch.items())


def test_shared_symbols_ranges_and_dtypes_are_recorded():
    contract = text_contract()
    ids, mask = contract["inputs"]
    assert (ids["name"], ids["dtype"], mask["name"]) == ("input_ids", "int64", "attention_mask")
    assert ids["dims"] == mask["dims"] and all(isinstance(d, str) for d in ids["dims"])
    # export's lower bound 2 (its 0/1 specialization) is recorded as 1: size 1 is searched like any other
    assert all(contract["symbols"][d] == {"min": 1, "max": None} for d in ids["dims"])
    assert describe(contract).startswith("input_ids int64[")
    check(contract, named(tm.text_batch(1, 3)))
    check(contract, named(tm.text_batch(7, 30)))


@pytest.mark.parametrize(
    ("batch", "message"),
    [
        (
            {"input_ids": tm.text_batch(2, 8)["input_ids"], "attention_mask": tm.text_batch(2, 5)["attention_mask"]},
            r"^aoti package input 'attention_mask' dim 1 is 5; the package needs it equal to 'input_ids' dim 1 \(8\) "
            r"\(AOTInductor would run it unchecked and return garbage, pytorch#151925\)$",
        ),
        (
            {
                "input_ids": tm.text_batch(2, 8)["input_ids"].float(),
                "attention_mask": tm.text_batch()["attention_mask"],
            },
            r"^aoti package input 'input_ids' is float32\[2, 8\]; the package takes int64 of rank 2$",
        ),
        ({"input_ids": tm.text_batch()["input_ids"]}, r"takes the inputs \(input_ids, attention_mask\); it was given"),
    ],
)
def test_an_input_outside_the_contract_is_refused_in_one_line(batch, message):
    with pytest.raises(ContractError, match=message):
        check(text_contract(), named(batch))


def test_static_dims_maxima_derived_dims_and_baked_constants():
    x = torch.ones(2, 3, 4)
    pinned = export(Pinned(), (x,), dynamic_shapes=({0: Dim.AUTO, 1: Dim.AUTO, 2: Dim.AUTO},))
    contract = contract_of(pinned, (x,), {})
    dims = contract["inputs"][0]["dims"]
    assert dims[2] == 4 and contract["symbols"][dims[1]]["max"] == 16
    with pytest.raises(ContractError, match=r"'args\[0\]' dim 2 is 5; the package was compiled for exactly 4"):
        check(contract, [("args[0]", torch.ones(2, 3, 5))])
    with pytest.raises(ContractError, match=r"'args\[0\]' dim 1 is 17; the package allows \[1, 16\] there"):
        check(contract, [("args[0]", torch.ones(2, 17, 4))])

    x, prefix = torch.ones(2, 5), torch.ones(2, 6)
    shifted = export(Shifted(), (x, prefix, 2.0), dynamic_shapes=({1: Dim.AUTO}, {1: Dim.AUTO}, None))
    contract = contract_of(shifted, (x, prefix, 2.0), {})
    assert contract["inputs"][2] == {"name": "args[2]", "kind": "constant", "value": 2.0}
    check(contract, [("args[0]", torch.ones(2, 9)), ("args[1]", torch.ones(2, 10)), ("args[2]", 2.0)])
    with pytest.raises(ContractError, match=r"'args\[1\]' dim 1 is 9; the package needs .*\+ 1 = 10"):
        check(contract, [("args[0]", torch.ones(2, 9)), ("args[1]", torch.ones(2, 9)), ("args[2]", 2.0)])
    with pytest.raises(ContractError, match=r"'args\[2\]' is 3.0, but 2.0 is compiled into the package"):
        check(contract, [("args[0]", torch.ones(2, 5)), ("args[1]", torch.ones(2, 6)), ("args[2]", 3.0)])
