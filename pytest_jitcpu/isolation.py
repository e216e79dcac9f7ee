"""Run a check in a forked child process, so a model that kills the interpreter is an ``error`` record.

Tracing, running a trace on generated inputs, export, compile and the backends' conversions run native
code that can segfault or abort (a second trace of a model already traced on other shapes has crashed
inside torch). In-process, that ends the pytest session: no report, no JUnit, no records. Here each
``check`` call forks; the child runs :func:`pytest_jitcpu.engine.check` and sends, through a pipe, the
phase it is in, each record as it is made and finally the result. The parent, whose model was never
touched, waits. When the child dies, the (mode, dtype) that was running gets an ``error`` record
("crashed: signal 11 (SIGSEGV) while running trace-tuple on generated inputs ..."), the records already
made are kept, and the checks not yet run go to a fresh child; the session goes on.

Why fork rather than a new interpreter: the child shares the parent's memory copy-on-write, so the
model is not pickled (a user's model class may live in a test file) and nothing is imported again;
the cost is a few milliseconds per check (``benchmarks/isolation.py``).

OpenMP (libgomp) does not survive a fork: a parallel region in the child waits forever for the parent's
worker threads. So when the parent runs with more than one torch thread, the child runs with one and its
records say so (their latencies are single-threaded).
"""

from __future__ import annotations

import contextlib
import dataclasses
import faulthandler
import gc
import os
import pickle
import select
import signal
import struct
import sys
import sysconfig
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch

from . import engine, serialize
from .backends.base import FORK_UNSAFE_POOLS
from .backends.table import NOT_WARMED, ROUND_TRIP_MODES, backend
from .context import DECIDING, Watch
from .inputs import Inputs, normalize
from .record import CheckResult, Record
from .search import generalize, replay, strategies
from .settings import Settings

# Every mode runs in the child (tests/test_isolation.py and tests/ipex crash each one there). ONNX
# Runtime and OpenVINO work in a child as long as the parent never ran an OpenVINO model: its thread
# pool does not survive a fork, and a child forked after it deadlocked (measured, even in pure-Python
# code), so the warm-up skips the modes whose row names a fork-unsafe pool and a process that ran one
# stops forking (base.FORK_UNSAFE_POOLS).
# NOT_WARMED (from the table) also holds a mode whose warm-up would be a whole compile (aoti).
_HEADER = struct.Struct("!Q")
_POLL_S = 0.2
# Frames in these are not where a model crashed (faulthandler lists ctypes.string_at, torch's module call).
_NOT_THE_MODEL = (os.path.dirname(torch.__file__) + os.sep, sysconfig.get_paths()["stdlib"] + os.sep)
_IN_CHILD = False  # a check inside an isolated check runs in that child


def available() -> bool:
    return hasattr(os, "fork") and hasattr(os, "waitpid")


@dataclass(frozen=True)
class _Job:
    """One check as a child runs it: the engine's arguments, the (mode, dtype) pairs already made by
    an earlier child (skipped), and the torch threads to set in the child (None: keep the parent's)."""

    model: Any
    inputs: Any
    settings: Settings
    nodeid: str
    name: str | None
    generate: Any
    skip: frozenset[tuple[str, str]] = frozenset()
    threads: int | None = None
    undecided: str | None = None  # why an earlier child died deciding the input domain: this one skips it

    def check(self) -> CheckResult:
        return engine.check(
            self.model, self.inputs, settings=self.settings, nodeid=self.nodeid, name=self.name, generate=self.generate
        )


@dataclass
class _Outcome:
    """What one child sent before it ended."""

    records: list[Record] = field(default_factory=list)
    phase: tuple[str, str, str] | None = None
    result: CheckResult | None = None
    raised: BaseException | None = None
    how: str = ""  # how the child ended, when it ended without a result
    hung: bool = False  # it sent nothing for settings.timeout seconds and was killed
    where: str | None = None  # the innermost Python frame faulthandler saw, when it crashed
    # The last input a built module was about to run on in the search: (mode, dtype, inputs, where).
    trying: tuple[str, str, Inputs, str] | None = None


