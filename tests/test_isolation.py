"""A model that kills the interpreter is an ``error`` record, not the end of the session (issue 9); a
session that dies anyway leaves the records of the tests that ran (journal and partial report)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from plugin_runs import load_json, outcomes, records_by_test, run, schema_errors, without_timing

from pytest_jitcpu import isolation
from pytest_jitcpu.reports import journal

CRASHERS = """
import ctypes
import os
import signal

import torch
import tiny_models as tm


class Crashes(torch.nn.Module):
    \"\"\"Kills the interpreter when traced ("trace"), or on an input of another batch size than the
    example's, i.e. a generated one ("generated").\"\"\"

    def __init__(self, when, how):
        super().__init__()
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(4, 4)
        self.when, self.how = when, how

    def forward(self, x):
        if (
            self.when == "always"
            or (self.when == "trace" and torch.jit.is_tracing())
            or (self.when == "generated" and x.shape[0] != 2)
        ):
            if self.how == "segv":
                os.kill(os.getpid(), signal.SIGSEGV)
            elif self.how == "null":
                ctypes.string_at(0)
            elif self.how == "abort":
                os.abort()
            else:
                os._exit(3)
        return self.lin(x)


def test_before(jitcpu):
    jitcpu.check(tm.TinyMLP(), {"x": tm.features()})


def test_segv_when_traced(jitcpu):
    jitcpu.check(Crashes("trace", "segv"), {"x": tm.features()})


def test_null_pointer_on_a_generated_input(jitcpu):
    jitcpu.check(Crashes("generated", "null"), {"x": tm.features()})


def test_exit_when_traced(jitcpu):
    jitcpu.check(Crashes("trace", "exit"), {"x": tm.features()})


def test_abort_in_eager(jitcpu):
    jitcpu.check(Crashes("always", "abort"), {"x": tm.features()})


def test_after(jitcpu):
    jitcpu.check(tm.TinyText(), tm.text_batch())
"""

OUTCOMES = {
    "test_before": "PASSED",
    "test_segv_when_traced": "FAILED",
    "test_null_pointer_on_a_generated_input": "FAILED",
    "test_exit_when_traced": "FAILED",
    "test_abort_in_eager": "FAILED",
    "test_after": "PASSED",
}
ARGS = ("--jitcpu-dtypes=fp32", "--jitcpu-examples=3", "--jitcpu-serialize=false", "-rA")
FAST_ARGS = ("-p", "no:cacheprovider", "--jitcpu-dtypes=fp32", "--jitcpu-examples=3", "--jitcpu-serialize=false")


def test_a_crash_in_a_check_is_an_error_record_and_the_session_goes_on(jitcpu_pytester: pytest.Pytester) -> None:
    """Under xdist (``-n 2``) and without: the same records."""
    jitcpu_pytester.makepyfile(test_crashers=CRASHERS)
    serial = run(jitcpu_pytester, *ARGS, "--jitcpu-report=out/s.json", fast=False)
    assert outcomes(serial) == OUTCOMES
    result = run(jitcpu_pytester, *ARGS, "-n", "2", "--jitcpu-report=out/r.json", "--junitxml=out/j.xml", fast=False)
    assert outcomes(result) == OUTCOMES
    result.stdout.no_fnmatch_line("*node down*")  # under xdist, no worker died: the child did
    data = load_json(jitcpu_pytester.path / "out" / "r.json")
    assert schema_errors(data) == [] and data["complete"] is True
    by_test = records_by_test(data)
    assert set(by_test) == set(OUTCOMES), "every test that ran has its records"
    reasons = {name: {r["mode"]: (r["status"], r["reason"]) for r in recs} for name, recs in by_test.items()}
    for mode in ("trace-dict", "trace-tuple"):
        status, reason = reasons["test_segv_when_traced"][mode]
        assert status == "error"
        assert reason.startswith(f"crashed: signal 11 (SIGSEGV) while building {mode}/fp32 (at test_crashers.py:")
        assert reason.endswith(" in forward)"), "the model's own line, from faulthandler"
        status, reason = reasons["test_null_pointer_on_a_generated_input"][mode]
        assert status == "error"
        assert reason.startswith(
            f"crashed: signal 11 (SIGSEGV) while running {mode}/fp32 on generated inputs (divergence search)"
        ), reason
        assert reasons["test_exit_when_traced"][mode] == (
            "error",
            f"crashed: exited with code 3 while building {mode}/fp32",
        )
    aborted = "crashed: signal 6 (SIGABRT) while running the eager reference (at test_crashers.py:"
    assert reasons["test_abort_in_eager"]["eager"][0] == "error"
    assert reasons["test_abort_in_eager"]["eager"][1].startswith(aborted)
    for mode in ("trace-dict", "trace-tuple"):
        status, reason = reasons["test_abort_in_eager"][mode]
        assert status == "error" and reason.startswith("not run: the eager reference " + aborted), reason
    for name in set(OUTCOMES) - {"test_abort_in_eager"}:
        assert reasons[name]["eager"][0] == "pass", "eager ran before the crash and keeps its record"
    assert {s for s, _ in reasons["test_after"].values()} == {"pass"}
    cases = ET.parse(jitcpu_pytester.path / "out" / "j.xml").getroot().iter("testcase")
    junit = {case.get("name"): [child.tag for child in case] for case in cases}
    assert set(junit) == set(OUTCOMES), "the JUnit XML has every test"
    assert {name for name, tags in junit.items() if "failure" in tags} == {
        n for n, outcome in OUTCOMES.items() if outcome == "FAILED"
    }
    assert not (jitcpu_pytester.path / "out" / "r.json.journal").exists(), "a finished session removes its journal"
    assert without_timing(load_json(jitcpu_pytester.path / "out" / "s.json")) == without_timing(data)


PIDS = """
import os

