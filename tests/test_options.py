"""Options, ini keys, environment variables and markers: parsing, precedence, usage errors, help texts.

Precedence: marker > command line > environment > ini > default. One subprocess run shows every layer
at once; the usage errors, ``--help`` and ``--markers`` run in-process (no model is checked there).
"""

from __future__ import annotations

import importlib.util

import pytest
from plugin_runs import load_json, outcomes, records_by_test, run, run_inprocess, statuses

from pytest_jitcpu import options
from pytest_jitcpu.settings import (
    DEFAULT_EXAMPLES,
    DEFAULT_MODES,
    MODES,
    QUANTIZED_MODES,
    Settings,
    UsageError,
    parse_dtypes,
    parse_examples,
    parse_fallback,
    parse_modes,
    parse_tolerance,
)

# --- parsing --------------------------------------------------------------------------------------------


def test_parse_modes_keeps_canonical_order_adds_eager_and_drops_repeats() -> None:
    assert parse_modes("trace-tuple,trace-dict") == ("eager", "trace-dict", "trace-tuple")
    assert parse_modes("trace-dict trace-dict") == ("eager", "trace-dict")
    assert parse_modes(["trace-tuple", "eager"]) == ("eager", "trace-tuple")
    assert parse_modes("all") == tuple(m for m in MODES if m not in QUANTIZED_MODES)  # int8: named only


def test_parse_dtypes_and_fallback() -> None:
    assert parse_dtypes("bf16, fp32") == ("fp32", "bf16")
    assert parse_dtypes(("bf16",)) == ("bf16",)
    assert parse_fallback(" expect ") == "expect"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: parse_dtypes("bf8", "--jitcpu-dtypes"),
            "--jitcpu-dtypes: unknown dtype 'bf8'; choose from fp32, bf16",
        ),
        (
            lambda: parse_modes("eager,trace", "JITCPU_MODES"),
            "JITCPU_MODES: unknown mode 'trace'; choose from " + ", ".join(MODES),
        ),
        (lambda: parse_modes(",", "modes"), "modes: no mode given; choose from " + ", ".join(MODES)),
        (lambda: parse_fallback("ignore", "f"), "f: unknown fallback policy 'ignore'; choose from warn, fail, expect"),
        (
            lambda: parse_tolerance("tiny", "atol"),
            "atol: 'tiny' is not a number; give a non-negative float such as 1e-5",
        ),
        (lambda: parse_tolerance("-1", "rtol"), "rtol: '-1' must be a finite number >= 0"),
        (lambda: parse_tolerance("nan", "rtol"), "rtol: 'nan' must be a finite number >= 0"),
        (lambda: parse_tolerance("inf", "rtol"), "rtol: 'inf' must be a finite number >= 0"),
        (lambda: parse_examples("ten", "examples"), "examples: 'ten' is not an integer; give 0 to turn generated"),
        (lambda: parse_examples("-1", "examples"), "examples: '-1' must be >= 0"),
        (lambda: Settings().updated(mode="eager"), "unknown setting 'mode'"),
    ],
)
def test_bad_values_name_the_source_the_value_and_the_choices(call, message: str) -> None:
    with pytest.raises(UsageError) as info:
        call()
    assert str(info.value).startswith(message)


def test_tolerances() -> None:
    assert parse_tolerance("1e-3") == 1e-3
    assert parse_tolerance(0) == 0.0
    assert parse_tolerance(None) is None
    assert parse_tolerance("default") is None


def test_settings_updated_parses_and_ignores_none() -> None:
    base = Settings()
    assert (base.modes, base.dtypes, base.fallback, base.examples) == (DEFAULT_MODES, ("fp32", "bf16"), "warn", 10)
    assert base.atol is None and base.rtol is None and not base.ipex
    changed = base.updated(modes="trace-dict", dtypes=None, atol="0.5", fallback="fail")
    assert changed.modes == ("eager", "trace-dict") and changed.dtypes == base.dtypes
    assert changed.atol == 0.5 and changed.fallback == "fail"
    assert base.modes == DEFAULT_MODES, "updated() returns a copy"


def _mark(**kwargs: object) -> pytest.Mark:
    return pytest.mark.jitcpu(**kwargs).mark


