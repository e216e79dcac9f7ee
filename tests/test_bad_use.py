"""Failure injection for the plugin: bad markers, bad ``inputs`` and user mistakes, as a user hits them.

A bad marker argument makes only that test error at setup, naming the bad value and the choices (with
and without the fixture, with and without xdist); every other test of the session runs. A bad ``inputs``
fails the test once with a usage error naming the type and the accepted forms, without records.
One inner suite holds every case; it runs once without and once with ``-n 2``.
"""

from __future__ import annotations

import pytest
from plugin_runs import load_json, outcomes, records_by_test, run

SUITE = """
import pytest
import torch

import tiny_models as tm


def test_before(jitcpu):
    jitcpu.check(tm.TinyMLP(), {"x": tm.features()})


@pytest.mark.jitcpu(modes=["bogus"])
def test_marker_unknown_mode(jitcpu):
    jitcpu.check(tm.TinyMLP(), {"x": tm.features()})


@pytest.mark.jitcpu(mode=["eager"])
def test_marker_unknown_keyword(jitcpu):
    jitcpu.check(tm.TinyMLP(), {"x": tm.features()})


@pytest.mark.jitcpu(dtypes="bf8")
def test_marker_bad_without_fixture():
    pass


@pytest.mark.jitcpu("eager")
def test_marker_positional():
    pass


@pytest.mark.jitcpu(modes=42)
def test_marker_modes_not_a_list(jitcpu):
    pass


@pytest.mark.jitcpu(modes=[])
def test_marker_no_modes(jitcpu):
    pass


@pytest.mark.jitcpu(atol="tight")
def test_marker_bad_atol(jitcpu):
    pass


@pytest.mark.jitcpu(rtol=-1)
def test_marker_negative_rtol(jitcpu):
    pass


@pytest.mark.jitcpu(fallback="never")
def test_marker_bad_fallback(jitcpu):
    pass


@pytest.mark.jitcpu(examples=1.5)
def test_marker_fractional_examples(jitcpu):
    pass


@pytest.mark.jitcpu(examples=True)
def test_marker_bool_examples(jitcpu):
    pass


@pytest.mark.jitcpu(modes=["eager", None])
def test_marker_none_in_modes(jitcpu):
    pass


@pytest.mark.jitcpu(dtypes=["fp32"], modes="eager,trace-dict")
def test_marker_good_string_modes(jitcpu):
    result = jitcpu.check(tm.TinyMLP(), {"x": tm.features()})
    assert [r.mode for r in result] == ["eager", "trace-dict"]


@pytest.mark.jitcpu(modes=["eager"])
@pytest.mark.parametrize("n", [1, 2])
def test_marker_good_parametrized(jitcpu, n):
    jitcpu.check(tm.TinyMLP(), {"x": tm.features(seed=n)})


@pytest.mark.jitcpu(fallback="nope")
class TestBadClassMarker:
    def test_one(self):
        pass

    def test_two(self, jitcpu):
        pass


def test_inputs_list(jitcpu):
    jitcpu.check(tm.TinyMLP(), [tm.features()])


def test_inputs_set(jitcpu):
    jitcpu.check(tm.TinyMLP(), {1, 2})


def test_inputs_string(jitcpu):
    jitcpu.check(tm.TinyMLP(), "hello")


def test_inputs_none(jitcpu):
    jitcpu.check(tm.TinyMLP(), None)


def test_inputs_generator(jitcpu):
    jitcpu.check(tm.TinyMLP(), (x for x in [tm.features()]))


def test_inputs_int_keys(jitcpu):
    jitcpu.check(tm.TinyMLP(), {0: tm.features()})


def test_inputs_empty_dict(jitcpu):
    jitcpu.check(tm.TinyMLP(), {})


def test_inputs_empty_tuple(jitcpu):
    jitcpu.check(tm.TinyMLP(), ())


def test_inputs_no_tensor(jitcpu):
    jitcpu.check(tm.TinyMLP(), {"x": [[1.0, 2.0, 3.0, 4.0]]})


def test_inputs_numpy(jitcpu):
    import numpy as np

    jitcpu.check(tm.TinyMLP(), {"x": np.ones((2, 4), dtype=np.float32)})


def test_inputs_tensor_alone(jitcpu):
    result = jitcpu.check(tm.TinyMLP(), tm.features())
    assert result.ok


def test_model_class_not_instance(jitcpu):
    jitcpu.check(tm.TinyMLP, {"x": tm.features()})


def test_model_none(jitcpu):
    jitcpu.check(None, {"x": tm.features()})


def test_unknown_override(jitcpu):
    jitcpu.check(tm.TinyMLP(), {"x": tm.features()}, mode="eager")


def test_wrong_input_name(jitcpu):
    jitcpu.check(tm.TinyMLP(), {"y": tm.features()})


def test_after(jitcpu):
    jitcpu.check(tm.TinyMLP(), {"x": tm.features()})


def test_plain():
    pass
"""

