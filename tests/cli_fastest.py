"""Runs ``jitcpu`` as the console script does, with ``auto``'s timing made deterministic: the mode named by
JITCPU_TEST_FASTEST is timed fastest (its real runs still happen; only the milliseconds are replaced). The
tests' way to know which mode a first run picks on a tiny model, where the real margins are noise.

    JITCPU_TEST_FASTEST=openvino python tests/cli_fastest.py run --input in.txt --output out.jsonl
"""

from __future__ import annotations

import os
import sys
from typing import Any

from pytest_jitcpu.cli import main
from pytest_jitcpu.inference import selection

real_time = selection._time


def fixed_time(candidates: list[Any], *args: Any) -> None:
    real_time(candidates, *args)
    for c in candidates:
        c.ms = 1.0 if c.mode == os.environ["JITCPU_TEST_FASTEST"] else 100.0


if __name__ == "__main__":
    selection._time = fixed_time
    sys.exit(main(sys.argv[1:]))
