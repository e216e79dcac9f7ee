"""Serialization round trip: does a traced program run without the Python model code?

For a trace mode that passed, :func:`check` saves the module with ``torch.jit.save``; a fresh Python
process (:mod:`pytest_jitcpu.children.torchscript`: same interpreter and environment, working directory
a temporary folder) in which importing ``transformers`` raises ImportError loads it with
``torch.jit.load``, runs it on the example inputs (in the record's precision) and saves the outputs; the parent compares them with what the module gave
in-process, using the check's tolerance. The record gets ``serializable`` (true/false) and
``serializable_reason``. This never changes the record's ``status``: a trace can be correct in-process
and still not survive a round trip, and the report says so separately.

A subprocess costs the child's ``import torch`` (2-3 s), so one child serves the whole session (one per
xdist worker), and every round trip of one ``check`` call goes to it in one batch: the engine wraps a
check in :func:`batched`, and :func:`check` only queues the work.

A program that runs without torch (``onnx``, ``openvino``: :class:`~.backends.base.Portable`) is saved
by its backend (``.onnx``, OpenVINO IR) with its inputs as ``.npz``, and run by its own runtime in a fresh
Python (:mod:`pytest_jitcpu.children.portable`) that refuses to import torch and transformers;
its outputs come back as ``.npz`` and are compared the same way. One such child per ``check`` call. An
``aoti`` package (also a ``Portable``) goes the same way to :mod:`pytest_jitcpu.children.aoti`, which has
torch but refuses transformers and the model's module.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .backends.base import Built, captured_warnings, first_line
from .backends.table import backend
from .children import launch, protocol
from .compare import Tolerance, compare
from .inputs import Inputs, as_positional
from .record import Record

TIMEOUT_S = 600
RUNS = 3  # as in-process: TorchScript's profiling executor optimizes on later runs


@dataclass
class _Job:
    rec: Record
    path: Path
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    expected: Any
    tolerance: Tolerance


@dataclass
class _PortableJob:
    rec: Record
    built: Built
    expected: Any
    tolerance: Tolerance
    spec: dict[str, Any]  # what the child reads: runtime, file, inputs, options


class _Batch:
    """Round trips queued during one ``check`` call; run together in one subprocess."""

    def __init__(self) -> None:
        self.jobs: list[_Job] = []
        self.portable: list[_PortableJob] = []
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def folder(self) -> Path:
        if self._dir is None:
            self._dir = tempfile.TemporaryDirectory(prefix="jitcpu-serialize-")
        return Path(self._dir.name)

    def run(self) -> None:
        try:
            if self.jobs:
                run_jobs(self.jobs, self.folder)
            if self.portable:
                run_portable(self.portable, self.folder)
        except Exception as exc:  # noqa: BLE001 - a bug here must not fail the check it reports on
            for job in [*self.jobs, *self.portable]:
                if job.rec.serializable is None and job.rec.serializable_reason is None:
                    job.rec.serializable, job.rec.serializable_reason = None, f"not checked: {first_line(exc)}"
        finally:
            if self._dir is not None:
                self._dir.cleanup()


_BATCH: ContextVar[_Batch | None] = ContextVar("jitcpu_serialize_batch", default=None)


@contextlib.contextmanager
def batched() -> Iterator[None]:
    """Queue the round trips of the checks inside; run them in one subprocess at the end. Nested uses
    join the outermost batch (e.g. a test wrapping several checks pays for one subprocess)."""
    if _BATCH.get() is not None:
        yield
        return
    batch = _Batch()
    token = _BATCH.set(batch)
    try:
        yield
    finally:
        _BATCH.reset(token)
        batch.run()


def _call_arguments(built: Built, batch: Inputs, model: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The arguments the traced module takes: by name from its schema (dict inputs), by position (tuple
    inputs, or a dict that skips a parameter with a tensor default, as trace-tuple fills it)."""
    if not batch.is_dict:
        return tuple(batch.args), {}
    names = [a.name for a in built.module.forward.schema.arguments][1:]  # [0] is self
    missing = [n for n in names if n not in batch.kwargs]
    if not missing:
        return (), {n: batch.kwargs[n] for n in names}
    if model is not None:
        return as_positional(model, batch), {}
    raise ValueError(f"the traced forward() takes {missing[0]!r}, which the inputs do not give")