import tiny_models as tm


def test_pid(jitcpu):
    with open("test.pid", "w") as f:
        f.write(str(os.getpid()))
    jitcpu.check(tm.RecordsPid("isolated.pids"), {"x": tm.features()})
    jitcpu.check(tm.RecordsPid("in_process.pids"), {"x": tm.features()}, isolate="false")
"""


def test_a_check_runs_in_one_forked_child_unless_isolate_is_off(jitcpu_pytester: pytest.Pytester) -> None:
    jitcpu_pytester.makepyfile(test_pids=PIDS)
    result = run(jitcpu_pytester, "--jitcpu-dtypes=fp32", "-rA")
    assert outcomes(result) == {"test_pid": "PASSED"}
    test_pid = int((jitcpu_pytester.path / "test.pid").read_text())
    isolated = _pids(jitcpu_pytester.path / "isolated.pids")
    assert test_pid not in isolated and len(isolated) == 1, "the model ran in one forked child"
    assert _pids(jitcpu_pytester.path / "in_process.pids") == {test_pid}


def _pids(path: Path) -> set[int]:
    """The process ids a tiny_models.RecordsPid wrote, one a line."""
    return {int(p) for p in path.read_text().split()}


def test_bad_isolate_value_is_a_usage_error(jitcpu_pytester: pytest.Pytester) -> None:
    result = jitcpu_pytester.runpytest_subprocess("--jitcpu-isolate=maybe")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--jitcpu-isolate*maybe*not a boolean*"])


KILLED = """
import os
import signal

import tiny_models as tm


def test_a(jitcpu):
    jitcpu.check(tm.TinyMLP(), {"x": tm.features()})


def test_b(jitcpu):
    jitcpu.check(tm.TinyText(), tm.text_batch())


def test_killed():
    os.kill(os.getpid(), signal.SIGKILL)


def test_never_runs(jitcpu):
    jitcpu.check(tm.TinyMLP(), {"x": tm.features()})
