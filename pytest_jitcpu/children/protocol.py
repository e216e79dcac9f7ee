"""The one message protocol between the parent and a child program.

The parent writes a batch of jobs to a file, then sends one request line ``JOBS<TAB>RESULTS`` on the
child's stdin; the child runs every job, writes RESULTS and answers ``done`` on stdout. A long-lived
child (the TorchScript loader) serves request lines until its stdin closes; a one-shot child (the
ONNX / OpenVINO runner) gets one and its stdin closes. RESULTS holds, per job in order, ``{"ok": True,
...}`` or ``{"ok": False, "error": "Type: first line"}``, and ``loaded``: the blocked modules that got
loaded anyway. Anything else on stdout, or no ``done``, is a failure the parent reports with the
child's last stderr line.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import IO, Any

DONE = "done"


def request(jobs: str, results: str) -> str:
    """The line that asks a child to run the batch in ``jobs`` and write ``results``."""
    return f"{jobs}\t{results}\n"


def parse(line: str) -> tuple[str, str]:
    jobs, results = line.rstrip("\n").split("\t")
    return jobs, results


def failure(exc: BaseException) -> dict[str, Any]:
    """A job's result when it raised: the exception's type and first line (a native error can be long)."""
    lines = str(exc).strip().splitlines()
    message = " ".join(lines[0].split())[:300] if lines else ""
    return {"ok": False, "error": type(exc).__name__ + (f": {message}" if message else "")}


def serve(run: Callable[[str, str], None], stdin: IO[str] | None = None, stdout: IO[str] | None = None) -> None:
    """The child's loop: ``run(jobs, results)`` for each request line, ``done`` after each."""
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    for line in stdin:
        if line.strip():
            run(*parse(line))
            stdout.write(DONE + "\n")
            stdout.flush()
