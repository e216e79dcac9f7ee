"""Runs a built program's saved form in the round trip's torch-free child, as serialize.py does: the tests'
way to see what the child computes. Returns the child's outputs after checking it finished, refused torch
and loaded none of the blocked modules."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from pytest_jitcpu.backends.base import Built
from pytest_jitcpu.children import launch, protocol
from pytest_jitcpu.inputs import Inputs


def run_in_child(built: Built, batch: Inputs, folder: Path) -> list[Any]:
    """``built``'s saved program run on ``batch`` in the torch-free child; its outputs, in order."""
    assert built.portable is not None
    path = built.portable.save(folder)
    feed = built.portable.feed(batch)
    np.savez(folder / "in.npz", **{f"in{i}": a for i, (_, a) in enumerate(feed)})
    job = {
        "runtime": built.portable.runtime,
        "path": str(path),
        "names": [n for n, _ in feed],
        "inputs": str(folder / "in.npz"),
        "outputs": str(folder / "out.npz"),
        "options": built.portable.options,
        "runs": 1,
    }
    (folder / "jobs.json").write_text(json.dumps([job]), encoding="utf-8")
    proc = subprocess.run(
        launch.command("portable"),
        input=protocol.request(str(folder / "jobs.json"), str(folder / "results.json")),
        env=launch.environment(),
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == protocol.DONE + "\n"
    results = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    assert results["torch_refused"] is True and results["loaded"] == []
    assert results["results"] == [{"ok": True, "count": 1}]
    with np.load(folder / "out.npz") as data:
        return [data[f"out{i}"] for i in range(len(data.files))]