"""


def test_a_killed_session_leaves_the_records_of_the_tests_that_ran(jitcpu_pytester: pytest.Pytester) -> None:
    jitcpu_pytester.makepyfile(test_killed=KILLED)
    # -p no:randomly keeps file order; the session itself is killed, so no INTERNALERROR check applies
    result = jitcpu_pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--jitcpu-dtypes=fp32", "--jitcpu-examples=0", "--jitcpu-report=out/r.json"
    )
    assert result.ret == -9, "the session was killed (SIGKILL)"
    expected = {("test_a", "TinyMLP"), ("test_b", "TinyText")}
    records = journal.read(jitcpu_pytester.path / "out" / "r.json.journal")
    assert {(r.nodeid.split("::")[1], r.model) for r in records} == expected
    assert len(records) == 6 and {r.status for r in records} == {"pass"}
    partial = load_json(jitcpu_pytester.path / "out" / "r.json")  # rewritten as tests finished, whole
    assert schema_errors(partial) == [] and partial["complete"] is False
    assert {(r["nodeid"].split("::")[1], r["model"]) for r in partial["results"]} == expected
    assert sorted(os.listdir(jitcpu_pytester.path / "out")) == ["r.json", "r.json.journal"], "no temporary files"


def test_crash_reasons_name_the_signal_and_the_frame() -> None:
    assert isolation._how(11) == "signal 11 (SIGSEGV)"  # a wait status: killed by signal 11
    assert isolation._how(3 << 8) == "exited with code 3"
    dump = (
        "Fatal Python error: Segmentation fault\n\nCurrent thread 0x01 (most recent call first):\n"
        f'  File "{os.path.dirname(json.__file__)}/__init__.py", line 519 in string_at\n'
        '  File "/tmp/x/test_model.py", line 12 in forward\n'
    )
    assert isolation._innermost(dump) == "test_model.py:12 in forward"


THREADS = """
import torch
import tiny_models as tm


def test_after_openmp_threads_ran(jitcpu):
    torch.set_num_threads(2)
    a = torch.randn(512, 512)
    for _ in range(3):
        a @ a  # the parent's OpenMP pool is up: a parallel region in a forked child would wait for it forever
    result = jitcpu.check(tm.TinyText(), tm.text_batch(batch=4, length=64))
    assert all("forked child with 1 thread" in " ".join(r.notes) for r in result), [r.notes for r in result]
"""


def test_a_session_with_openmp_threads_checks_in_a_one_thread_child(
    jitcpu_pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    jitcpu_pytester.makepyfile(test_threads=THREADS)
    result = jitcpu_pytester.runpytest_subprocess(*FAST_ARGS, "-rA", timeout=300)  # a hang fails, not blocks
    assert outcomes(result) == {"test_after_openmp_threads_ran": "PASSED"}


BACKEND_CRASHERS = """
import os
import signal

import torch
import tiny_models as tm


class CrashesWhenConverted(torch.nn.Module):
    \"\"\"Kills the interpreter when export, compile, the ONNX exporter or OpenVINO's converter (TorchScript
    underneath) runs forward(); eager runs it fine.\"\"\"

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(4, 4)

    def forward(self, x):
        if torch.compiler.is_compiling() or torch.compiler.is_exporting() or torch.jit.is_tracing():
            os.kill(os.getpid(), signal.SIGSEGV)
        return self.lin(x)


def test_crashes(jitcpu):
    jitcpu.check(CrashesWhenConverted(), {"x": tm.features()})


def test_after(jitcpu):
    jitcpu.check(tm.TinyMLP(), {"x": tm.features()})