MARKER_ERRORS = {
    "test_marker_unknown_mode": "unknown mode 'bogus'; choose from eager, trace-dict",
    "test_marker_unknown_keyword": "unknown keyword 'mode'; choose from modes, dtypes",
    "test_marker_bad_without_fixture": "unknown dtype 'bf8'; choose from fp32, bf16",
    "test_marker_positional": "takes keyword arguments only",
    "test_marker_modes_not_a_list": "42 is not a list of modes",
    "test_marker_no_modes": "no mode given; choose from eager",
    "test_marker_bad_atol": "'tight' is not a number",
    "test_marker_negative_rtol": "-1 must be a finite number >= 0",
    "test_marker_bad_fallback": "unknown fallback policy 'never'; choose from warn, fail, expect",
    "test_marker_fractional_examples": "1.5 is not an integer",
    "test_marker_bool_examples": "True is not an integer",
    "test_marker_none_in_modes": "unknown mode 'None'",
    "TestBadClassMarker::test_one": "unknown fallback policy 'nope'",
    "TestBadClassMarker::test_two": "unknown fallback policy 'nope'",
}

INPUT_ERRORS = {
    "test_inputs_list": "inputs: got a list; pass a dict of keyword arguments ({'input_ids': ids, ...}) or a tuple of positional",
    "test_inputs_set": "inputs: got a set; pass a dict",
    "test_inputs_string": "inputs: got a str; pass a dict",
    "test_inputs_none": "inputs: got None; pass a dict",
    "test_inputs_generator": "inputs: got a generator; pass a dict",
    "test_inputs_int_keys": "inputs: dict keys must be forward()'s parameter names (str), got 0",
    "test_inputs_empty_dict": "inputs: the dict is empty",
    "test_inputs_empty_tuple": "inputs: the tuple is empty",
    "test_inputs_no_tensor": "inputs: no tensor in the inputs (x=list)",
    "test_inputs_numpy": "inputs: no tensor in the inputs (x=ndarray); convert with torch.from_numpy",
    "test_model_class_not_instance": "model: got the class TinyMLP, not a model; pass an instance (TinyMLP(...))",
    "test_model_none": "model: expected a torch.nn.Module, got None",
    "test_unknown_override": "unknown setting 'mode'",
}

PASSING = (
    "test_before",
    "test_after",
    "test_plain",
    "test_marker_good_string_modes",
    "test_marker_good_parametrized[1]",
    "test_marker_good_parametrized[2]",
    "test_inputs_tensor_alone",
)


@pytest.mark.parametrize("workers", [(), ("-n", "2")], ids=["serial", "xdist"])
def test_bad_markers_and_inputs_fail_one_test_each(jitcpu_pytester: pytest.Pytester, workers: tuple[str, ...]) -> None:
    if workers:
        pytest.importorskip("xdist")
    jitcpu_pytester.makepyfile(test_suite=SUITE)
    result = run(jitcpu_pytester, "--jitcpu-dtypes=fp32", "--jitcpu-report=report.json", "-rA", *workers)
    got = outcomes(result)
    expected = {name: "ERROR" for name in MARKER_ERRORS}
    expected |= {name: "FAILED" for name in INPUT_ERRORS}
    expected |= {name: "PASSED" for name in PASSING}
    expected["test_wrong_input_name"] = "FAILED"  # a real eager error: error records, the test fails
    assert got == expected, {k: (got.get(k), v) for k, v in expected.items() if got.get(k) != v}
    out = result.stdout.str()
    for name, message in {**MARKER_ERRORS, **INPUT_ERRORS}.items():
        assert message in out, f"{name}: {message!r} not in the output"
    result.stdout.no_fnmatch_line("*During handling of the above exception*")
    result.stdout.no_fnmatch_line("*no tests ran*")
    records = records_by_test(load_json(jitcpu_pytester.path / "report.json"))
    # Usage errors make no records; a model that fails eager makes error records saying why.
    assert not set(records) & (set(MARKER_ERRORS) | set(INPUT_ERRORS))
    assert {r["status"] for r in records["test_wrong_input_name"]} == {"error"}
    assert "unexpected keyword argument 'y'" in records["test_wrong_input_name"][0]["reason"]
    assert {r["status"] for r in records["test_before"] + records["test_after"]} == {"pass"}


