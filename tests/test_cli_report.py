"""``jitcpu check MODEL --report PATH`` as a user runs it (a subprocess): the same JSON (validated against
the packaged schema) and Markdown as the plugin writes; a report path the plugin would refuse is refused
before the model loads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from inference_models import encoder
from plugin_runs import load_json, schema_errors

from pytest_jitcpu.settings import STATUSES


def jitcpu(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "pytest_jitcpu.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return encoder(tmp_path_factory.mktemp("check-report") / "st")


def test_check_report_writes_the_plugins_json_and_markdown(model: Path, tmp_path: Path) -> None:
    modes = ("eager", "trace-dict", "trace-tuple")
    args = ["check", str(model), "--modes", ",".join(modes), "--dtypes", "fp32", "--examples", "0"]
    proc = jitcpu(*args, "--report", "out/r.json", "--report", "out/deeper/r.md", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "jitcpu check: wrote out/r.json" in proc.stdout and "jitcpu check: wrote out/deeper/r.md" in proc.stdout

    data = load_json(tmp_path / "out" / "r.json")
    assert schema_errors(data) == []
    assert data["task"] == "feature-extraction" and data["model"] == str(model)
    assert [(r["mode"], r["dtype"], r["status"]) for r in data["results"]] == [(m, "fp32", "pass") for m in modes]
    assert data["summary"] == {**{s: (3 if s == "pass" else 0) for s in STATUSES}, "untested": 0}
    (name,) = {r["model"] for r in data["results"]}
    assert all(r["latency_ms"] > 0 for r in data["results"])

    md = (tmp_path / "out" / "deeper" / "r.md").read_text(encoding="utf-8").splitlines()
    assert md[0] == "## pytest-jitcpu compatibility report"
    assert "✅ **no model failing**, 1 passing (3 checks)" in md
    assert "<details><summary>✅ 1 passing model</summary>" in md
    row = next(line for line in md if line.startswith("| ✅ | `jitcpu check"))
    # the model cell names the attention implementation the model runs (every record's attn_implementation)
    assert {r["attn_implementation"] for r in data["results"]} == {"sdpa"}
    assert row.endswith(f"| {name} (sdpa attention) | 3 pass | pass | pass (0) | pass (0) |")
    assert "```mermaid" in md and "xychart-beta" in md


@pytest.mark.parametrize(
    ("report", "message"),
    [
        ("r.txt", "--report: 'r.txt' must end in .json or .md"),
        ("{dir}", "--report: cannot write '{dir}': it is a directory"),
    ],
)
def test_a_report_path_the_plugin_refuses_is_a_usage_error(tmp_path: Path, report: str, message: str) -> None:
    (tmp_path / "adir.json").mkdir()
    path = report.format(dir="adir.json")
    proc = jitcpu("check", "no-such-model-folder", "--report", path, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"jitcpu check: error: {message.format(dir='adir.json')}"]
    assert "Traceback" not in proc.stderr