def test_marker_settings_apply_on_top_of_the_session() -> None:
    base = Settings(dtypes=("fp32",), atol=0.5)
    marked = options.marker_settings(base, _mark(modes=["trace-dict"], rtol=0.25, fallback=None), "t.py::t")
    assert marked.modes == ("eager", "trace-dict") and marked.rtol == 0.25
    assert marked.dtypes == ("fp32",) and marked.atol == 0.5 and marked.fallback == "warn"
    assert options.marker_settings(base, None, "t.py::t") is base
    assert options.marker_settings(base, _mark(), "t.py::t") == base


@pytest.mark.parametrize(
    ("mark", "message"),
    [
        (
            _mark(mode="eager"),
            "t.py::t: @pytest.mark.jitcpu got unknown keyword 'mode'; choose from " + ", ".join(options.MARKER_KWARGS),
        ),
        (
            _mark(modes=["eager", "tracing"]),
            "t.py::t: @pytest.mark.jitcpu(modes=...): unknown mode 'tracing'; choose from " + ", ".join(MODES),
        ),
        (
            _mark(dtypes="fp16"),
            "t.py::t: @pytest.mark.jitcpu(dtypes=...): unknown dtype 'fp16'; choose from fp32, bf16",
        ),
        (pytest.mark.jitcpu("eager").mark, "t.py::t: @pytest.mark.jitcpu takes keyword arguments only"),
    ],
)
def test_bad_markers_name_the_test(mark: pytest.Mark, message: str) -> None:
    with pytest.raises(UsageError) as info:
        options.marker_settings(Settings(), mark, "t.py::t")
    assert str(info.value).startswith(message)


def test_ipex_adds_its_mode() -> None:
    assert options.with_ipex(Settings(ipex=True, modes=("eager",))).modes == ("eager", "ipex")
    assert options.with_ipex(Settings(modes=("eager",))).modes == ("eager",)


# --- precedence, as a user sets things --------------------------------------------------------------------

PRECEDENCE = """
import pytest

import tiny_models as tm


def test_session_layers(jitcpu):
    s = jitcpu.settings
    assert s.modes == ("eager", "trace-dict", "trace-tuple")  # command line over env and ini
    assert s.dtypes == ("fp32",)  # env over ini
    assert s.rtol == 0.125  # env over ini
    assert s.atol == 0.5  # ini only
    assert s.fallback == "fail"  # command line over env over ini
    assert s.examples == 0  # command line over ini
    result = jitcpu.check(tm.TinyMLP(), {"x": tm.features()})
    assert (result.record("trace-dict").atol, result.record("trace-dict").rtol) == (0.5, 0.125)


@pytest.mark.jitcpu(modes=["trace-dict"], fallback="warn", rtol=0.0625)
def test_marker_wins(jitcpu):
    s = jitcpu.settings
    assert (s.modes, s.fallback, s.rtol) == (("eager", "trace-dict"), "warn", 0.0625)
    assert (s.dtypes, s.atol) == (("fp32",), 0.5)
    jitcpu.check(tm.PythonObjectOutput(), {"x": tm.features()})  # warns: the marker says so


def test_command_line_fallback_fails(jitcpu):
    jitcpu.check(tm.PythonObjectOutput(), {"x": tm.features()})


@pytest.mark.jitcpu(dtypes=["bf16"])
def test_check_arguments_win_over_the_marker(jitcpu):
    result = jitcpu.check(tm.TinyMLP(), {"x": tm.features()}, dtypes="fp32", modes="trace-tuple")
    assert [(r.mode, r.dtype) for r in result] == [("eager", "fp32"), ("trace-tuple", "fp32")]
"""


