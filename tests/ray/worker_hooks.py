"""Run in every Ray worker of the test cluster (``worker_process_setup_hook``), for two tests:

- models whose hidden size is BROKEN_HIDDEN get a ``trace`` that returns zeros inside workers only, so the
  driver verifies trace and each actor must catch the mismatch on its own first batch and fall back to eager;
- every map actor that processes a batch writes its pid to MARKERS (a folder named by the test session), so
  the kill test kills an actor of its own run, in the middle of it.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

BROKEN_HIDDEN = 48
MARKERS_ENV = "JITCPU_TEST_ACTOR_MARKERS"


def setup() -> None:
    from pytest_jitcpu.backends import base, trace

    real = trace.build_dict

    def build(model, inputs, dtype):
        built = real(model, inputs, dtype)
        config = getattr(getattr(model, "model", None), "config", None)
        if getattr(config, "hidden_size", None) != BROKEN_HIDDEN:
            return built

        def wrong(x):
            return torch.zeros(x.kwargs["input_ids"].shape[0], BROKEN_HIDDEN)

        return base.Built("trace-dict", dtype, wrong, module=model, frozen=True)

    trace.build_dict = build

    folder = os.environ.get(MARKERS_ENV)
    if folder:
        from pytest_jitcpu.inference import cluster

        call = cluster.InferActor.__call__

        def marked(self, batch):
            (Path(folder) / str(os.getpid())).touch()
            return call(self, batch)

        cluster.InferActor.__call__ = marked
