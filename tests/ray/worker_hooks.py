"""Run in every Ray worker of the test cluster (``worker_process_setup_hook``), for two tests:

- models whose hidden size is BROKEN_HIDDEN get a ``trace`` that returns zeros inside workers only, so the
  driver verifies trace and each actor must catch the mismatch on its own first batch and fall back to eager;
- every map actor leaves markers in a folder named by the test session: ``started-RUN-PID`` when its
  constructor begins (a restarted actor runs it again, in a new process) and ``batch-RUN-PID`` when it
  processes a batch (RUN: the id of the run's report actor), so the kill test kills an actor of its own run
  in the middle of it and sees Ray start a replacement for that run.
"""

from __future__ import annotations

import os
import time
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

        init, call = cluster.InferActor.__init__, cluster.InferActor.__call__

        def started(self, *args, **kwargs):
            self.run_id = kwargs["reports"]._actor_id.hex()
            (Path(folder) / f"started-{self.run_id}-{os.getpid()}").touch()
            init(self, *args, **kwargs)

        def marked(self, batch):
            (Path(folder) / f"batch-{self.run_id}-{os.getpid()}").touch()
            if (Path(folder) / "slow").exists():  # the kill test: leave Ray time to restart the killed actor
                time.sleep(0.2)
            return call(self, batch)

        cluster.InferActor.__init__ = started
        cluster.InferActor.__call__ = marked
