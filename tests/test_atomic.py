"""Whole-file writes never leave half a file: temp + rename (``pytest_jitcpu.atomic``), for reports,
``--summary`` and ``jitcpu run``'s outputs. Failure injection: the rename or the write fails."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from pytest_jitcpu import atomic, reports
from pytest_jitcpu.inference import writers
from pytest_jitcpu.record import Record

ENV = {"python": "3", "torch": "x", "transformers": None, "ipex": None, "cpu": "c", "isa": "i", "threads": 1}


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith((".part", ".raw")))


def test_write_text_replaces_whole_and_keeps_permissions(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "r.json"
    atomic.write_text(target, "one")
    assert target.read_text() == "one"
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~_umask()  # as open() would, not mkstemp's 0600
    os.chmod(target, 0o640)
    atomic.write_text(target, "two")
    assert target.read_text() == "two" and stat.S_IMODE(target.stat().st_mode) == 0o640
    assert _leftovers(target.parent) == []


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.parametrize("suffix", [".json", ".md"])
def test_a_report_write_that_fails_leaves_the_old_report(tmp_path: Path, monkeypatch, suffix: str) -> None:
    path = tmp_path / f"report{suffix}"
    records = [Record("t.py::t", "M", "eager", "fp32", "pass")]
    reports.write(path, records, ENV)
    before = path.read_bytes()

    def fail(*_args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "replace", fail)
    with pytest.raises(OSError, match="No space left"):
        reports.write(path, records * 2, ENV)
    assert path.read_bytes() == before and _leftovers(tmp_path) == []


def test_an_interrupted_write_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "s.json"
    with pytest.raises(KeyboardInterrupt), atomic.replacing(target) as handle:
        handle.write("half")
        raise KeyboardInterrupt
    assert not target.exists() and _leftovers(tmp_path) == []


@pytest.mark.parametrize("name", ["out.jsonl", "out.npy"])
def test_an_aborted_or_failed_run_output_keeps_the_previous_file(tmp_path: Path, monkeypatch, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"previous run")
    writer = writers.open_writer(path, "feature-extraction")
    writer.write({"embedding": [1.0, 2.0]})
    writer.abort()
    assert path.read_bytes() == b"previous run" and _leftovers(tmp_path) == []

    writer = writers.open_writer(path, "feature-extraction")
    writer.write({"embedding": [1.0, 2.0]})
    monkeypatch.setattr(atomic.os, "fsync", lambda _fd: (_ for _ in ()).throw(OSError(5, "I/O error")))
    with pytest.raises(OSError, match="I/O error"):
        writer.close()
    assert path.read_bytes() == b"previous run" and _leftovers(tmp_path) == []


def test_a_run_output_is_complete_once_renamed(tmp_path: Path) -> None:
    import numpy as np

    path = tmp_path / "out.npy"
    writer = writers.open_writer(path, "feature-extraction")
    assert not path.exists()  # nothing under the real name while rows arrive
    for i in range(5):
        writer.write({"embedding": [float(i), 1.0]})
    writer.close()
    np.testing.assert_array_equal(np.load(path)[:, 0], np.arange(5, dtype=np.float32))
    assert _leftovers(tmp_path) == []
