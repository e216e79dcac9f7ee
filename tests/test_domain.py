"""One input domain per check (issue 17), as users hit it: real test files run by pytester.

The builds declare the domain's dims dynamic and the search stays inside it, so a verdict means the same
on every backend; a shape divergence names its axis and the dynamic= that narrows it; a declared narrow
domain makes it pass; a pass that met no other shape is untested; a built module that kills the process
on an input eager accepts diverges there; a bad dynamic= is a one-line error.
"""

from __future__ import annotations

import pytest
import torch
from plugin_runs import load_json, records_by_test, schema_errors

from pytest_jitcpu import engine
from pytest_jitcpu.inputs import normalize
from pytest_jitcpu.search import domain
from pytest_jitcpu.settings import Settings, UsageError

SEARCH = ("--jitcpu-examples=6", "--jitcpu-serialize=false", "--jitcpu-dtypes=fp32", "-rA")

SUITE = """
import ctypes

import pytest
import torch


class MLP(torch.nn.Module):
    \"\"\"Three layers on a float [batch, seq, features] input: correct under every mode.\"\"\"

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b, self.c = torch.nn.Linear(16, 32), torch.nn.Linear(32, 32), torch.nn.Linear(32, 4)

    def forward(self, x):
        return self.c(torch.relu(self.b(torch.relu(self.a(x)))))


class Conv(torch.nn.Module):
    \"\"\"A small conv net that takes images of any size (like ConvNext).\"\"\"

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, pixel_values):
        return torch.relu(self.conv(pixel_values)).mean(dim=(2, 3))


class Windows(torch.nn.Module):
    \"\"\"Cuts the image into 4x4 windows by its size read as Python ints (like Swin): a trace keeps the
    example's window count, so another image size gives another output shape.\"\"\"

    def forward(self, pixel_values):
        c, h, w = (int(s) for s in pixel_values.shape[1:])
        cropped = pixel_values[:, :, : h // 4 * 4, : w // 4 * 4]  # whole windows only: any size is taken
        windows = cropped.reshape(-1, c, h // 4, 4, w // 4, 4)
        return windows.mean(dim=(3, 5)).flatten(1)


@torch.library.custom_op("jitcpu_domain_test::crashy", mutates_args=())
def crashy(x: torch.Tensor) -> torch.Tensor:
    if x.shape[0] != 2:
        ctypes.string_at(0)  # a null pointer: the process dies
    return x.clone()


class CrashesWhenTraced(torch.nn.Module):
    \"\"\"Its trace calls an op that kills the process on any batch but the example's; eager never does.\"\"\"

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(4, 4)

    def forward(self, x):
        if torch.jit.is_tracing():
            x = crashy(x)
        return self.lin(x)


class Coupled(torch.nn.Module):
    \"\"\"Accepts only inputs shaped like the example (a multimodal model's coupled inputs).\"\"\"

    def forward(self, x):
        if tuple(x.shape) != (2, 5, 3):
            raise ValueError("tokens and patches do not match")
        return x * 2


@pytest.mark.jitcpu(modes=["eager", "trace-dict", "export", "onnx", "openvino"])
def test_mlp_on_a_sequence(jitcpu):
    jitcpu.check(MLP().eval(), {"x": torch.randn(2, 8, 16)})


@pytest.mark.jitcpu(modes=["eager", "trace-dict", "onnx"])
def test_conv_on_images(jitcpu):
    jitcpu.check(Conv().eval(), {"pixel_values": torch.randn(2, 3, 16, 16)})


@pytest.mark.jitcpu(modes=["eager", "trace-dict"])
def test_windows_by_default(jitcpu):
    jitcpu.check(Windows().eval(), {"pixel_values": torch.randn(2, 3, 8, 8)})


@pytest.mark.jitcpu(modes=["eager", "trace-dict"], dynamic={"pixel_values": {0: "batch"}})
def test_windows_one_image_size(jitcpu):
    jitcpu.check(Windows().eval(), {"pixel_values": torch.randn(2, 3, 8, 8)})


@pytest.mark.jitcpu(modes=["eager", "trace-dict"])
def test_crash_on_another_batch(jitcpu):
    jitcpu.check(CrashesWhenTraced().eval(), {"x": torch.randn(2, 4)})


@pytest.mark.jitcpu(modes=["eager", "trace-dict"], untested="fail")
def test_same_shapes_only(jitcpu):
    jitcpu.check(Coupled().eval(), {"x": torch.randn(2, 5, 3)})


@pytest.mark.jitcpu(modes=["eager", "trace-dict"], untested="fail", dynamic=False)
def test_declared_static(jitcpu):
    jitcpu.check(Coupled().eval(), {"x": torch.randn(2, 5, 3)})


def test_bad_dynamic(jitcpu):
    jitcpu.check(MLP().eval(), {"x": torch.randn(2, 8, 16)}, dynamic={"pixel_values": {0: "batch"}})
"""


