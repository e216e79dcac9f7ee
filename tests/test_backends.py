"""The backends table is the one list of modes: what lists modes elsewhere agrees with it, and the table
(with settings) imports without torch, transformers or Hypothesis."""

from __future__ import annotations

import ast
import contextlib
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pytest_jitcpu import backends, environment, settings
from pytest_jitcpu.backends import table
from pytest_jitcpu.inference import selection
from pytest_jitcpu.search import generalize

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "pytest_jitcpu"


def test_every_list_of_modes_derives_from_the_table() -> None:
    names = [b.name for b in table.BACKENDS]
    assert list(settings.MODES) == names and len(set(names)) == len(names)
    assert set(settings.DEFAULT_MODES) <= set(names) and settings.DEFAULT_MODES[0] == "eager"
    assert generalize.SEARCHED_MODES == tuple(b.name for b in table.BACKENDS if b.searched)
    assert set(settings.TRACE_MODES) <= set(table.ROUND_TRIP_MODES)
    assert set(selection.MODE_NAMES.values()) == set(names)
    assert selection.RUN_MODES == ("auto", *(cli for b in table.BACKENDS for cli in b.cli_names))
    assert all(selection.MODE_NAMES[c] in names for c in selection.AUTO_CANDIDATES)
    assert set(selection.NOT_IN_AUTO) & set(selection.AUTO_CANDIDATES) == set()
    versions = environment.versions()
    assert set(versions) == {b.version_key for b in table.BACKENDS if b.version_key}


def test_every_row_has_an_importable_builder() -> None:
    for row in table.BACKENDS:
        assert callable(backends.builder(row.name)), row.name
        if row.package:  # a mode that needs a package says how to install it
            assert row.install and row.import_name and row.version_key, row.name


def _schemas() -> list[Path]:
    """The report schema packaged with pytest_jitcpu (users validate against it)."""
    return sorted(PACKAGE.rglob("*schema*.json"))


@pytest.mark.parametrize("path", _schemas(), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_report_schema_enum_is_the_table(path: Path) -> None:
    record = json.loads(path.read_text(encoding="utf-8"))["$defs"]["record"]
    assert record["properties"]["mode"]["enum"] == list(settings.MODES)


def test_the_readme_modes_table_is_the_table() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("| mode | what runs |\n|---|---|\n", 1)[1].split("\n\n", 1)[0]
    rows = [re.match(r"\| `([^`]+)` \| (.+) \|$", line).groups() for line in block.splitlines()]
    assert rows == [(b.name, b.summary) for b in table.BACKENDS]


def _imports(path: Path) -> set[str]:
    """The modules ``path`` imports at module level, resolved against the package."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    parts = path.relative_to(ROOT).with_suffix("").parts
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            base = ".".join(parts[: len(parts) - node.level]) if node.level else ""
            module = ".".join(p for p in (base, node.module or "") if p)
            found.update([module] if node.module else [f"{module}.{a.name}" for a in node.names])
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def test_a_backend_imports_the_base_and_no_other_backend() -> None:
    folder = PACKAGE / "backends"
    modules = {f"pytest_jitcpu.backends.{row.module}" for row in table.BACKENDS}
    for row in table.BACKENDS:
        imported = _imports(folder / f"{row.module}.py")
        others = {m for m in imported if m.startswith("pytest_jitcpu.backends.")} - {
            "pytest_jitcpu.backends.base",
            "pytest_jitcpu.backends.table",
        }
        assert not others & modules, (row.module, others)
    # The base and the leaf modules the backends use import no backend (no import circle).
    for leaf in (folder / "base.py", PACKAGE / "environment.py", PACKAGE / "inputs.py"):
        assert not _imports(leaf) & modules, leaf


def test_the_table_and_settings_import_nothing_heavy() -> None:
    # The package's __init__ is bypassed (it re-exports the engine): this is about the two modules.
    program = textwrap.dedent(
        f"""
        import importlib.abc, sys, types
        class Blocked(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "transformers", "hypothesis", "numpy"):
                    raise ImportError(name + " is blocked")
        sys.meta_path.insert(0, Blocked())
        package = types.ModuleType("pytest_jitcpu")
        package.__path__ = [{str(PACKAGE)!r}]
        sys.modules["pytest_jitcpu"] = package
        import pytest_jitcpu.settings, pytest_jitcpu.backends.table
        print(",".join(pytest_jitcpu.settings.MODES))
        """
    )
    proc = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ",".join(settings.MODES)


@pytest.mark.parametrize("mode", ["nope", ""])
def test_an_unknown_mode_has_no_row(mode: str) -> None:
    with pytest.raises(KeyError):
        table.backend(mode)


def test_what_a_mode_costs_and_risks_comes_from_its_row() -> None:
    from pytest_jitcpu import hints, isolation

    assert hints.TORCHSCRIPT_MODES == tuple(b.name for b in table.BACKENDS if b.family == "torchscript")
    assert {"trace-dict", "trace-tuple", "ipex"} <= set(hints.TORCHSCRIPT_MODES)
    assert isolation.NOT_WARMED == {b.name for b in table.BACKENDS if b.fork_unsafe_pool or not b.warm_up}
    assert "aoti" in isolation.NOT_WARMED  # its warm-up would be a whole AOTInductor compile
    for row in table.BACKENDS:
        assert selection._build_cost(selection.Candidate(row.name, "fp32", "pass")) == row.build_cost, row.name
    with pytest.raises(ValueError, match="family 'jit'"):
        table.Backend("x", "x", "build", "x", cli_names=("x",), family="jit")


@pytest.mark.parametrize(
    ("raised", "recorded"),
    [(None, True), (backends.base.Fallback("conversion failed"), True), (backends.base.Unavailable("no"), False)],
)
def test_a_mode_whose_pool_does_not_survive_a_fork_is_recorded_by_the_one_build(
    monkeypatch: pytest.MonkeyPatch, raised: Exception | None, recorded: bool
) -> None:
    """Building a mode whose row names a fork-unsafe pool records it (isolation stops forking), also when
    the build fell back half-way; a mode that was unavailable started nothing."""
    row = next(b for b in table.BACKENDS if b.fork_unsafe_pool)

    def fake(model: object, inputs: object, dtype: str, domain: object = None) -> backends.base.Built:
        if raised is not None:
            raise raised
        return backends.base.Built(row.name, dtype, lambda batch: None)

    monkeypatch.setattr(backends, "builder", lambda mode: fake)
    before = set(backends.base.FORK_UNSAFE_POOLS)
    backends.base.FORK_UNSAFE_POOLS.clear()
    try:
        with pytest.raises(type(raised)) if raised is not None else contextlib.nullcontext():
            backends.build(row.name, None, None, "fp32")
        assert (row.fork_unsafe_pool in backends.base.FORK_UNSAFE_POOLS) is recorded
        backends.base.FORK_UNSAFE_POOLS.clear()
        monkeypatch.setattr(backends, "builder", lambda mode: lambda m, i, d: backends.base.Built("eager", d, id))
        backends.build("eager", None, None, "fp32")
        assert not backends.base.FORK_UNSAFE_POOLS
    finally:
        backends.base.FORK_UNSAFE_POOLS.clear()
        backends.base.FORK_UNSAFE_POOLS.update(before)