"""
BACKEND_MODES = ("export", "compile", "onnx", "openvino")


def test_a_crash_in_export_compile_onnx_or_openvino_is_an_error_record(jitcpu_pytester: pytest.Pytester) -> None:
    jitcpu_pytester.makepyfile(test_backend_crashers=BACKEND_CRASHERS)
    modes = ",".join(("eager", *BACKEND_MODES))
    result = run(jitcpu_pytester, *ARGS, f"--jitcpu-modes={modes}", "--jitcpu-report=r.json", fast=False)
    assert outcomes(result) == {"test_crashes": "FAILED", "test_after": "PASSED"}
    by_test = records_by_test(load_json(jitcpu_pytester.path / "r.json"))
    crashed = {r["mode"]: (r["status"], r["reason"]) for r in by_test["test_crashes"]}
    assert crashed.pop("eager")[0] == "pass"
    for mode in BACKEND_MODES:
        status, reason = crashed[mode]
        assert status == "error" and reason.startswith(f"crashed: signal 11 (SIGSEGV) while building {mode}/fp32")
    after = by_test["test_after"]
    assert {r["mode"] for r in after} == {"eager", *BACKEND_MODES} and {r["status"] for r in after} == {"pass"}
    assert not any("not crash-isolated" in n for r in after for n in r["notes"])


OPENVINO_IN_PARENT = """
import os

import tiny_models as tm


def test_1_isolated(jitcpu):
    jitcpu.check(tm.RecordsPid("first.pids"), {"x": tm.features()}, modes=["eager", "onnx", "openvino"])


def test_2_openvino_in_process(jitcpu):
    jitcpu.check(tm.TinyMLP(), {"x": tm.features()}, modes=["eager", "openvino"], isolate="false")


def test_3_after(jitcpu):
    with open("test.pid", "w") as f:
        f.write(str(os.getpid()))
    jitcpu.check(tm.RecordsPid("after.pids"), {"x": tm.features()}, modes=["eager", "onnx"])
"""


def test_after_openvino_ran_in_the_session_process_checks_run_there_and_say_so(
    jitcpu_pytester: pytest.Pytester,
) -> None:
    """A child forked after OpenVINO's thread pool started deadlocked: the session stops forking, loudly."""
    jitcpu_pytester.makepyfile(test_openvino_parent=OPENVINO_IN_PARENT)
    result = jitcpu_pytester.runpytest_subprocess(
        *FAST_ARGS, "-p", "no:randomly", "-rA", "--jitcpu-report=r.json", timeout=300
    )
    assert set(outcomes(result).values()) == {"PASSED"} and len(outcomes(result)) == 3
    test_pid = int((jitcpu_pytester.path / "test.pid").read_text())
    pids = {name: _pids(jitcpu_pytester.path / name) for name in ("first.pids", "after.pids")}
    assert test_pid not in pids["first.pids"], "before OpenVINO ran in the session process, checks forked"
    assert pids["after.pids"] == {test_pid}, "after it, they ran in the session process"
    by_test = records_by_test(load_json(jitcpu_pytester.path / "r.json"))
    note = (
        "not crash-isolated: OpenVINO ran a model in this process earlier, and its thread pool does not survive "
        "a fork; a crash here ends the session"
    )
    assert all(note in r["notes"] for r in by_test["test_3_after"])
    assert not any(note in r["notes"] for r in by_test["test_1_isolated"])


API_CRASH = """
import os
import signal

import torch

import pytest_jitcpu


class Crashes(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)

    def forward(self, x):
        if torch.jit.is_tracing():
            os.kill(os.getpid(), signal.SIGSEGV)
        return self.lin(x)


result = pytest_jitcpu.check(Crashes(), {"x": torch.ones(2, 4)}, modes=["eager", "trace-dict"], dtypes=["fp32"], isolate=True)
for r in result.records:
    print(r.mode, r.status, r.reason)
print("still alive")
"""