def test_precedence_marker_cli_env_ini(jitcpu_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    jitcpu_pytester.makeini(
        """
        [pytest]
        jitcpu_modes = trace-dict
        jitcpu_dtypes = bf16
        jitcpu_atol = 0.5
        jitcpu_rtol = 0.25
        jitcpu_fallback = expect
        jitcpu_examples = 3
        jitcpu_report = out/ini.json
        """
    )
    monkeypatch.setenv("JITCPU_MODES", "trace-tuple")
    monkeypatch.setenv("JITCPU_DTYPES", "fp32")
    monkeypatch.setenv("JITCPU_RTOL", "0.125")
    monkeypatch.setenv("JITCPU_FALLBACK", "warn")
    monkeypatch.setenv("JITCPU_REPORT", "out/env.json,out/env.md")
    jitcpu_pytester.makepyfile(test_layers=PRECEDENCE)
    result = run(
        jitcpu_pytester,
        "--jitcpu-modes=trace-dict,trace-tuple",
        "--jitcpu-fallback=fail",
        "--jitcpu-report=out/cli.json",
        "-rA",
    )
    assert outcomes(result) == {
        "test_session_layers": "PASSED",
        "test_marker_wins": "PASSED",
        "test_command_line_fallback_fails": "FAILED",
        "test_check_arguments_win_over_the_marker": "PASSED",
    }
    result.stdout.fnmatch_lines(["jitcpu: modes=eager,trace-dict,trace-tuple dtypes=fp32 fallback=fail untested=warn"])
    result.stdout.fnmatch_lines(["*JitcpuFallbackWarning: jitcpu: PythonObjectOutput trace-dict/fp32 fell back*"])
    result.stdout.fnmatch_lines(
        ["*PythonObjectOutput: 2 check(s) failed: trace-dict/fp32 fallback, trace-tuple/fp32 fallback"]
    )
    # Report paths: the command line replaces env and ini.
    out = jitcpu_pytester.path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["cli.json"]
    records = records_by_test(load_json(out / "cli.json"))
    assert statuses(records["test_marker_wins"]) == {
        ("PythonObjectOutput", "eager", "fp32"): "pass",
        ("PythonObjectOutput", "trace-dict", "fp32"): "fallback",
    }


def test_report_paths_from_env_then_ini(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, no_jitcpu_env: None
) -> None:
    pytester.makeini("[pytest]\njitcpu_report = out/a.json out/b.md\n")
    config = pytester.parseconfigure()
    assert options.report_paths(config) == ["out/a.json", "out/b.md"]
    monkeypatch.setenv("JITCPU_REPORT", "out/env.json, out/env.md")
    assert options.report_paths(config) == ["out/env.json", "out/env.md"]


def test_defaults_without_any_configuration(pytester: pytest.Pytester, no_jitcpu_env: None) -> None:
    pytester.makepyfile(
        f"""
        from pytest_jitcpu.settings import Settings

        def test_defaults(jitcpu):
            assert jitcpu.settings == Settings()
            assert jitcpu.settings.modes == {DEFAULT_MODES!r}
            assert jitcpu.settings.dtypes == ("fp32", "bf16")
            assert jitcpu.settings.examples == {DEFAULT_EXAMPLES}
            assert (jitcpu.settings.fallback, jitcpu.settings.ipex) == ("warn", False)
        """
    )
    result = run_inprocess(pytester)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        ["jitcpu: modes=eager,trace-dict,trace-tuple dtypes=fp32,bf16 fallback=warn untested=warn"]
    )