def check(
    model: Any,
    inputs: Any,
    *,
    settings: Settings,
    nodeid: str = "",
    name: str | None = None,
    generate: Any = None,
) -> CheckResult:
    """:func:`engine.check` in a forked child (``settings.isolate`` and a platform with fork), else in-process."""
    job = _Job(model, inputs, settings, nodeid, name, generate)
    if not settings.isolate or _IN_CHILD:
        return job.check()
    why_not = in_process_reason(settings)
    if why_not is not None:
        result = job.check()
        for rec in result.records:
            rec.notes.append(f"not crash-isolated: {why_not}; a crash here ends the session")
        return result
    wanted = [(mode, dtype) for dtype in settings.dtypes for mode in settings.modes]
    threads = torch.get_num_threads()
    child_threads = 1 if threads > 1 else None
    if settings.serialize and any(mode in ROUND_TRIP_MODES for mode in settings.modes):
        serialize.start_loader()  # in the parent: a loader started in a child would die with it
    _warm(settings)
    made: dict[tuple[str, str], Record] = {}
    reference: Any = None
    crashes: list[str] = []
    label = name or type(model).__name__
    while True:
        before = sum(pair in made for pair in wanted)
        outcome = _run(dataclasses.replace(job, name=label, skip=frozenset(made), threads=child_threads))
        if outcome.raised is not None:
            raise outcome.raised
        finished = outcome.result.records if outcome.result is not None else outcome.records
        for rec in finished:
            if crashes:
                rec.notes.append(f"checked in a fresh child process after an earlier one {crashes[-1]}")
            made[(rec.mode, rec.dtype)] = rec
        if outcome.result is not None:
            reference = outcome.result.reference
            break
        serialize.stop_loader()  # it may be half-way through the dead child's batch
        reason, crashed = _crash_records(outcome, job, label, made)
        made.update(crashed)
        crashes.append(reason)
        if outcome.phase is not None and outcome.phase[2] == DECIDING and job.undecided is None:
            # Eager died on an input of another size: the next child checks without probing the domain.
            job = dataclasses.replace(job, undecided=reason)
            continue
        if sum(pair in made for pair in wanted) == before:
            # It died where no (mode, dtype) can be left out: another child would die there too.
            for pair in wanted:
                made.setdefault(pair, _error(nodeid, label, *pair, f"not run: the check {reason}"))
        if all(pair in made for pair in wanted):
            break
    records = [made[pair] for pair in wanted if pair in made]
    for rec in records:
        if child_threads is not None:
            rec.notes.append(
                f"checked in a forked child with {child_threads} thread (the session's {threads} OpenMP threads "
                "do not survive a fork); latency_ms is single-threaded"
            )
    return CheckResult(model=label, records=records, reference=reference)


def in_process_reason(settings: Settings) -> str | None:
    """Why a check with ``settings.isolate`` on must still run in this process, or None when it can fork."""
    if not available():
        return "this platform has no os.fork"
    if FORK_UNSAFE_POOLS:
        return (
            f"{', '.join(sorted(FORK_UNSAFE_POOLS))} ran a model in this process earlier, and its thread pool "
            "does not survive a fork"
        )
    return None


_WARMED: set[tuple[str, str]] = set()


def _warm(settings: Settings) -> None:
    """Pay, once in the parent, what a process pays on its first check of each mode (TorchScript's and
    Hypothesis' first use, lazy imports of export/compile): measured 0.3 s of CPU per check when every
    child paid it again. A tiny Linear layer, the caller's random state untouched."""
    pairs = {(m, d) for d in settings.dtypes for m in settings.modes if m not in NOT_WARMED} - _WARMED
    if not pairs:
        return
    _WARMED.update(pairs)
    warm = settings.updated(
        modes=sorted({m for m, _ in pairs}), dtypes=sorted({d for _, d in pairs}), examples=min(settings.examples, 2)
    )
    warm = dataclasses.replace(warm, serialize=False, isolate=False, generate=None)
    with torch.random.fork_rng(devices=[]), contextlib.suppress(Exception):
        engine.check(torch.nn.Linear(2, 2), (torch.ones(2, 2),), settings=warm, name="warm-up")


def _crash_records(
    outcome: _Outcome, job: _Job, label: str, made: dict[tuple[str, str], Record]
) -> tuple[str, dict[tuple[str, str], Record]]:
    """Why the child died, and the record(s) of the check(s) it was running: ``diverges`` when a built
    module killed it on an input of the search that eager had accepted, else ``error``."""
    nodeid, settings = job.nodeid, job.settings
    mode, dtype, what = outcome.phase or ("eager", "fp32", "starting the check")
    where = f" (at {outcome.where})" if outcome.where else ""
    reason = f"{'hung' if outcome.hung else 'crashed'}: {outcome.how} while {what}{where}"
    trying = outcome.trying
    if trying is not None and trying[:2] == (mode, dtype) and "generated inputs" in what:
        done = made | {(r.mode, r.dtype): r for r in outcome.records}
        return reason, {(mode, dtype): _crash_divergence(outcome, job, label, done, reason)}
    done = made | {(r.mode, r.dtype): r for r in outcome.records}
    if not mode:  # after every record was made: the serialization round trips
        for rec in outcome.records:
            if rec.mode in ROUND_TRIP_MODES and rec.serializable is None:
                rec.serializable_reason = f"not checked: the process {reason}"
        pending = [(m, d) for d in settings.dtypes for m in settings.modes if (m, d) not in done]
        return reason, {pair: _error(nodeid, label, *pair, f"not run: the process {reason}") for pair in pending}
    if what == DECIDING and job.undecided is None:
        return reason, {}  # retried without probing the domain (check's loop)
    if what in ("running the eager reference", "starting the check"):
        return reason, {
            (m, d): _error(nodeid, label, m, d, reason if m == "eager" else f"not run: the eager reference {reason}")
            for d in settings.dtypes
            for m in settings.modes
            if (m, d) not in done
        }
    return reason, {(mode, dtype): _error(nodeid, label, mode, dtype, reason)}


