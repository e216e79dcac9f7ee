"""The ``aoti`` mode's tests compile C++ (10-60 s per model on 2 cores), so they run in the tox env
``aoti`` (PYTEST_JITCPU_TESTS_AOTI=1), or when named on the command line; the default run does not collect
this folder (tests/conftest.py). Their pytester runs share one inductor cache folder (the precompiled
headers are built once)."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True, scope="session")
def _inductor_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(tmp_path_factory.mktemp("inductor-cache"))