def check(batch: Inputs, built: Built, rec: Record, tolerance: Tolerance, model: Any = None) -> None:
    """Round-trip ``built.module`` (queued while a :func:`batched` block is open, else run now)."""
    if built.portable is None and not isinstance(built.module, torch.jit.ScriptModule):
        rec.serializable, rec.serializable_reason = None, "not a TorchScript module: no torch.jit.save round trip"
        return
    current = _BATCH.get()
    with contextlib.ExitStack() as stack:
        if current is None:
            current = _Batch()
            stack.callback(current.run)
        if built.portable is not None:
            _queue_portable(current, batch, built, rec, tolerance)
        else:
            _queue(current, batch, built, rec, tolerance, model)


def _queue(queue: _Batch, batch: Inputs, built: Built, rec: Record, tolerance: Tolerance, model: Any) -> None:
    path = queue.folder / f"module{len(queue.jobs)}.pt"
    try:
        args, kwargs = _call_arguments(built, batch, model)
    except Exception as exc:  # noqa: BLE001
        rec.serializable, rec.serializable_reason = None, f"not checked: cannot rebuild the call: {first_line(exc)}"
        return
    try:
        with captured_warnings([], keep=lambda w: False):  # "torch.jit.save is deprecated" under filterwarnings=error
            torch.jit.save(built.module, str(path))
    except Exception as exc:  # noqa: BLE001
        rec.serializable, rec.serializable_reason = False, f"torch.jit.save failed: {_short(exc)}"
        return
    try:
        expected = built.run(batch.clone())
    except Exception as exc:  # noqa: BLE001
        rec.serializable, rec.serializable_reason = (
            None,
            f"not checked: the module failed in-process: {first_line(exc)}",
        )
        return
    queue.jobs.append(_Job(rec, path, args, kwargs, expected, tolerance))


def _short(exc: BaseException) -> str:
    """The error's first line (TorchScript appends the Python traceback of the offending call)."""
    lines = str(exc).strip().splitlines()
    if not lines:
        return type(exc).__name__
    return f"{type(exc).__name__}: {' '.join(lines[0].split())[:300]}"


def run_jobs(jobs: list[_Job], folder: Path) -> None:
    """Load and run every job's module in one fresh Python without transformers; fill the records."""
    payload, results = folder / "jobs.pt", folder / "results.pt"
    torch.save(
        [
            {
                "path": str(j.path),
                "args": list(j.args),
                "kwargs": j.kwargs,
                "dtype": j.rec.dtype,
                "runs": RUNS,
                # the package that registers the program's custom classes (IPEX's prepacked weights)
                "imports": [name for name in [backend(j.rec.mode).import_name] if name],
            }
            for j in jobs
        ],
        payload,
    )
    failure = _run_child(payload, results, folder)
    if failure is None:
        try:
            data = torch.load(results)
        except Exception as exc:  # noqa: BLE001
            failure = f"could not read the subprocess' outputs: {first_line(exc)}"
    if failure is not None:
        for j in jobs:
            j.rec.serializable, j.rec.serializable_reason = False, failure
        return
    if data["loaded"]:
        note = f"the subprocess imported {', '.join(data['loaded'])} although it was blocked"
        for j in jobs:
            j.rec.serializable, j.rec.serializable_reason = False, note
        return
    for job, result in zip(jobs, data["results"], strict=True):
        _judge(job, result)