def _crash_divergence(
    outcome: _Outcome, job: _Job, label: str, done: dict[tuple[str, str], Record], reason: str
) -> Record:
    """A built module that kills the process on an input eager accepts diverges from eager there: the
    input is the counterexample, with a replay snippet (written here, not re-run: it would crash again)."""
    assert outcome.trying is not None
    mode, dtype, inputs, where = outcome.trying
    program = backend(mode).program
    how = "hung" if outcome.hung else "crashed the process"
    at = f" (at {outcome.where})" if outcome.where else ""
    rec = _error(job.nodeid, label, mode, dtype, f"{program} {how} ({outcome.how}) on {where} that eager accepts{at}")
    rec.status = "diverges"
    rec.counterexample = strategies.summarize(inputs)
    eager = done.get(("eager", "fp32"))
    rec.domain = eager.domain if eager is not None else None
    rec.generalization = generalize.summary("tested", tried=1, diverged_on="crash")
    tolerances = {k: v for k, v in (("atol", job.settings.atol), ("rtol", job.settings.rtol)) if v is not None}
    try:
        rec.replay = replay.snippet(
            normalize(job.inputs),
            inputs,
            model=label,
            mode=mode,
            dtype=dtype,
            tolerances=tolerances,
            reproduces=lambda example, counterexample: False,
            what=f"{how} on `counterexample`",
            crashed=True,
        )
    except Exception as exc:  # noqa: BLE001 - inputs a snippet cannot hold keep the summary only
        rec.notes.append(f"no replay snippet: {exc}")
    return rec


def _error(nodeid: str, label: str, mode: str, dtype: str, reason: str) -> Record:
    return Record(nodeid=nodeid, model=label, mode=mode, dtype=dtype, status="error", reason=reason)


def _run(job: _Job) -> _Outcome:
    parent = os.getpid()
    read_fd, write_fd = os.pipe()
    crash_log = tempfile.TemporaryFile()
    sys.stdout.flush()
    sys.stderr.flush()
    # The child's garbage collections must not walk the parent's objects: a collection touches every
    # object it walks, and each touched page is copied (copy-on-write). With torch and transformers
    # loaded, one full collection in a child copied the heap: 0.3 s of CPU per check (measured).
    gc.freeze()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: "fork() with threads may deadlock"
            pid = os.fork()
    finally:
        if os.getpid() == parent:
            gc.unfreeze()
    if pid == 0:  # the child: never returns
        os.close(read_fd)
        _child(write_fd, crash_log, job)
    os.close(write_fd)
    try:
        data, status, hung = _collect(read_fd, pid, job.settings.timeout)
    finally:
        os.close(read_fd)
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG) == (0, 0):  # interrupted (Ctrl-C): the child goes too
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
    outcome = _parse(data)
    if outcome.result is None and outcome.raised is None:
        outcome.hung = hung
        outcome.how = f"no progress for {job.settings.timeout:g} s, killed" if hung else _how(status)
        crash_log.seek(0)
        outcome.where = _innermost(crash_log.read().decode("utf-8", "replace"))
    crash_log.close()
    return outcome


def _collect(read_fd: int, pid: int, timeout: float) -> tuple[bytes, int, bool]:
    """Everything the child wrote, its wait status, and whether it hung. Polls: a grandchild that
    inherited the pipe must not keep the parent waiting after the child is gone. A child that sends
    nothing (no phase, no record) for ``timeout`` seconds (0: no limit) is hung, e.g. waiting for a
    thread pool the fork did not copy: SIGABRT first, so faulthandler writes where it waits, then SIGKILL."""
    chunks: list[bytes] = []
    status: int | None = None
    hung = False
    last = time.monotonic()
    while True:
        ready, _, _ = select.select([read_fd], [], [], _POLL_S)
        if ready:
            chunk = os.read(read_fd, 1 << 20)
            if chunk:
                chunks.append(chunk)
                last = time.monotonic()
                continue
            break  # EOF
        done, code = os.waitpid(pid, os.WNOHANG)
        if done:
            status = code
            os.set_blocking(read_fd, False)
            with contextlib.suppress(BlockingIOError):
                while chunk := os.read(read_fd, 1 << 20):
                    chunks.append(chunk)
            break
        if timeout and time.monotonic() - last > timeout:
            hung = True
            status = _kill_hung(pid)
            break
    if status is None:
        _, status = os.waitpid(pid, 0)
    return b"".join(chunks), status, hung