@pytest.fixture(scope="module")
def domain_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], dict, str]:
    """The suite, run once as a user runs it (isolated checks, the default)."""
    pytester_path = tmp_path_factory.mktemp("domain")
    (pytester_path / "test_suite.py").write_text(SUITE, encoding="utf-8")
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *SEARCH, "--jitcpu-report=out/r.json"],
        cwd=pytester_path,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert "INTERNALERROR" not in out.stdout + out.stderr, out.stdout[-3000:]
    data = load_json(pytester_path / "out" / "r.json")
    assert schema_errors(data) == []
    found: dict[str, str] = {}
    for line in out.stdout.splitlines():
        for word in ("PASSED", "FAILED", "ERROR"):
            if line.startswith(f"{word} test_suite.py::"):
                found[line.split("::", 1)[1].split(" ")[0]] = word
    return found, records_by_test(data), out.stdout


def _record(by_test: dict, test: str, mode: str) -> dict:
    return next(r for r in by_test[test] if r["mode"] == mode)


def test_a_sequence_and_images_pass_in_every_backend(domain_run) -> None:
    found, by_test, out = domain_run
    assert found["test_mlp_on_a_sequence"] == "PASSED", out[-4000:]
    assert found["test_conv_on_images"] == "PASSED", out[-4000:]
    mlp = _record(by_test, "test_mlp_on_a_sequence", "onnx")
    assert mlp["domain"]["inputs"] == {"x": {"0": "batch", "1": "seq"}}
    assert mlp["domain"]["ranges"]["seq"][1] > 8
    assert "onnx: dynamic batch, seq" in mlp["notes"]
    assert 8 not in mlp["generalization"]["held"]["seq"] and mlp["generalization"]["held"]["seq"]  # other lengths ran
    conv = _record(by_test, "test_conv_on_images", "onnx")
    assert conv["domain"]["inputs"] == {"pixel_values": {"0": "batch", "2": "height", "3": "width"}}
    assert "onnx: dynamic batch, height, width" in conv["notes"]
    assert set(conv["generalization"]["held"]) >= {"height", "width"}


def test_a_shape_divergence_names_its_axis_and_a_narrow_domain_passes(domain_run) -> None:
    found, by_test, out = domain_run
    assert found["test_windows_by_default"] == "FAILED"
    rec = _record(by_test, "test_windows_by_default", "trace-dict")
    assert rec["status"] == "diverges"
    assert rec["reason"].startswith("diverges on image "), rec["reason"]
    assert "batch holds" in rec["reason"]
    assert "torch.cond" not in rec["reason"]  # a shape, not a branch on a value
    assert rec["reason"].endswith("narrow the input domain: dynamic={'pixel_values': {0: 'batch'}}"), rec["reason"]
    assert rec["replay"] and rec["counterexample"]
    assert found["test_windows_one_image_size"] == "PASSED", out[-4000:]
    narrow = _record(by_test, "test_windows_one_image_size", "trace-dict")
    assert narrow["status"] == "pass" and narrow["generalization"]["verdict"] == "tested"
    assert narrow["domain"] == {
        "inputs": {"pixel_values": {"0": "batch"}},
        "ranges": {"batch": [1, 4]},
        "fixed": {},
        "declared": True,
    }


def test_a_crash_on_an_input_eager_accepts_diverges_there(domain_run) -> None:
    found, by_test, _ = domain_run
    assert found["test_crash_on_another_batch"] == "FAILED"
    rec = _record(by_test, "test_crash_on_another_batch", "trace-dict")
    assert rec["status"] == "diverges", rec
    assert rec["reason"].startswith("traced module crashed the process (signal 11 (SIGSEGV)) on "), rec["reason"]
    assert "that eager accepts" in rec["reason"]
    assert rec["counterexample"].startswith("x=float32[") and not rec["counterexample"].startswith("x=float32[2,")
    assert "isolate=True" in rec["replay"] and "counterexample = " in rec["replay"]
    assert _record(by_test, "test_crash_on_another_batch", "eager")["status"] == "pass"