class _Loader:
    """The long-lived child process that loads saved programs (started on first use, restarted after
    a crash or a timeout, stopped at exit)."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[str] | None = None
        self.owner = os.getpid()
        self.folder = tempfile.mkdtemp(prefix="jitcpu-loader-")

    def _alive(self) -> bool:
        if self.proc is None:
            return False
        if self.owner == os.getpid():
            return self.proc.poll() is None
        # A forked child (isolation.py) uses its parent's loader: it cannot wait for it (poll() would
        # say "dead" and start a new one per check), only signal it.
        try:
            os.kill(self.proc.pid, 0)
        except OSError:
            return False
        return True

    def _start(self) -> subprocess.Popen[str]:
        if not self._alive():
            self.owner = os.getpid()
            self.proc = subprocess.Popen(
                launch.command("torchscript"),
                cwd=self.folder,
                env=launch.environment(),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        return self.proc

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc is not None:  # its pipes too: a user's filterwarnings=error turns a ResourceWarning into an error
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                with contextlib.suppress(OSError):
                    if pipe is not None:
                        pipe.close()

    def serve(self, payload: Path, results: Path) -> str | None:
        """Run one batch; None on success, else why it failed."""
        try:
            proc = self._start()
        except OSError as exc:
            return f"could not start a subprocess: {first_line(exc)}"
        reply: list[str] = []
        reader = threading.Thread(target=lambda: reply.append(proc.stdout.readline()), daemon=True)
        try:
            proc.stdin.write(protocol.request(str(payload), str(results)))
            proc.stdin.flush()
        except OSError:
            pass  # the child is gone: reported below with its exit code and last error line
        reader.start()
        reader.join(TIMEOUT_S)
        if reader.is_alive():
            self.stop()
            return f"the subprocess that loads the saved module did not finish within {TIMEOUT_S} s"
        if reply and reply[0].strip() == protocol.DONE and results.exists():
            return None
        self.stop()
        tail = [line for line in (proc.stderr.read() or "").strip().splitlines() if line.strip()]
        last = tail[-1].strip() if tail else "no output"
        return f"the subprocess that loads the saved module exited with {proc.returncode}: {last[:300]}"


_LOADER: _Loader | None = None


def _loader() -> _Loader:
    global _LOADER  # noqa: PLW0603 - one loader per process, stopped at exit
    if _LOADER is None:
        _LOADER = _Loader()
        atexit.register(_LOADER.stop)
    return _LOADER


def start_loader() -> None:
    """Start the loader now, in this process (isolation forks a child per check: a loader the child
    started would die with it, and every check would pay for a new one)."""
    with contextlib.suppress(OSError):
        _loader()._start()


def stop_loader() -> None:
    """Stop the loader (a crashed child may have left it half-way through a batch); restarted on use."""
    if _LOADER is not None:
        _LOADER.stop()


def _run_child(payload: Path, results: Path, folder: Path) -> str | None:
    return _loader().serve(payload, results)


def _judge(job: _Job, result: dict[str, Any]) -> None:
    rec = job.rec
    if not result["ok"]:
        rec.serializable = False
        rec.serializable_reason = (
            f"torch.jit.load and run in a fresh Python without transformers failed: {result['error']}"
        )
        return
    same = compare(job.expected, result["output"], job.tolerance)
    if same.ok:
        rec.serializable, rec.serializable_reason = True, None
        return
    rec.serializable = False
    detail = same.reason or f"max abs diff {same.max_abs_diff:.3g}"
    rec.serializable_reason = f"the loaded module's output differs from the in-process one: {detail}"


WITHOUT = "in a fresh Python that cannot import torch or transformers"
WITHOUT_MODEL = "in a fresh Python that cannot import transformers or the model's module"  # aoti


def _queue_portable(queue: _Batch, batch: Inputs, built: Built, rec: Record, tolerance: Tolerance) -> None:
    """Save the program and its inputs for the torch-free child; keep the in-process outputs to compare."""
    portable = built.portable
    assert portable is not None
    folder = queue.folder / f"portable{len(queue.portable)}"
    folder.mkdir()
    try:
        with captured_warnings([], keep=lambda w: False):
            path = portable.save(folder)
    except Exception as exc:  # noqa: BLE001
        rec.serializable, rec.serializable_reason = False, f"saving the {rec.mode} program failed: {_short(exc)}"
        return
    try:
        feed = portable.feed(batch.clone())
        expected = built.run(batch.clone())
    except Exception as exc:  # noqa: BLE001
        rec.serializable, rec.serializable_reason = (
            None,
            f"not checked: the program failed in-process: {first_line(exc)}",
        )
        return
    np.savez(folder / "inputs.npz", **{f"in{i}": array for i, (_, array) in enumerate(feed)})
    spec = {
        "runtime": portable.runtime,
        "path": str(path),
        "names": [name for name, _ in feed],
        "inputs": str(folder / "inputs.npz"),
        "outputs": str(folder / "outputs.npz"),
        "options": portable.options,
        "runs": RUNS,
    }
    queue.portable.append(_PortableJob(rec, built, expected, tolerance, spec))


def run_portable(jobs: list[_PortableJob], folder: Path) -> None:
    """Run the saved programs in fresh Pythons, one per child kind, each refusing what its programs must
    run without: torch and transformers (ONNX Runtime, OpenVINO: :mod:`.children.portable`), transformers
    and the model's module (aoti packages: :mod:`.children.aoti`). Fill the records."""
    kinds: dict[str, list[_PortableJob]] = {}
    for job in jobs:
        kinds.setdefault("aoti" if job.spec["runtime"] == "aoti" else "portable", []).append(job)
    for child, group in kinds.items():
        _run_portable_child(child, group, folder)


