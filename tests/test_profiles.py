"""The divergence search follows Hypothesis' settings profiles and --hypothesis-seed where the jitcpu
options are not set, and its records say so (pytester runs with a conftest registering profiles)."""

from __future__ import annotations

import json

import pytest
from plugin_runs import load_json, records_by_test, run

CONFTEST = """
from hypothesis import settings

# parent=default: a profile registered without one inherits the profile active at that moment, and on
# CI (the CI variable set) that is Hypothesis' "ci" profile, which derandomizes
settings.register_profile("three", max_examples=3, parent=settings.get_profile("default"))
settings.register_profile("random", derandomize=False, parent=settings.get_profile("default"))
"""

SUITE = """
import json
import random
import os

import pytest
import torch

import tiny_models as tm



def generate(rng: random.Random):
    value = rng.random()
    # written to a file, not a list: with isolation on, the search (and so this callable) runs in a child
    with open(os.environ["DRAWS_FILE"], "a", encoding="utf-8") as f:
        f.write(json.dumps(value) + "\\n")
    return {"x": torch.full((2, 4), value)}


def test_search(jitcpu):
    jitcpu.check(tm.TinyMLP(), {"x": tm.features()}, modes=["trace-dict"], dtypes=["fp32"], generate=generate)
"""


@pytest.fixture
def suite(jitcpu_pytester: pytest.Pytester) -> pytest.Pytester:
    jitcpu_pytester.makeconftest(CONFTEST)
    jitcpu_pytester.makepyfile(test_suite=SUITE)
    return jitcpu_pytester


# the variables by which Hypothesis decides it runs on CI and loads its "ci" profile
CI_VARIABLES = (
    "CI",
    "__TOX_ENVIRONMENT_VARIABLE_ORIGINAL_CI",
    "TF_BUILD",
    "bamboo.buildKey",
    "BUILDKITE",
    "CIRCLECI",
    "CIRRUS_CI",
    "CODEBUILD_BUILD_ID",
    "GITHUB_ACTIONS",
    "GITLAB_CI",
    "HEROKU_TEST_RUN_ID",
    "TEAMCITY_VERSION",
)


def _run(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, name: str, *args: str, ci: bool = False
) -> tuple[dict, list[float]]:
    for variable in CI_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    if ci:
        monkeypatch.setenv("CI", "true")
    draws = suite.path / f"{name}.draws"
    monkeypatch.setenv("DRAWS_FILE", str(draws))
    # fast=False: run()'s fast flags set --jitcpu-examples, which would win over any profile
    result = run(suite, "--jitcpu-serialize=false", f"--jitcpu-report={name}.json", *args, fast=False)
    result.assert_outcomes(passed=1)
    (rec,) = [r for r in records_by_test(load_json(suite.path / f"{name}.json"))["test_search"] if r["mode"] != "eager"]
    return rec, [json.loads(line) for line in draws.read_text(encoding="utf-8").splitlines()]


def test_profiles_and_seed_drive_the_search_unless_jitcpu_options_are_set(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    default, default_draws = _run(suite, monkeypatch, "default")
    assert default["status"] == "pass" and len(default_draws) == 10
    assert not any("Hypothesis" in n for n in default["notes"])  # jitcpu's own settings: nothing to say

    three, three_draws = _run(suite, monkeypatch, "three", "--hypothesis-profile=three")
    assert len(three_draws) == 3
    assert (
        "generated inputs: max_examples=3 from Hypothesis profile 'three', derandomize=False from Hypothesis "
        "profile 'three' (set --jitcpu-examples / --jitcpu-derandomize to override)"
    ) in three["notes"]

    # a jitcpu option wins over the profile; the note names only what still came from Hypothesis
    half, half_draws = _run(suite, monkeypatch, "half", "--hypothesis-profile=three", "--jitcpu-examples=5")
    assert len(half_draws) == 5
    (said,) = [n for n in half["notes"] if "Hypothesis" in n]
    assert said.startswith("generated inputs: derandomize=False from Hypothesis profile 'three' (")

    # a seed gives its own stream, the same for the same seed (derandomized by default: fixed draws)
    seed1, seed1_draws = _run(suite, monkeypatch, "seed1", "--hypothesis-seed=1")
    _, seed1_again = _run(suite, monkeypatch, "seed1b", "--hypothesis-seed=1")
    _, seed2_draws = _run(suite, monkeypatch, "seed2", "--hypothesis-seed=2")
    assert seed1_draws == seed1_again
    assert seed1_draws not in (seed2_draws, default_draws)
    assert (
        "generated inputs: derandomize=False from --hypothesis-seed, seed=1 from --hypothesis-seed "
        "(set --jitcpu-examples / --jitcpu-derandomize to override)"
    ) in seed1["notes"]

    # a profile that does not derandomize: not the fixed draws
    rand, rand_draws = _run(suite, monkeypatch, "random", "--hypothesis-profile=random")
    assert rand_draws != default_draws and len(rand_draws) == 10
    assert any("derandomize=False from Hypothesis profile 'random'" in n for n in rand["notes"])

    # on CI Hypothesis loads its "ci" profile (derandomize=True, max_examples kept): jitcpu's own search, unchanged
    on_ci, on_ci_draws = _run(suite, monkeypatch, "ci", ci=True)
    assert on_ci_draws == default_draws
    assert not any("Hypothesis" in n for n in on_ci["notes"])
