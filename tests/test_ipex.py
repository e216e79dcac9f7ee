"""The ipex mode wherever the tests run: IPEX missing or broken is `unavailable` with the reason, never a
crash or a silent skip; the build's logic (copy, bf16 capability, error mapping) with a stand-in IPEX; the
fusion evidence read from TorchScript graphs. The real IPEX runs are in tests/ipex/ (tox env ``ipex``).
"""

from __future__ import annotations

import functools
import sys
import textwrap
import types
from pathlib import Path
from typing import Any

import pytest
import torch
from plugin_runs import load_json, run, run_inprocess
from tiny_models import TinyMLP, features

from pytest_jitcpu import engine, environment
from pytest_jitcpu.backends import ipex
from pytest_jitcpu.backends.base import Fallback, Unavailable
from pytest_jitcpu.inputs import normalize

# What IPEX does when installed against another torch: print an error, then fail with AttributeError.
BROKEN_IPEX = """
import sys
print("ERROR! Intel(R) Extension for PyTorch* needs to work with PyTorch 2.8.*, but PyTorch 9.9 is found.", file=sys.stderr)
raise AttributeError("module 'torch' has no attribute '_ipex_stand_in'")
"""

INNER_TESTS = """
import pytest

import tiny_models as tm


@pytest.mark.jitcpu(modes=["eager"], dtypes=["fp32", "bf16"])
def test_mlp(jitcpu):
    result = jitcpu.check(tm.TinyMLP(), {"x": tm.features()})
    assert result.status("ipex") == result.status("ipex", "bf16") == "unavailable"
"""


def loaded(module: Any, reason: str | None) -> Any:
    """A replacement for ``ipex.load`` that has already "imported" (as the cached original would have)."""
    load = functools.lru_cache(maxsize=1)(lambda: (module, reason))
    load()
    return load


def stand_in(optimize: Any) -> types.SimpleNamespace:
    return types.SimpleNamespace(optimize=optimize, __version__="0+stand-in")


@pytest.fixture
def broken_ipex(jitcpu_pytester: pytest.Pytester) -> pytest.Pytester:
    """A pytester folder whose ``intel_extension_for_pytorch`` fails to import as a mismatched IPEX does
    (it shadows a real IPEX, so this runs the same in every tox env)."""
    package = jitcpu_pytester.mkpydir("intel_extension_for_pytorch")
    (package / "__init__.py").write_text(BROKEN_IPEX, encoding="utf-8")
    jitcpu_pytester.makepyfile(test_inner=INNER_TESTS)
    jitcpu_pytester.makeini("[pytest]\nfilterwarnings = error\n")
    return jitcpu_pytester


def test_broken_ipex_is_unavailable_with_the_reason_said_once(broken_ipex: pytest.Pytester) -> None:
    result = run(broken_ipex, "-rA", "--jitcpu-ipex", "--jitcpu-report=out/r.json")
    result.assert_outcomes(passed=1)
    header = [line for line in result.outlines if line.startswith("jitcpu: ipex")]
    assert header == [
        f"jitcpu: ipex not usable: intel-extension-for-pytorch failed to import with torch {torch.__version__}: "
        "AttributeError: module 'torch' has no attribute '_ipex_stand_in'"
    ]
    report = load_json(broken_ipex.path / "out" / "r.json")
    ipex_records = [r for r in report["results"] if r["mode"] == "ipex"]
    assert sorted((r["dtype"], r["status"]) for r in ipex_records) == [("bf16", "unavailable"), ("fp32", "unavailable")]
    assert all("_ipex_stand_in" in r["reason"] for r in ipex_records)
    assert report["summary"]["unavailable"] == 2 and report["summary"]["error"] == 0
    assert report["environment"]["ipex"] is None