def _run_portable_child(child: str, jobs: list[_PortableJob], folder: Path) -> None:
    jobs_path, results_path = folder / f"{child}-jobs.json", folder / f"{child}-results.json"
    jobs_path.write_text(json.dumps([j.spec for j in jobs]), encoding="utf-8")
    failure = None
    try:
        proc = subprocess.run(
            launch.command(child),
            input=protocol.request(str(jobs_path), str(results_path)),
            cwd=folder,
            env=launch.environment(),
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            check=False,
        )
        if proc.returncode != 0 or proc.stdout.strip() != protocol.DONE or not results_path.exists():
            tail = [line for line in proc.stderr.strip().splitlines() if line.strip()]
            last = tail[-1].strip()[:300] if tail else "no output"
            failure = f"the subprocess that runs the saved program exited with {proc.returncode}: {last}"
    except subprocess.TimeoutExpired:
        failure = f"the subprocess that runs the saved program did not finish within {TIMEOUT_S} s"
    except OSError as exc:
        failure = f"could not start a subprocess: {first_line(exc)}"
    if failure is None:
        data = json.loads(results_path.read_text(encoding="utf-8"))
        # torch_refused is None where the child needs torch (aoti) and blocks only the model's code.
        if data["loaded"] or data["torch_refused"] is False:
            loaded = ", ".join(data["loaded"]) or "torch"
            failure = f"the subprocess imported {loaded} although it was blocked"
    for job, result in zip(jobs, data["results"] if failure is None else [None] * len(jobs), strict=True):
        if result is None:
            job.rec.serializable, job.rec.serializable_reason = False, failure
        else:
            _judge_portable(job, result)


def _judge_portable(job: _PortableJob, result: dict[str, Any]) -> None:
    rec, runtime = job.rec, job.spec["runtime"]
    without = WITHOUT_MODEL if runtime == "aoti" else WITHOUT
    if not result["ok"]:
        rec.serializable = False
        rec.serializable_reason = f"{runtime} load and run {without} failed: {result['error']}"
        return
    portable = job.built.portable
    assert portable is not None
    with np.load(job.spec["outputs"], allow_pickle=False) as data:
        got = portable.outputs([data[f"out{i}"] for i in range(result["count"])])
    same = compare(job.expected, got, job.tolerance)
    if same.ok:
        rec.serializable, rec.serializable_reason = True, None
        return
    rec.serializable = False
    detail = same.reason or f"max abs diff {same.max_abs_diff:.3g}"
    rec.serializable_reason = f"the {runtime} output {without} differs from the in-process one: {detail}"