def test_a_pass_on_the_examples_shapes_only_is_untested(domain_run) -> None:
    found, by_test, out = domain_run
    assert found["test_same_shapes_only"] == "FAILED"  # untested="fail"
    rec = _record(by_test, "test_same_shapes_only", "trace-dict")
    assert rec["status"] == "pass" and rec["generalization"]["verdict"] == "untested"
    assert rec["generalization"]["matched"] >= 1  # values and permuted rows matched: same shapes only
    assert rec["generalization"]["why_none"].startswith("same shapes only"), rec["generalization"]
    # Declared static: values are all the domain has, and they were tested.
    assert found["test_declared_static"] == "PASSED", out[-4000:]
    static = _record(by_test, "test_declared_static", "trace-dict")
    assert static["generalization"]["verdict"] == "tested"


def test_a_dynamic_naming_no_input_is_one_clear_line(domain_run) -> None:
    found, _, out = domain_run
    assert found["test_bad_dynamic"] == "FAILED"
    assert "jitcpu.check: dynamic: no input 'pixel_values'; the inputs are x" in out
    assert "Traceback" not in out


class Echo(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2


@pytest.mark.parametrize(
    ("dynamic", "message"),
    [
        ("batch", "dynamic: expected a dict {input name: {dim: name}}"),
        ({"x": [0]}, "dynamic: 'x': expected {dim: name} such as {0: 'batch'}, got list"),
        ({"x": {"0": "batch"}}, "dynamic: 'x': dim '0' is not an integer"),
        ({"x": {0: ""}}, "dynamic: 'x': dim 0 needs a name such as 'batch'"),
        ({"x": {5: "batch"}}, "dynamic: x has 3 dims; dim 5 does not exist"),
        ({"x": {1: "n", 2: "n"}}, "dynamic: 'n' names dims of sizes 8 and 16 (x dim 2)"),
    ],
)
def test_bad_dynamic_values_are_usage_errors(dynamic, message) -> None:
    with pytest.raises(UsageError) as caught:
        engine.check(
            Echo(),
            {"x": torch.zeros(2, 8, 16)},
            settings=Settings(dtypes=("fp32",)).updated(dynamic=dynamic),
        )
    assert str(caught.value).startswith(message), caught.value


def test_default_roles() -> None:
    inputs = normalize(
        {
            "input_ids": torch.zeros(2, 7, dtype=torch.long),
            "attention_mask": torch.ones(2, 7, dtype=torch.long),
            "bbox": torch.zeros(2, 7, 4, dtype=torch.long),
            "pixel_values": torch.zeros(2, 3, 16, 16),
            "features": torch.zeros(2, 5),
        }
    )
    found = domain.by_roles(inputs)
    assert found.dynamic_dims() == {
        "input_ids": {0: "batch", 1: "seq"},
        "attention_mask": {0: "batch", 1: "seq"},
        "bbox": {0: "batch", 1: "seq"},  # its 4 coordinates stay fixed
        "pixel_values": {0: "batch", 2: "height", 3: "width"},  # channels fixed
        "features": {0: "batch"},  # [batch, features]
    }
    audio = domain.by_roles(normalize({"input_values": torch.zeros(2, 400)}))
    assert audio.dynamic_dims() == {"input_values": {0: "batch", 1: "time"}}
    video = domain.by_roles(normalize({"pixel_values_videos": torch.zeros(1, 4, 3, 8, 8)}))
    assert video.dynamic_dims() == {"pixel_values_videos": {0: "batch", 3: "height", 4: "width"}}  # frames fixed


def test_a_scripted_model_is_checked_not_a_traceback() -> None:
    with pytest.warns(DeprecationWarning, match="torch.jit.script"):  # torch 2.13 deprecates it; users still have them
        model = torch.jit.script(torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU()).eval())
    result = engine.check(
        model,
        (torch.randn(2, 4),),
        settings=Settings(modes=("eager", "trace-tuple", "export"), dtypes=("fp32",), serialize=False),
    )
    assert result.status("eager") == "pass" and result.status("trace-tuple") == "pass"
    assert result.status("export") == "fallback" and "ScriptModule" in result.record("export").reason
