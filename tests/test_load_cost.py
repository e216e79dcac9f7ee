"""The plugin costs nothing when unused: a session that never uses jitcpu imports neither torch,
transformers nor Hypothesis (issue 10, section 1). The time it costs is measured by
``benchmarks/plugin_load.py``; this file proves what is imported, as a user's run does it.
"""

from __future__ import annotations

import json

import pytest
from plugin_runs import run

HEAVY = ("torch", "transformers", "hypothesis")
NOT_THEIRS = ("-p", "jitcpu", "-p", "no:hypothesispytest")  # -p jitcpu: loaded even with autoload off

# Written at the very end (the last pytest_unconfigure), after jitcpu's reports, terminal summary and
# unconfigure, so whatever jitcpu imports at any point of the session is seen.
RECORDER = f"""
import json
import sys

import pytest

HEAVY = {HEAVY!r}


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    found = sorted(m for m in sys.modules if m.split(".")[0] in HEAVY)
    with open("imported.json", "w", encoding="utf-8") as f:
        json.dump({{"heavy": sorted({{m.split(".")[0] for m in found}}), "jitcpu": "pytest_jitcpu" in sys.modules}}, f)
"""


def _imported(pytester: pytest.Pytester) -> dict:
    return json.loads((pytester.path / "imported.json").read_text(encoding="utf-8"))


def test_unused_plugin_imports_nothing_heavy(pytester: pytest.Pytester, no_jitcpu_env: None) -> None:
    pytester.makeconftest(RECORDER)
    pytester.makepyfile(test_plain="def test_plain():\n    assert 1 + 1 == 2\n")
    # Hypothesis' own pytest plugin imports hypothesis in its terminal summary whoever else is loaded:
    # turned off here, so what is left is ours.
    result = run(pytester, *NOT_THEIRS, fast=False)
    result.assert_outcomes(passed=1)
    seen = _imported(pytester)
    assert seen["jitcpu"], "the plugin was not loaded: the test proves nothing"
    assert seen["heavy"] == [], f"a session that never uses jitcpu imported {seen['heavy']}"
    result.stdout.no_fnmatch_line("*jitcpu compatibility matrix*")


def test_marker_only_in_another_file_still_imports_nothing(pytester: pytest.Pytester, no_jitcpu_env: None) -> None:
    """Collecting, --help-free options parsing, the report header and the terminal summary stay cheap
    when no test is marked; a deselected marked test does not import the engine either."""
    pytester.makeconftest(RECORDER)
    pytester.makepyfile(
        test_plain="def test_plain():\n    pass\n",
        test_marked="import pytest\n\n@pytest.mark.jitcpu\ndef test_marked(jitcpu):\n    pass\n",
    )
    result = run(pytester, *NOT_THEIRS, "-k", "plain", fast=False)
    result.assert_outcomes(passed=1, deselected=1)
    assert _imported(pytester)["heavy"] == []


def test_the_fixture_still_works_and_imports_torch_then(jitcpu_pytester: pytest.Pytester) -> None:
    jitcpu_pytester.makeconftest(RECORDER)
    jitcpu_pytester.makepyfile(
        test_used="""
import tiny_models as tm
from pytest_jitcpu import Tolerance, check, compare  # the public API, imported lazily


def test_used(jitcpu):
    result = jitcpu.check(tm.TinyMLP(), {"x": tm.features()}, modes=["eager", "trace-dict"], dtypes=["fp32"])
    assert result.status("trace-dict") == "pass"
    assert callable(check) and callable(compare) and Tolerance.__name__ == "Tolerance"
"""
    )
    result = run(jitcpu_pytester)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*jitcpu compatibility matrix*"])
    assert "torch" in _imported(jitcpu_pytester)["heavy"]


def test_public_api_names_resolve_to_the_objects(no_jitcpu_env: None) -> None:
    """``from pytest_jitcpu import compare`` is the function even after the submodule of the same name
    was imported (the import system sets submodules as package attributes)."""
    import pytest_jitcpu
    import pytest_jitcpu.compare as compare_module  # noqa: F401 - the import that could shadow the function
    from pytest_jitcpu import api, compare, record, settings

    assert compare is pytest_jitcpu.compare and callable(compare) and compare.__module__ == "pytest_jitcpu.compare"
    assert pytest_jitcpu.check is api.check  # the one entry: in-process or a child, as its settings say
    assert pytest_jitcpu.CheckResult is record.CheckResult
    assert pytest_jitcpu.MODES == settings.MODES
    for name in pytest_jitcpu.__all__:
        assert getattr(pytest_jitcpu, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        pytest_jitcpu.nope  # noqa: B018 - the attribute access is the test