def _kill_hung(pid: int) -> int:
    """SIGABRT (faulthandler dumps the stack), up to 5 s to die, then SIGKILL; the wait status."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGABRT)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        done, code = os.waitpid(pid, os.WNOHANG)
        if done:
            return code
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    return os.waitpid(pid, 0)[1]


def _parse(data: bytes) -> _Outcome:
    outcome = _Outcome()
    offset = 0
    while offset + _HEADER.size <= len(data):
        (size,) = _HEADER.unpack_from(data, offset)
        start = offset + _HEADER.size
        if start + size > len(data):
            break  # the child died while writing this one
        kind, *payload = pickle.loads(data[start : start + size])
        offset = start + size
        if kind == "phase":
            outcome.phase = tuple(payload)  # type: ignore[assignment]
        elif kind == "record":
            outcome.records.append(payload[0])
        elif kind == "trying":
            outcome.trying = tuple(payload)  # type: ignore[assignment]
        elif kind == "done":
            outcome.result = payload[0]
        elif kind == "raise":
            outcome.raised = payload[0]
    return outcome


def _how(status: int) -> str:
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            signame = signal.Signals(number).name
        except ValueError:
            signame = "unknown"
        return f"signal {number} ({signame})"
    if os.WIFEXITED(status):
        return f"exited with code {os.WEXITSTATUS(status)}"
    return f"ended with wait status {status}"


def _innermost(log: str) -> str | None:
    """The innermost frame outside torch and the standard library in faulthandler's dump ("File "x.py", line 3 in forward")."""
    frames = []
    for raw in log.splitlines():
        line = raw.strip()
        if line.startswith('File "') and " line " in line:
            path = line.split('"')[1]
            rest = line.rsplit(" line ", 1)[1]  # "12 in forward"
            frames.append((path, rest))
    for path, rest in frames:  # most recent call first
        if not path.startswith(_NOT_THE_MODEL):
            lineno, _, func = rest.partition(" in ")
            return f"{os.path.basename(path)}:{lineno} in {func}"
    return None


def _compile_in_this_thread() -> None:
    """Inductor compiles C++ on a thread pool it keeps for the process (torch resets its process pool
    after a fork, not that one): a child inheriting the parent's pool queues work to threads the fork did
    not copy and waits forever (measured: the compile check of a cold compile cache hung). One compile
    thread makes inductor compile synchronously in the child; a parent that never loaded inductor left no
    pool to inherit."""
    config = sys.modules.get("torch._inductor.config")
    if config is not None:
        config.compile_threads = 1


class _Pipe:
    def __init__(self, fd: int) -> None:
        self.fd = fd

    def send(self, *message: Any) -> None:
        try:
            blob = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # noqa: BLE001 - an unpicklable payload must not lose the message
            blob = pickle.dumps(_picklable(message), protocol=pickle.HIGHEST_PROTOCOL)
        data = _HEADER.pack(len(blob)) + blob
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]


def _picklable(message: tuple[Any, ...]) -> tuple[Any, ...]:
    kind, *payload = message
    if kind == "done":
        result = payload[0]
        return (kind, CheckResult(model=result.model, records=result.records, reference=None))
    if kind == "raise":
        exc = payload[0]
        return (kind, RuntimeError(f"{type(exc).__name__}: {exc}"))
    return message


def _child(write_fd: int, crash_log: Any, job: _Job) -> None:
    global _IN_CHILD  # noqa: PLW0603 - this process is the child from here on
    code = 0
    try:
        _IN_CHILD = True
        faulthandler.enable(file=crash_log, all_threads=False)  # where it crashed, for the reason
        if job.threads is not None:
            torch.set_num_threads(job.threads)
        _compile_in_this_thread()
        pipe = _Pipe(write_fd)
        watch = Watch(
            phase=lambda mode, dtype, what: pipe.send("phase", mode, dtype, what),
            record=lambda rec: pipe.send("record", rec),
            trying=lambda mode, dtype, inputs, where: pipe.send("trying", mode, dtype, inputs, where),
            skip=job.skip,
            undecided=job.undecided,
        )
        try:
            with engine.watched(watch):
                result = job.check()
            pipe.send("done", result)
        except BaseException as exc:  # noqa: BLE001 - the parent raises it (UsageError, KeyboardInterrupt, a bug)
            exc.__traceback__ = None
            pipe.send("raise", exc)
    except BaseException:  # noqa: BLE001 - nothing may unwind into pytest's code in the child
        code = 70
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)
