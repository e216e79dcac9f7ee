"""Runs ``jitcpu`` as the console script does and then writes which of torch and transformers the process
had imported (JSON list) to the file named by JITCPU_TEST_MODULES: the tests' view into the torch-free start.

    JITCPU_TEST_MODULES=mods.json python tests/cli_modules.py run --input in.txt --output out.jsonl
"""

from __future__ import annotations

import json
import os
import sys

from pytest_jitcpu.cli import main

if __name__ == "__main__":
    code = main(sys.argv[1:])
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers"))
    with open(os.environ["JITCPU_TEST_MODULES"], "w", encoding="utf-8") as handle:
        json.dump(loaded, handle)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