def test_marker_warning_is_safe_under_filterwarnings_error(jitcpu_pytester: pytest.Pytester) -> None:
    """A marked test that never calls check() warns; a user's ``filterwarnings = error`` turns that warning
    into that test's failure, never an INTERNALERROR."""
    jitcpu_pytester.makeini("[pytest]\nfilterwarnings = error\n")
    jitcpu_pytester.makepyfile(
        test_warn="""
        import pytest

        @pytest.mark.jitcpu
        def test_marked_without_check(jitcpu):
            pass

        def test_plain():
            pass
        """
    )
    result = run(jitcpu_pytester, "-rA")
    got = outcomes(result)
    assert got["test_plain"] == "PASSED"
    assert got["test_marked_without_check"] in ("FAILED", "ERROR")
    result.stdout.fnmatch_lines(["*marked @pytest.mark.jitcpu but jitcpu.check() was never called*"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"modes": 42}, "@pytest.mark.jitcpu(modes=...): 42 is not a list of modes"),
        ({"modes": {"eager": 1}.keys()}, "is not a list of modes"),
        ({"dtypes": 16}, "@pytest.mark.jitcpu(dtypes=...): 16 is not a list of dtypes"),
        ({"modes": ""}, "no mode given"),
        ({"modes": ["eager", "trace"]}, "unknown mode 'trace'; choose from"),
        ({"modes": "all,bogus"}, "unknown mode 'all'"),
        ({"dtypes": ["fp16"]}, "unknown dtype 'fp16'; choose from fp32, bf16"),
        ({"atol": True}, "@pytest.mark.jitcpu(atol=...): True is not a number"),
        ({"atol": "1e-3x"}, "'1e-3x' is not a number"),
        ({"atol": float("nan")}, "nan must be a finite number >= 0"),
        ({"rtol": float("inf")}, "inf must be a finite number >= 0"),
        ({"rtol": [1e-3]}, "[0.001] is not a number"),
        ({"examples": -3}, "-3 must be >= 0"),
        ({"examples": 2.5}, "2.5 is not an integer"),
        ({"examples": False}, "False is not an integer"),
        ({"examples": "many"}, "'many' is not an integer"),
        ({"fallback": "Fail"}, "unknown fallback policy 'Fail'; choose from warn, fail, expect"),
        ({"fallback": ["warn"]}, "unknown fallback policy"),
        (
            {"model": "x"},
            "got unknown keyword 'model'; choose from modes, dtypes, atol, rtol, fallback, untested, examples, generate",
        ),
        ({"serialize": False}, "got unknown keyword 'serialize'"),
        ({"untested": "skip"}, "unknown untested policy 'skip'; choose from warn, fail"),
        ({"untested": True}, "unknown untested policy 'True'"),
        ({"generate": 3}, "generate=...): expected a Hypothesis strategy of inputs, a list of inputs, or a callable"),
        ({"generate": {"input_ids": 1}}, "got dict"),
    ],
)
def test_marker_values_are_parsed_strictly(kwargs: dict, message: str) -> None:
    """The same parsing the setup hook runs, for many more values than one pytester run can hold."""
    from pytest_jitcpu import options
    from pytest_jitcpu.settings import Settings, UsageError

    with pytest.raises(UsageError) as exc:
        options.marker_settings(Settings(), pytest.mark.jitcpu(**kwargs).mark, "t.py::t")
    assert message in str(exc.value)
    assert str(exc.value).startswith("t.py::t: @pytest.mark.jitcpu")


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"modes": "trace-dict"}, {"modes": ("eager", "trace-dict")}),
        ({"modes": ("trace-tuple", "eager")}, {"modes": ("eager", "trace-tuple")}),
        ({"modes": {"trace-dict"}}, {"modes": ("eager", "trace-dict")}),
        ({"examples": 3.0}, {"examples": 3}),
        ({"examples": "0"}, {"examples": 0}),
        ({"atol": 0}, {"atol": 0.0}),
        ({"atol": None, "dtypes": "bf16"}, {"atol": None, "dtypes": ("bf16",)}),
    ],
)
def test_marker_values_that_are_fine(kwargs: dict, expected: dict) -> None:
    from pytest_jitcpu import options
    from pytest_jitcpu.settings import Settings

    settings = options.marker_settings(Settings(), pytest.mark.jitcpu(**kwargs).mark, "t.py::t")
    assert {key: getattr(settings, key) for key in expected} == expected
