"""Shared set-up for the test suite.

One thread per process: the default run is ``pytest -n 2`` on 2 cores, and each xdist worker (and each
pytester subprocess) using every core makes OpenMP threads spin against each other; a tiny BERT forward
then takes ~0.3 s instead of ~2 ms. Set before any test runs; subprocesses inherit OMP_NUM_THREADS.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

os.environ.setdefault("OMP_NUM_THREADS", "1")
# No decision cache unless a test turns it on: a decision cached by one test (the same tiny model, seeded
# alike) must not change what another sees; subprocesses inherit it.
os.environ.setdefault("JITCPU_CACHE", "off")
THREADS = int(os.environ["OMP_NUM_THREADS"])
torch.set_num_threads(THREADS)

TINY_MODELS = Path(__file__).with_name("tiny_models.py")
RAY_TESTS = Path(__file__).resolve().with_name("ray")
AOTI_TESTS = Path(__file__).resolve().with_name("aoti")
# Folders the default run leaves out, and the variable their own tox env sets to collect them.
OWN_ENV = {RAY_TESTS: "PYTEST_JITCPU_TESTS_NEED_RAY", AOTI_TESTS: "PYTEST_JITCPU_TESTS_AOTI"}


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """tests/ray starts a real Ray cluster (minutes), tests/aoti compiles C++ (minutes): each runs in its
    own tox env (``ray``, ``aoti``) or when named on the command line, not in the default run."""
    folder = collection_path.resolve()
    if folder not in OWN_ENV or os.environ.get(OWN_ENV[folder]) == "1":
        return None
    named = any(Path(arg.split("::")[0]).resolve().is_relative_to(folder) for arg in config.args)
    return None if named else True


@pytest.fixture(autouse=True)
def _keep_one_thread() -> Iterator[None]:
    """A test that sets torch's thread count (e.g. ``jitcpu run --threads 2`` in-process) does not
    leave it for the tests after it on the same worker."""
    yield
    if torch.get_num_threads() != THREADS:
        torch.set_num_threads(THREADS)


@pytest.fixture
def no_jitcpu_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No JITCPU_* variable from the caller's environment leaks into a run."""
    for key in list(os.environ):
        if key.startswith("JITCPU_"):
            monkeypatch.delenv(key)


@pytest.fixture
def jitcpu_pytester(pytester: pytest.Pytester, no_jitcpu_env: None) -> pytest.Pytester:
    """A pytester folder where ``import tiny_models`` works, without JITCPU_* variables."""
    pytester.makepyfile(tiny_models=TINY_MODELS.read_text(encoding="utf-8"))
    return pytester
