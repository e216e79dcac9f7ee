"""A real local Ray cluster (2 CPUs, loopback) shared by the tests in tests/ray.

These tests run in the tox env ``ray`` (PYTEST_JITCPU_TESTS_NEED_RAY=1): there a missing or broken Ray is
a failure, never a skip. The default env does not collect this folder (tests/conftest.py).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from worker_hooks import MARKERS_ENV

HERE = Path(__file__).resolve().parent
try:
    import ray
except ImportError as exc:
    if os.environ.get("PYTEST_JITCPU_TESTS_NEED_RAY") == "1":
        raise RuntimeError(f"the ray env must have Ray Data: {exc}") from None
    pytest.skip(f"Ray is not installed: {exc}", allow_module_level=True)


@pytest.fixture(scope="session")
def actor_markers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the test cluster's map actors leave their pid (worker_hooks.py)."""
    return tmp_path_factory.mktemp("actor-markers")


@pytest.fixture(scope="session")
def ray_address(actor_markers: Path) -> Iterator[str]:
    """The cluster's address; its workers import tests/ray/worker_hooks.py (see there)."""
    path = os.pathsep.join([str(HERE), str(HERE.parent), *sys.path])
    env = {"PYTHONPATH": path, MARKERS_ENV: str(actor_markers)}
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        configure_logging=False,
        runtime_env={"env_vars": env, "worker_process_setup_hook": "worker_hooks.setup"},
    )
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