def test_ipex_required_makes_an_unusable_ipex_a_usage_error(
    jitcpu_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # In-process (no model runs), so the stand-in reason reaches the plugin wherever IPEX is installed.
    monkeypatch.setattr(ipex, "load", loaded(None, "stand-in: IPEX import failed"))
    jitcpu_pytester.makepyfile(test_inner=INNER_TESTS)
    jitcpu_pytester.makeini("[pytest]\njitcpu_ipex_required = true\n")
    result = run_inprocess(jitcpu_pytester, "--jitcpu-ipex")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "--jitcpu-ipex: IPEX is required (ini jitcpu_ipex_required) but stand-in: IPEX import failed" in str(
        result.stderr
    )
    result = run_inprocess(jitcpu_pytester, "--collect-only")  # without --jitcpu-ipex the ini key is moot
    assert result.ret == pytest.ExitCode.OK


@pytest.fixture
def fresh_load(monkeypatch: pytest.MonkeyPatch) -> Any:
    """ipex.load() uncached, with the real IPEX (if any) out of sys.modules, restored afterwards."""

    def ipex_modules() -> list[str]:
        return [m for m in sys.modules if m.split(".")[0] == "intel_extension_for_pytorch"]

    for name in ipex_modules():
        monkeypatch.delitem(sys.modules, name)
    ipex.load.cache_clear()
    yield ipex.load
    for name in ipex_modules():  # the stand-in; monkeypatch then puts a real IPEX back
        del sys.modules[name]
    ipex.load.cache_clear()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("raise SystemExit(1)", "failed to import with torch"),
        (
            "import psutil_not_here_at_all",
            "failed to import: ModuleNotFoundError: No module named 'psutil_not_here_at_all'",
        ),
        ("import warnings\nwarnings.warn('kernel overridden')\n__version__ = '0+stand-in'", None),
    ],
    ids=["calls-exit", "missing-dependency", "warns-on-import"],
)
def test_load_turns_import_failures_into_reasons(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_load: Any, body: str, expected: str | None
) -> None:
    package = tmp_path / "intel_extension_for_pytorch"
    package.mkdir()
    (package / "__init__.py").write_text(textwrap.dedent(body), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    module, reason = fresh_load()
    if expected is None:  # a warning during import (an error under filterwarnings=error) is not a failure
        assert reason is None and module.__version__ == "0+stand-in"
    else:
        assert module is None and expected in reason


# --- the build, with a stand-in for IPEX ---------------------------------------------------------------------


def test_ipex_missing_or_broken_makes_unavailable_records_not_errors() -> None:
    module, reason = ipex.load()
    if module is not None:
        pytest.skip("IPEX is usable here; tests/ipex checks the real thing")
    result = engine.check(TinyMLP(), {"x": features()}, modes=["eager", "ipex"], dtypes=["fp32", "bf16"])
    assert result.statuses == {
        ("eager", "fp32"): "pass",
        ("ipex", "fp32"): "unavailable",
        ("eager", "bf16"): "pass",
        ("ipex", "bf16"): "unavailable",
    }
    assert result.record("ipex").reason == reason and result.ok


def test_optimize_works_on_a_copy_and_the_optimized_copy_is_what_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[torch.nn.Module] = []

    def optimize(model: torch.nn.Module, **kwargs: Any) -> torch.nn.Module:
        assert kwargs == {"dtype": torch.float32, "level": "O1", "conv_bn_folding": False, "inplace": True}
        seen.append(model)
        with torch.no_grad():
            model.lin.weight.mul_(2.0)  # what a real optimize does to its argument: change it in place
        model.optimized_by_ipex = True
        return model

    monkeypatch.setattr(ipex, "load", loaded(stand_in(optimize), None))
    model = TinyMLP()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = engine.check(model, {"x": features()}, modes=["eager", "ipex"], dtypes=["fp32"], settings=None)
    rec = result.record("ipex")
    # The doubled weights ran: a mismatch proves the optimized copy, not the user's model, was traced.
    assert rec.status == "mismatch" and rec.frozen is True
    assert rec.fused_ops == []  # a plain linear+tanh has no IPEX kernels in its optimized graph
    assert len(seen) == 1 and seen[0] is not model and not seen[0].training and model.training
    assert not hasattr(model, "optimized_by_ipex")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_bf16_where_the_cpu_cannot_prepack_is_unavailable_before_ipex_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    def optimize(model: torch.nn.Module, **kwargs: Any) -> torch.nn.Module:
        raise AssertionError("optimize must not run on a CPU that cannot do IPEX bf16")

    monkeypatch.setattr(ipex, "load", loaded(stand_in(optimize), None))
    monkeypatch.setattr(environment, "bf16_weight_prepack", lambda: False)
    with pytest.raises(Unavailable, match=r"BF16 weight prepack needs avx_ne_convert, or avx512bw \+ avx512vl"):
        ipex.build(TinyMLP(), normalize({"x": features()}), "bf16")


def test_bf16_prepack_error_from_ipex_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CPU flags said yes but IPEX says no (a VM hiding flags): still `unavailable`, with IPEX's words."""

    def optimize(model: torch.nn.Module, **kwargs: Any) -> torch.nn.Module:
        raise AssertionError(
            "BF16 weight prepack needs the cpu support avx_ne_convert or avx512bw, avx512vl and avx512dq, "
            "but the desired instruction sets are not available."
        )

    monkeypatch.setattr(ipex, "load", loaded(stand_in(optimize), None))
    monkeypatch.setattr(environment, "bf16_weight_prepack", lambda: True)
    with pytest.raises(
        Unavailable, match="IPEX bf16 is not supported on this CPU: AssertionError: BF16 weight prepack"
    ):
        ipex.build(TinyMLP(), normalize({"x": features()}), "bf16")


def test_other_optimize_failures_are_fallbacks(monkeypatch: pytest.MonkeyPatch) -> None:
    def optimize(model: torch.nn.Module, **kwargs: Any) -> torch.nn.Module:
        raise RuntimeError("unsupported module type\nsecond line")

    monkeypatch.setattr(ipex, "load", loaded(stand_in(optimize), None))
    with pytest.raises(Fallback, match=r"^ipex.optimize failed: RuntimeError: unsupported module type second line$"):
        ipex.build(TinyMLP(), normalize({"x": features()}), "fp32")


def test_bf16_reason_names_the_cpu_and_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(environment, "bf16_weight_prepack", lambda: False)
    reason = ipex.bf16_unavailable_reason()
    assert reason is not None
    assert environment.cpu_name() in reason and "avx_ne_convert" in reason
    monkeypatch.setattr(environment, "bf16_weight_prepack", lambda: True)
    assert ipex.bf16_unavailable_reason() is None


# --- fusion evidence -------------------------------------------------------------------------------------------

# The shape of a frozen, IPEX-optimized BERT layer's graph as seen on this project's CI machine.
IPEX_GRAPH = """
graph(%x : Tensor, %w : Tensor):
  %a : Tensor = ipex::add_layernorm(%x, %w)
  %b : Tensor = ipex_prepack::mkl_sgemm_run(%a, %w)
  %sizes : int[] = prim::Constant[value=[2, 2, 2]]()
  %dim : int = prim::Constant[value=-1]()
  %qkv : Tensor[] = aten::split_with_sizes(%b, %sizes, %dim)
  %s : Tensor = ipex::mha_scores_calc_v2(%a, %w)
  %o : Tensor = ipex::matmul_outtrans(%s, %w)
  %g : Tensor = ipex_prepack::linear_gelu_run(%o, %w)
  %h : Tensor = ipex_prepack::linear_add_run(%g, %w)
  %c : bool = prim::Constant[value=1]()
  %r : Tensor = prim::If(%c)
    block0():
      %y : Tensor = ipex::add_layernorm(%h, %w)
      -> (%y)
    block1():
      %z : Tensor = aten::relu(%h)
      -> (%z)
  return (%r)
"""


def test_fused_ops_lists_ipex_kernels_with_the_guides_fusion_names() -> None:
    ops = ipex.fused_ops(torch._C.parse_ir(IPEX_GRAPH))
    assert ops == [
        "ipex::add_layernorm (add+layernorm)",
        "ipex::matmul_outtrans (matmul+transpose)",
        "ipex::mha_scores_calc_v2 (MHA)",
        "ipex_prepack::linear_add_run (linear+add)",
        "ipex_prepack::linear_gelu_run (linear+gelu)",
        "ipex_prepack::mkl_sgemm_run",
        "ipex_prepack::mkl_sgemm_run+aten::split_with_sizes (concat linear)",
    ]
    assert ipex.guide_fusions(ops) == [
        "MHA",
        "concat linear",
        "linear+add",
        "linear+gelu",
        "add+layernorm",
        "matmul+transpose",
    ]


def test_a_plain_graph_has_no_fused_ops() -> None:
    graph = torch._C.parse_ir(
        "graph(%x : Tensor):\n  %y : Tensor = aten::relu(%x)\n  %z : Tensor = aten::add(%y, %x, %y)\n  return (%z)\n"
    )
    assert ipex.fused_ops(graph) == []
    assert ipex.guide_fusions(None) == []


@pytest.mark.parametrize(
    ("kind", "label"),
    [
        ("ipex::distil_mha_scores_calc", "MHA"),
        ("ipex::transfree_vit_mha", "MHA"),
        ("ipex_prepack::linear_add_relu_run", "linear+add+relu"),
        ("ipex_prepack::convolution_relu_run", "conv+relu"),
        ("ipex_prepack::linear_run", None),
        ("ipex::matmul_div", "matmul+div"),
        ("aten::linear", None),
    ],
)
def test_guide_fusion_names(kind: str, label: str | None) -> None:
    assert ipex.guide_fusion(kind) == label


def test_ipex_graph_rewrites_are_on_only_inside_the_ipex_mode() -> None:
    class Core:
        def __init__(self) -> None:
            self.on = True  # as IPEX's import leaves it

        def get_jit_opt(self) -> bool:
            return self.on

        def enable_jit_opt(self) -> None:
            self.on = True

        def disable_jit_opt(self) -> None:
            self.on = False

    module = types.SimpleNamespace(_C=Core())
    assert ipex._set_jit_opt(module, False) is True and module._C.on is False
    with ipex.jit_opt(module):
        assert module._C.on is True
    assert module._C.on is False
    with ipex.jit_opt(types.SimpleNamespace()):  # an IPEX without the switch: nothing to do
        pass