# --- usage errors ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "env", "ini", "message"),
    [
        (["--jitcpu-dtypes=bf8"], {}, "", "*argument --jitcpu-dtypes: unknown dtype 'bf8'; choose from fp32, bf16*"),
        (["--jitcpu-modes=eager,jit"], {}, "", "*argument --jitcpu-modes: unknown mode 'jit'; choose from eager, *"),
        (["--jitcpu-fallback=never"], {}, "", "*argument --jitcpu-fallback: unknown fallback policy 'never'*"),
        (["--jitcpu-atol=small"], {}, "", "*argument --jitcpu-atol: 'small' is not a number*"),
        (
            ["--jitcpu-report=out/report.txt"],
            {},
            "",
            "ERROR: --jitcpu-report: 'out/report.txt' must end in .json or .md",
        ),
        (
            [],
            {"JITCPU_DTYPES": "fp16"},
            "",
            "ERROR: environment variable JITCPU_DTYPES: unknown dtype 'fp16'; choose from fp32, bf16",
        ),
        ([], {"JITCPU_IPEX": "maybe"}, "", "ERROR: environment variable JITCPU_IPEX: 'maybe' is not a boolean*"),
        ([], {}, "jitcpu_modes = trace", "ERROR: ini option jitcpu_modes: unknown mode 'trace'; choose from eager, *"),
        ([], {}, "jitcpu_rtol = -3", "ERROR: ini option jitcpu_rtol: '-3' must be a finite number >= 0"),
    ],
    ids=[
        "cli-dtype",
        "cli-mode",
        "cli-fallback",
        "cli-atol",
        "report-suffix",
        "env-dtype",
        "env-ipex",
        "ini-mode",
        "ini-rtol",
    ],
)
def test_bad_option_values_are_usage_errors(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    no_jitcpu_env: None,
    args: list[str],
    env: dict[str, str],
    ini: str,
    message: str,
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    if ini:
        pytester.makeini(f"[pytest]\n{ini}\n")
    pytester.makepyfile("def test_nothing(): pass")
    result = run_inprocess(pytester, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
    result.stdout.no_fnmatch_line("*1 passed*")


@pytest.mark.parametrize(
    ("marker", "message"),
    [
        (
            "jitcpu(mode=['eager'])",
            "@pytest.mark.jitcpu got unknown keyword 'mode'; choose from modes, dtypes, atol, rtol, fallback, untested, "
            "examples, generate, dynamic",
        ),
        (
            "jitcpu(modes=['eager', 'tracing'])",
            "@pytest.mark.jitcpu(modes=...): unknown mode 'tracing'; choose from eager,*",
        ),
        ("jitcpu(dtypes='fp16')", "@pytest.mark.jitcpu(dtypes=...): unknown dtype 'fp16'; choose from fp32, bf16"),
        ("jitcpu(fallback='skip')", "@pytest.mark.jitcpu(fallback=...): unknown fallback policy 'skip'*"),
        ("jitcpu(atol='x')", "@pytest.mark.jitcpu(atol=...): 'x' is not a number*"),
        ("jitcpu('eager')", "@pytest.mark.jitcpu takes keyword arguments only*"),
    ],
    ids=["unknown-kwarg", "unknown-mode", "unknown-dtype", "unknown-fallback", "bad-atol", "positional"],
)
def test_bad_markers_error_that_test_at_setup_naming_it(
    pytester: pytest.Pytester, no_jitcpu_env: None, marker: str, message: str
) -> None:
    pytester.makepyfile(
        test_marked=f"""
        import pytest

        def test_fine():
            pass

        @pytest.mark.{marker}
        def test_bad(jitcpu):
            pass
        """
    )
    result = run_inprocess(pytester)
    result.assert_outcomes(passed=1, errors=1)  # the rest of the session runs
    result.stdout.fnmatch_lines(["*ERROR at setup of test_bad*", f"test_marked.py::test_bad: {message}"])


# --- help texts ----------------------------------------------------------------------------------------------


def test_help_shows_the_jitcpu_group_with_defaults(pytester: pytest.Pytester) -> None:
    result = run_inprocess(pytester, "--help")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(
        [
            "jitcpu: check models under eager, TorchScript tracing and IPEX on CPU:",
            "*--jitcpu-modes=MODES*",
            "*--jitcpu-dtypes=DTYPES*",
            "*--jitcpu-fallback=FALLBACK*",
            "*--jitcpu-atol=ATOL*",
            "*--jitcpu-rtol=RTOL*",
            "*--jitcpu-ipex*",
            "*--jitcpu-report=PATH*",
        ]
    )
    text = " ".join(result.stdout.str().split())  # help lines wrap anywhere
    group = text[text.index("jitcpu: check models") :]
    group = group[: group.index("[pytest] ini-options")] if "[pytest] ini-options" in group else group
    for expected in (
        "default: eager,trace-dict,trace-tuple",
        "default: fp32,bf16",
        "(warn, fail, expect); env JITCPU_FALLBACK, ini jitcpu_fallback; default: warn",
        "env JITCPU_IPEX, ini jitcpu_ipex; default: off",
        "repeatable; env JITCPU_REPORT",
    ):
        assert expected in group, expected
    for name in ("jitcpu_modes", "jitcpu_dtypes", "jitcpu_fallback", "jitcpu_atol", "jitcpu_rtol", "jitcpu_report"):
        assert f"{name} (" in text, f"ini key {name} is listed"


def test_markers_show_the_jitcpu_signature(pytester: pytest.Pytester) -> None:
    result = run_inprocess(pytester, "--markers")
    result.stdout.fnmatch_lines(
        [
            "@pytest.mark.jitcpu(modes=None, dtypes=None, atol=None, rtol=None, fallback=None, untested=None, examples=None, "
            "generate=None, dynamic=None): "
            "check models given to the jitcpu fixture in these modes (eager, trace-dict, trace-tuple*"
        ]
    )


# --- IPEX requested where it is not installed --------------------------------------------------------------


@pytest.mark.skipif(
    importlib.util.find_spec("intel_extension_for_pytorch") is not None, reason="IPEX is installed here"
)
def test_ipex_without_ipex_is_unavailable_not_a_crash(jitcpu_pytester: pytest.Pytester) -> None:
    jitcpu_pytester.makepyfile(
        """
        import pytest

        import tiny_models as tm


        @pytest.mark.jitcpu(modes=["eager"], dtypes=["fp32"])
        def test_ipex(jitcpu):
            result = jitcpu.check(tm.TinyMLP(), {"x": tm.features()})
            assert result.status("ipex") == "unavailable"
            assert result.ok


        @pytest.mark.jitcpu(modes=["eager"], dtypes=["fp32"])
        def test_ipex_again(jitcpu):
            assert jitcpu.check(tm.TinyMLP(), {"x": tm.features()}).status("ipex") == "unavailable"
        """
    )
    result = run_inprocess(jitcpu_pytester, "--jitcpu-ipex", "--jitcpu-report=out/r.json")
    result.assert_outcomes(passed=2)
    header = [line for line in result.outlines if line.startswith("jitcpu: ipex")]
    assert len(header) == 1 and header[0].startswith(
        "jitcpu: ipex not usable: intel-extension-for-pytorch is not installed"
    )
    report = load_json(jitcpu_pytester.path / "out" / "r.json")
    ipex = [r for r in report["results"] if r["mode"] == "ipex"]
    assert len(ipex) == 2
    assert {r["status"] for r in ipex} == {"unavailable"}
    assert all("intel-extension-for-pytorch is not installed" in r["reason"] for r in ipex)
    assert report["summary"]["unavailable"] == 2 and report["environment"]["ipex"] is None


# --- report paths that cannot be written ---------------------------------------------------------------------


def test_unwritable_report_paths_are_usage_errors_before_the_run(
    pytester: pytest.Pytester, no_jitcpu_env: None
) -> None:
    pytester.mkdir("taken.json")
    pytester.makepyfile("def test_nothing(): pass")
    result = run_inprocess(pytester, "--jitcpu-report=taken.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --jitcpu-report: cannot write 'taken.json': it is a directory"])
    pytester.makefile(".txt", notes="a file, not a folder")
    result = run_inprocess(pytester, "--jitcpu-report=notes.txt/r.md")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: --jitcpu-report: cannot write 'notes.txt/r.md': */notes.txt is not a directory"]
    )