def test_the_python_api_isolates_when_asked(tmp_path: Path) -> None:
    script = tmp_path / "api_crash.py"
    script.write_text(API_CRASH, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert lines[0] == "eager pass None"
    assert lines[1].startswith("trace-dict error crashed: signal 11 (SIGSEGV) while building trace-dict/fp32")
    assert lines[-1] == "still alive"


HANGS = """
import threading

import torch
import tiny_models as tm


class HangsWhenTraced(torch.nn.Module):
    \"\"\"Waits forever on a lock it holds when traced (as a child waiting for a thread the fork did not copy).\"\"\"

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(4, 4)
        self.lock = threading.Lock()

    def forward(self, x):
        if torch.jit.is_tracing():
            self.lock.acquire()
            self.lock.acquire()
        return self.lin(x)


def test_hangs(jitcpu):
    jitcpu.check(HangsWhenTraced(), {"x": tm.features()}, modes=["eager", "trace-dict"])


def test_after(jitcpu):
    jitcpu.check(tm.TinyMLP(), {"x": tm.features()}, modes=["eager", "trace-dict"])
"""


def test_a_check_that_hangs_is_killed_after_the_timeout_and_is_an_error_record(
    jitcpu_pytester: pytest.Pytester,
) -> None:
    jitcpu_pytester.makepyfile(test_hangs=HANGS)
    result = run(jitcpu_pytester, *ARGS, "--jitcpu-timeout=8", "--jitcpu-report=r.json", fast=False)
    assert outcomes(result) == {"test_hangs": "FAILED", "test_after": "PASSED"}
    by_test = records_by_test(load_json(jitcpu_pytester.path / "r.json"))
    hung = {r["mode"]: r for r in by_test["test_hangs"]}
    assert hung["eager"]["status"] == "pass"
    assert hung["trace-dict"]["status"] == "error"
    reason = hung["trace-dict"]["reason"]
    assert reason.startswith("hung: no progress for 8 s, killed while building trace-dict/fp32"), reason
    assert reason.endswith(" in forward)"), "where it waited, from faulthandler: the model's own line"
    assert {r["status"] for r in by_test["test_after"]} == {"pass"}


@pytest.mark.parametrize("value", ["soon", "-1", "inf"])
def test_bad_timeout_value_is_a_usage_error(jitcpu_pytester: pytest.Pytester, value: str) -> None:
    result = jitcpu_pytester.runpytest_subprocess(f"--jitcpu-timeout={value}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*--jitcpu-timeout*{value}*seconds*"])


GC_FROZEN = """
import gc
import os
import sys

import torch
import pytest_jitcpu


class RecordsFrozen(torch.nn.Module):
    \"\"\"Writes how many objects the garbage collector leaves alone (frozen) in the process that runs it.\"\"\"

    def __init__(self, path):
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)
        self.path = path

    def forward(self, x):
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(f"{os.getpid()} {gc.get_freeze_count()}\\n")
        return self.lin(x)


log = sys.argv[1]
pytest_jitcpu.check(RecordsFrozen(log), {"x": torch.ones(2, 4)}, modes=["eager"], dtypes=["fp32"], isolate=True)
print(os.getpid(), gc.get_freeze_count(), gc.isenabled())
"""


def test_a_child_leaves_the_parents_objects_to_the_parent_and_the_parent_is_not_left_frozen(tmp_path: Path) -> None:
    """The child's collections skip the objects it inherited (gc.freeze before the fork: a collection
    that walked them would copy the parent's heap page by page); the parent unfreezes them at once."""
    script, log = tmp_path / "gc_frozen.py", tmp_path / "frozen.log"
    script.write_text(GC_FROZEN, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(script), str(log)], capture_output=True, text=True, timeout=300, cwd=tmp_path, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    parent, parent_frozen, enabled = done.stdout.split()
    assert (parent_frozen, enabled) == ("0", "True")
    runs = [line.split() for line in log.read_text(encoding="utf-8").splitlines()]
    assert runs, "the model never ran"
    assert all(pid != parent for pid, _ in runs)  # it ran in the child only
    assert all(int(frozen) > 1000 for _, frozen in runs)  # with torch's objects frozen there
