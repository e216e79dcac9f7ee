"""Everything that runs in another process is a real module under children/, started the one way, speaking
the one protocol, behind the one import blocker."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_jitcpu.children import blocker, launch, protocol

PACKAGE = Path(__file__).resolve().parents[1] / "pytest_jitcpu"


def test_no_program_is_held_in_a_string_and_the_blocker_is_written_once() -> None:
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"""["']-c["']""", text), f"{path}: starts a program held in a string"
        if path.name != "blocker.py":
            assert "meta_path" not in text, f"{path}: an import blocker outside children/blocker.py"


def test_the_protocol_serves_one_batch_per_line_and_answers_done() -> None:
    seen: list[tuple[str, str]] = []
    stdin = io.StringIO(protocol.request("a/jobs", "a/results") + "\n" + protocol.request("b\\jobs", "b r"))
    stdout = io.StringIO()
    protocol.serve(lambda jobs, results: seen.append((jobs, results)), stdin, stdout)
    assert seen == [("a/jobs", "a/results"), ("b\\jobs", "b r")]
    assert stdout.getvalue() == f"{protocol.DONE}\n{protocol.DONE}\n"
    assert protocol.failure(ValueError("bad\nsecond line")) == {"ok": False, "error": "ValueError: bad"}
    assert protocol.failure(KeyError()) == {"ok": False, "error": "KeyError"}


def test_a_child_started_the_one_way_runs_this_package_behind_its_block(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From an unrelated folder and without a PYTHONPATH of the user's, the child imports this very package
    (a checkout included: not the copy an editable install may point elsewhere), and the block holds."""
    monkeypatch.delenv("PYTHONPATH", raising=False)
    env = launch.environment()
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import pytest_jitcpu.children.blocker as b, sys\n"
        "print(b.__file__)\n"
        "b.block(['csv'], 'not here')\n"
        "print(b.refused('csv'), b.refused('shlex'), b.loaded(['csv', 'sys']))\n",
        encoding="utf-8",
    )
    proc = subprocess.run(
        [sys.executable, str(probe)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    where, verdict = proc.stdout.splitlines()
    assert Path(where) == Path(blocker.__file__)
    assert verdict == "True False ['sys']"  # csv is refused, shlex is not; sys was loaded before, and says so
    assert launch.command("portable")[-2:] == ["-m", "pytest_jitcpu.children.portable"]


def test_the_blocker_refuses_with_its_reason() -> None:
    finder = blocker.Blocked(["nonexistent_pkg_xyz"], "a reason")
    with pytest.raises(ImportError, match=r"nonexistent_pkg_xyz\.sub is blocked: a reason"):
        finder.find_spec("nonexistent_pkg_xyz.sub")
    assert finder.find_spec("json") is None