def test_report_write_failure_at_the_end_is_reported_not_a_crash(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, no_jitcpu_env: None
) -> None:
    from pytest_jitcpu import reports

    def disk_full(path: object, *args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(reports, "write", disk_full)  # the plugin imports it when writing
    pytester.makepyfile("def test_nothing(): pass")
    result = run_inprocess(pytester, "--jitcpu-report=out/r.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stdout.fnmatch_lines(["jitcpu: could not write report out/r.json: [[]Errno 28[]] No space left on device"])
    result.stdout.no_fnmatch_line("*generated jitcpu report*")


def test_check_overrides_parse_flags_like_the_command_line() -> None:
    # check(serialize="false") must mean off, as --jitcpu-serialize=false does (not bool("false")).
    assert Settings().updated(serialize="false", derandomize="no").serialize is False
    assert Settings().updated(serialize=True).serialize is True
    with pytest.raises(UsageError, match="serialize: 'maybe' is not a boolean"):
        Settings().updated(serialize="maybe")


@pytest.mark.parametrize(
    ("name", "cli", "env", "ini", "read", "expected"),
    [
        ("baseline", "cli.json", "env.json", "ini.json", options.baseline_path, ("cli.json", "env.json", "ini.json")),
        ("ipex", None, "false", "true", options.ipex_requested, (None, False, True)),
        ("examples", "3", "4", "5", lambda c: options.session_settings(c).examples, (3, 4, 5)),
        ("untested", "fail", "warn", "fail", lambda c: options.session_settings(c).untested, ("fail", "warn", "fail")),
    ],
)
def test_every_option_resolves_command_line_then_environment_then_ini(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, no_jitcpu_env: None, name, cli, env, ini, read, expected
) -> None:
    pytester.makeini(f"[pytest]\njitcpu_{name} = {ini}\n")
    assert read(pytester.parseconfig()) == expected[2]
    monkeypatch.setenv(f"JITCPU_{name.upper()}", env)
    assert read(pytester.parseconfig()) == expected[1]
    if cli is not None:
        assert read(pytester.parseconfig(f"--jitcpu-{name}={cli}")) == expected[0]
    else:  # a store_true flag: given, it wins over the environment's false
        assert read(pytester.parseconfig(f"--jitcpu-{name}")) is True
