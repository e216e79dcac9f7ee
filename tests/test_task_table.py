"""The task table is the one list of `jitcpu run` tasks: loading, rows, outputs, samples and the command
line read it, and reading it imports nothing heavy."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_jitcpu.inference import check, models, rows, task_table, tasks, writers
from pytest_jitcpu.settings import UsageError


def test_every_list_of_tasks_derives_from_the_table() -> None:
    from pytest_jitcpu import inference

    names = [t.name for t in task_table.TASKS_TABLE]
    assert list(task_table.TASKS) == names and len(set(names)) == len(names)
    assert inference.TASKS == task_table.TASKS == models.TASKS
    assert task_table.DEFAULT_TASK in names
    for row in task_table.TASKS_TABLE:
        cls = tasks.task_class(row.name)
        assert issubclass(cls, tasks.Task) and cls.name == row.name
        assert row.head in models._HEAD_WRAPPERS
        assert set(row.fields) | set(row.optional_fields) <= {f.name for f in dataclasses.fields(rows.Row)}
        for suffix in row.architectures:
            assert task_table.HEADS[suffix] == row.name
        assert rows.from_iterable(list(row.samples)[:2], row.name)  # its samples are rows of its own kind
        assert all(r.ok for r in check.sample_rows(row.name, None, None, 3))


def test_the_ray_schema_is_the_table() -> None:
    pytest.importorskip("ray.data")
    from pytest_jitcpu.inference import raydata

    for row in task_table.TASKS_TABLE:
        assert [name for name, _ in raydata.TASK_COLUMNS[row.name]] == [name for name, _ in row.columns]
    assert set(task_table.ROW_FIELDS) <= set(raydata._READ_COLUMNS)


@pytest.mark.parametrize("row", task_table.TASKS_TABLE, ids=lambda r: r.name)
def test_a_task_s_row_decides_what_a_row_must_give(row: task_table.TaskRow) -> None:
    line = rows.from_text(0, 1, "a sentence", row.name)
    if row.plain_text:
        assert line.ok and line.text == "a sentence"
    else:
        assert line.error == f"{row.label} needs {' and '.join('a ' + f for f in row.fields)}: give JSONL or CSV rows"
    given = {name: f"value of {name}" for name in (*row.fields, *row.optional_fields)}
    parsed = rows.from_mapping(0, 1, {**given, "other": "x"}, row.name)
    assert parsed.ok
    assert {name: getattr(parsed, name) for name in given} == given
    missing = rows.from_mapping(0, 1, {k: v for k, v in given.items() if k != row.fields[-1]}, row.name)
    assert not missing.ok and row.fields[-1] in (missing.error or "")


@pytest.mark.parametrize("row", task_table.TASKS_TABLE, ids=lambda r: r.name)
def test_a_task_s_row_decides_whether_it_can_be_written_as_npy(row: task_table.TaskRow, tmp_path: Path) -> None:
    if row.npy_column:
        writer = writers.open_writer(tmp_path / "out.npy", row.name)
        writer.write({row.npy_column: [1.0, 2.0]})
        writer.close()
        import numpy as np

        assert np.load(tmp_path / "out.npy").tolist() == [[1.0, 2.0]]
    else:
        with pytest.raises(UsageError, match=rf"\.npy is for .*; write {row.name} results as \.jsonl"):
            writers.open_writer(tmp_path / "out.npy", row.name)


def test_a_row_with_an_unknown_column_type_or_field_is_refused() -> None:
    base = task_table.task_row("text-classification")
    with pytest.raises(ValueError, match="unknown column types"):
        dataclasses.replace(base, columns=(("label", "decimal"),))
    with pytest.raises(ValueError, match="row fields"):
        dataclasses.replace(base, fields=("image",))


def test_the_table_and_the_command_line_s_parser_import_nothing_heavy() -> None:
    program = (
        "import sys\n"
        "from pytest_jitcpu import cli\n"
        "from pytest_jitcpu.inference import task_table\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'numpy', 'pyarrow') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    proc = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""
    helped = subprocess.run(
        [sys.executable, "-m", "pytest_jitcpu.cli", "run", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    text = re.sub(r"-\s+", "-", " ".join(helped.stdout.split()))  # argparse wraps after a hyphen
    assert f"{', '.join(task_table.TASKS[:-1])} or {task_table.TASKS[-1]}" in text
