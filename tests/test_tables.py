"""The statuses table and the report writers' table are the only lists: the schema, the reports and the
settings read them; the report formats are a layer (each imports the model, none another format)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_jitcpu import reports, settings, statuses
from pytest_jitcpu.record import Record
from pytest_jitcpu.reports import baseline, html, markdown, model, schema, terminal, writers
from pytest_jitcpu.reports import json as json_report

PACKAGE = Path(__file__).resolve().parents[1] / "pytest_jitcpu"
ENV = {"python": "3", "torch": "t", "transformers": None, "ipex": None, "cpu": "c", "isa": "a", "threads": 1}


def _rec(status: str, mode: str = "trace-dict") -> Record:
    return Record("t.py::t", "M", mode, "fp32", status, reason=None if status == "pass" else "why")


def test_every_list_of_statuses_is_the_table() -> None:
    names = [s.name for s in statuses.TABLE]
    assert list(settings.STATUSES) == names and len(set(names)) == len(names)
    assert settings.FAILING_STATUSES == {s.name for s in statuses.TABLE if s.fails}
    import pytest_jitcpu

    assert pytest_jitcpu.STATUSES == statuses.STATUSES
    assert list(model.summary([])) == [*names, "untested"]
    record = schema.json_schema()["$defs"]["record"]
    assert record["properties"]["status"]["enum"] == names
    assert record["properties"]["mode"]["enum"] == list(settings.MODES)
    assert record["properties"]["dtype"]["enum"] == list(settings.DTYPES)
    assert set(schema.json_schema()["properties"]["summary"]["required"]) == set(names)
    for s in statuses.TABLE:
        rec = _rec(s.name)
        assert rec.failed is s.fails
        assert terminal.cell(rec) == s.cell
        assert s.colour in html.check_table([rec])
        assert baseline.RANK.get(s.name) == s.rank


def test_the_shipped_schema_file_is_the_generated_one() -> None:
    """Users' tools read the file; it must say what the tables say (rewrite: python -m pytest_jitcpu.reports.schema)."""
    shipped = json.loads(schema.FILE.read_text(encoding="utf-8"))
    assert shipped == reports.json_schema()


def test_the_schema_command_writes_what_the_tables_say(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "report_schema.json"
    monkeypatch.setattr(schema, "FILE", target)
    assert schema.main() == 0
    assert json.loads(target.read_text(encoding="utf-8")) == schema.json_schema()


@pytest.mark.parametrize("status", statuses.STATUSES)
def test_a_status_s_row_decides_the_markdown_sign_and_the_baseline(status: str) -> None:
    row = statuses.status(status)
    (found,) = model.models([_rec("pass", "eager"), _rec(status)])
    assert found.sign == row.sign
    outcome = baseline.compare([_rec("pass")], [_rec(status)])
    kinds = {c.kind for c in outcome.changes}
    if status == "pass":
        assert not kinds
    elif row.rank is None:
        assert kinds == {"environment"}
    else:
        assert kinds == ({"regression"} if row.rank > 0 else set())


def test_the_writer_table_decides_the_format_by_suffix(tmp_path: Path) -> None:
    records = [_rec("pass", "eager"), _rec("mismatch")]
    for row in writers.WRITERS:
        path = tmp_path / f"r{row.suffix}"
        written = writers.write(path, records, ENV)
        assert written == path
        module = __import__(f"pytest_jitcpu.reports.{row.module}", fromlist=["render"])
        assert path.read_text(encoding="utf-8") == module.render(records, ENV)
    assert json_report.load(tmp_path / "r.json")["summary"]["mismatch"] == 1
    assert "## pytest-jitcpu compatibility report" in (tmp_path / "r.md").read_text(encoding="utf-8")
    assert writers.path_problem(tmp_path / "r.txt") == f"{str(tmp_path / 'r.txt')!r} must end in .json or .md"
    with pytest.raises(ValueError, match="must end in"):
        writers.write(tmp_path / "r.txt", records, ENV)
    assert not (tmp_path / "r.txt").exists()
    assert writers.journal_next_to(["a.md", "b.json", "c.json"]) == "b.json"
    assert writers.journal_next_to(["a.md"]) == "a.md"
    assert writers.journal_next_to([]) is None


def test_the_baseline_section_is_written_by_the_markdown_writer() -> None:
    before = Record("t.py::t", "M|N", "trace-dict", "fp32", "pass")
    outcome = baseline.compare([before], [Record("t.py::t", "M|N", "trace-dict", "fp32", "mismatch", reason="a|b")])
    lines = outcome.markdown.splitlines()
    table = [line for line in lines if line.startswith("|")]
    header = ["change", "test", "model", "mode", "dtype", "baseline", "now", "detail"]
    row = ["**regression**", "`t.py::t`", markdown.escape("M|N"), "trace-dict", "fp32", "pass", "mismatch", "a\\|b"]
    assert table == markdown.table(header, [row])


def _imports(path: Path) -> set[str]:
    """Every pytest_jitcpu module ``path`` imports (at any depth of the file), resolved."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = (*parts[:-1], "")
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = ".".join(parts[: len(parts) - node.level]) if node.level else ""
            module = ".".join(p for p in (base, node.module or "") if p)
            found.update([module] if node.module else [f"{module}.{a.name}" for a in node.names])
            found.update(f"{module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m.startswith("pytest_jitcpu")}


def test_report_formats_import_the_model_and_no_other_format() -> None:
    formats = {f"pytest_jitcpu.reports.{w.module}" for w in writers.WRITERS} | {
        "pytest_jitcpu.reports.terminal",
        "pytest_jitcpu.reports.html",
    }
    for name in formats:
        imported = _imports(PACKAGE / "reports" / f"{name.rsplit('.', 1)[1]}.py")
        assert not (imported & formats) - {name}, (name, imported & formats)
        assert "pytest_jitcpu.reports.model" in imported, name
    # the baseline writes its Markdown with the Markdown writer, the model knows no format
    assert "pytest_jitcpu.reports.markdown" in _imports(PACKAGE / "reports" / "baseline.py")
    assert not _imports(PACKAGE / "reports" / "model.py") & formats


def test_the_reports_layer_imports_nothing_heavy() -> None:
    program = (
        "import sys\n"
        "import pytest_jitcpu.reports, pytest_jitcpu.reports.baseline, pytest_jitcpu.reports.terminal\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'hypothesis', 'numpy') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    proc = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""
