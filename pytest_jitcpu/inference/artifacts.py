"""Verified artifacts, cached: the program a run's mode built (an ONNX file, an OpenVINO IR), kept with what
it was verified on, so a later run with the same request loads it instead of building it again, and (for
runtimes that need no PyTorch) runs it without importing torch at all (:mod:`.fastpath`).

This module imports neither torch nor transformers: the torch-free start reads it.

An entry is a folder ``<cache>/artifacts/<request key>/`` holding ``meta.json`` and the artifact's files.
The request key is everything that could change what the run computes or which mode should win: the model
folder's fingerprint, the package versions, the CPU and its features, the thread count and the run's
options (task, pooling, normalization, max sequence length, batch size, mode, dtype, candidates).
``meta.json`` records the mode and dtype, the input domain it was verified on (task, longest sequence in
tokens, batch sizes) and the verification itself (when, how many rows and batches, the worst difference
from eager fp32).

Robustness: a cache is only a cache. An entry that cannot be read, is damaged (files missing or of
another size or content than recorded), belongs to other versions (another schema or key) or cannot be
written is a note and a rebuild, never a failure. Entries are built in a temporary folder and renamed into
place (atomic: a concurrent run sees the whole entry or none; if two runs race, the first rename wins and
the other's copy is dropped). Entries are evicted least recently used first beyond
``JITCPU_CACHE_MAX_MB`` (default 2048 MiB); a run touches its entry's ``used`` file when it loads it.

Per-mode interface: :data:`KINDS` maps an engine mode to a :class:`Kind`, which says how that mode's
artifact is saved (``save(built, folder) -> file name``) and opened (``open(path, meta) -> run``, where
``run(arrays) -> arrays``: numpy in the program's input order, numpy out in its output order). A new mode
that can be cached (aoti, a quantized ONNX) adds one row.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from . import cache as decisions

SCHEMA = "jitcpu-artifact/1"
FOLDER = "artifacts"
META = "meta.json"
USED = "used"  # touched on every load: its mtime is the entry's last use (LRU eviction)
DEFAULT_LIMIT_MB = 2048
_HEAD = 1 << 20  # bytes hashed at each end of an artifact file (a full hash of 100 MB costs a start's budget)
# Packages whose version changes what an artifact computes or how it is built.
PACKAGES = ("torch", "transformers", "tokenizers", "onnxruntime", "openvino", "onnx", "onnxscript", "numpy")
FLAG_PREFIXES = ("avx", "amx", "fma", "sse4", "f16c")

Runner = Callable[[list[Any]], list[Any]]
# Many batches: (key, arrays) in, (key, outputs, milliseconds) out as they finish (in any order).
Pipeline = Callable[[Iterable[tuple[Any, list[Any]]]], Iterator[tuple[Any, list[Any], float]]]


# -- the per-mode interface --------------------------------------------------------------------------
@dataclass(frozen=True)
class Kind:
    """How one mode's artifact is kept.

    ``save(built, folder)``: write the built program into ``folder`` (an empty folder), return the file
    the runtime loads (other files it writes, such as OpenVINO's ``.bin`` or ONNX external data, are kept
    with it). ``open(path, meta)``: load it for ``meta["threads"]`` threads and ``meta["options"]``; return
    ``run(arrays) -> arrays``. ``torch_free``: whether ``open`` and ``run`` need no torch (then
    :mod:`.fastpath` may run it without importing torch). ``pipeline(path, meta)``: a runner of many
    batches at once (None: one after the other through ``open``'s).
    """

    mode: str
    runtime: str
    save: Callable[[Any, Path], Path]
    open: Callable[[Path, dict[str, Any]], Runner]
    torch_free: bool = True
    # How a whole input's batches run, when the runtime does better than one batch after the other.
    pipeline: Callable[[Path, dict[str, Any]], Pipeline] | None = None


def _save_portable(built: Any, folder: Path) -> Path:
    if built.portable is None:
        raise ValueError(f"{built.mode} has no saved form")
    return Path(built.portable.save(folder))


def _open_onnx(path: Path, meta: dict[str, Any]) -> Runner:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = int(meta.get("threads") or 1)
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    def run(arrays: list[Any]) -> list[Any]:
        return list(session.run(None, dict(zip(names, arrays, strict=True))))

    return run


def _openvino_config(meta: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {"INFERENCE_NUM_THREADS": int(meta.get("threads") or 1)}
    options = meta.get("options") or {}
    if options.get("precision"):
        config["INFERENCE_PRECISION_HINT"] = options["precision"]
    config.update(options.get("config") or {})  # what the mode compiled with (int8's dynamic quantization)
    return config


def _open_openvino(path: Path, meta: dict[str, Any]) -> Runner:
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(path)), "CPU", _openvino_config(meta))
    request = compiled.create_infer_request()
    outputs = list(compiled.outputs)

    def run(arrays: list[Any]) -> list[Any]:
        result = request.infer(list(arrays))
        return [result[o] for o in outputs]

    return run


def _pipeline_openvino(path: Path, meta: dict[str, Any]) -> Pipeline:
    """The batches in flight at once, one per thread, each on a stream of its own thread (OpenVINO's
    throughput mode): a single request splits every small op of a batch over the threads and waits
    for them; MiniLM's batches of 32 ran 1.25x faster as two single-thread streams on 2 cores (AMD
    Zen 5, measured side by side)."""
    import openvino as ov

    threads = int(meta.get("threads") or 1)
    config = {**_openvino_config(meta), "PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": str(threads)}
    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
    queue = ov.AsyncInferQueue(compiled, threads)
    count = len(compiled.outputs)

    def pipeline(batches: Iterable[tuple[Any, list[Any]]]) -> Iterator[tuple[Any, list[Any], float]]:
        done: list[tuple[Any, list[Any], float]] = []

        def finished(request: Any, data: tuple[Any, float]) -> None:  # on OpenVINO's thread
            key, began = data
            outputs = [request.get_output_tensor(i).data.copy() for i in range(count)]  # buffers are reused
            done.append((key, outputs, (time.perf_counter() - began) * 1000))

        queue.set_callback(finished)
        for key, arrays in batches:
            queue.start_async(list(arrays), (key, time.perf_counter()))  # waits for an idle request
            while done:
                yield done.pop(0)
        queue.wait_all()
        while done:
            yield done.pop(0)

    return pipeline


def _sequential(run: Runner) -> Pipeline:
    def pipeline(batches: Iterable[tuple[Any, list[Any]]]) -> Iterator[tuple[Any, list[Any], float]]:
        for key, arrays in batches:
            began = time.perf_counter()
            outputs = run(arrays)
            yield key, outputs, (time.perf_counter() - began) * 1000

    return pipeline


# A runtime's opener: how an int8 entry's fp32 reference (saved beside it, same runtime) is loaded.
OPENERS: dict[str, Callable[[Path, dict[str, Any]], Runner]] = {"onnxruntime": _open_onnx, "openvino": _open_openvino}
REFERENCE = "reference"  # the sub-folder of an int8 entry holding its fp32 original

KINDS: dict[str, Kind] = {
    "onnx": Kind("onnx", "onnxruntime", _save_portable, _open_onnx),
    "openvino": Kind("openvino", "openvino", _save_portable, _open_openvino, pipeline=_pipeline_openvino),
    "onnx-int8": Kind("onnx-int8", "onnxruntime", _save_portable, _open_onnx),
    "openvino-int8": Kind("openvino-int8", "openvino", _save_portable, _open_openvino, pipeline=_pipeline_openvino),
    "openvino-int8-dynamic": Kind(
        "openvino-int8-dynamic", "openvino", _save_portable, _open_openvino, pipeline=_pipeline_openvino
    ),
}


def cacheable(mode: str) -> bool:
    return mode in KINDS


# -- keys --------------------------------------------------------------------------------------------
def root() -> Path:
    return decisions.directory() / FOLDER


def limit_bytes() -> int:
    try:
        return int(float(os.environ.get("JITCPU_CACHE_MAX_MB", DEFAULT_LIMIT_MB)) * (1 << 20))
    except ValueError:
        return DEFAULT_LIMIT_MB << 20


def threads(requested: int | None = None) -> int:
    """The thread count a run uses, known without torch: ``--threads``, else OMP_NUM_THREADS, else the
    CPUs this process may run on."""
    if requested:
        return int(requested)
    try:
        return max(1, int(os.environ.get("OMP_NUM_THREADS", "")))
    except ValueError:
        pass
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def versions() -> dict[str, str | None]:
    """Installed versions, read from the packages' metadata (importing torch to ask it costs seconds)."""
    from .. import __version__

    out: dict[str, str | None] = {"pytest_jitcpu": __version__, "python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def cpu() -> dict[str, Any]:
    name, flags = "", []
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        if line.startswith("model name") and not name:
            name = line.split(":", 1)[1].strip()
        elif line.startswith("flags"):
            flags = sorted(f for f in line.split(":", 1)[1].split() if f.startswith(FLAG_PREFIXES))
            break
    return {"name": name or platform.machine(), "flags": flags}


def request_key(model: Path, options: dict[str, Any]) -> str:
    """The key of a run's request: model fingerprint + versions + CPU + the run's options."""
    parts = {"schema": SCHEMA, "model": decisions.fingerprint(model), **versions(), **cpu(), **options}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:40]


# -- entries -----------------------------------------------------------------------------------------
@dataclass
class Entry:
    """A cached artifact: its folder and what ``meta.json`` says (mode, dtype, domain, verification)."""

    folder: Path
    meta: dict[str, Any]

    @property
    def mode(self) -> str:
        return str(self.meta["mode"])

    @property
    def dtype(self) -> str:
        return str(self.meta["dtype"])

    @property
    def name(self) -> str:
        return f"{self.mode}/{self.dtype}"

    @property
    def path(self) -> Path:
        return self.folder / str(self.meta["file"])

    @property
    def max_tokens(self) -> int:
        return int(self.meta["domain"]["max_tokens"])

    def covers(self, task: str, longest: int) -> str | None:
        """Why an input is outside the verified domain (another task, longer sequences), or None."""
        domain = self.meta["domain"]
        if domain.get("task") != task:
            return f"the cached artifact was verified for {domain.get('task')}, not {task}"
        if longest > self.max_tokens:
            return f"this input has sequences of {longest} tokens; the cached artifact was verified up to {self.max_tokens}"
        return None

    def describe(self) -> str:
        """What the run rests on, for the log."""
        v, d = self.meta["verified"], self.meta["domain"]
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(float(v["when"])))
        sizes = ",".join(str(s) for s in d.get("batch_sizes", []))
        diff = v.get("worst_diff")
        return (
            f"verified against eager fp32 on {when}: {v['rows']} rows in {v['batches']} batches (batch sizes {sizes}, "
            f"up to {d['max_tokens']} tokens, {d['task']}), worst difference {diff:.2g}"
            if diff is not None
            else f"verified against eager fp32 on {when}: {v['rows']} rows in {v['batches']} batches"
        )

    def open(self) -> Runner:
        return KINDS[self.mode].open(self.path, self.meta)

    def pipeline(self, batches: int | None = None) -> Pipeline:
        """Runs a whole input's batches: several in flight where the runtime gains by it and the input
        has ``batches`` enough to keep every thread's stream busy (None: unknown, a large input). A
        single-thread stream runs one batch about half as fast as all threads on it: the 30-row example's
        one batch took 144 ms pipelined, 70 ms on both threads."""
        kind = KINDS[self.mode]
        enough = batches is None or batches >= 2 * int(self.meta.get("threads") or 1)
        return kind.pipeline(self.path, self.meta) if kind.pipeline and enough else _sequential(self.open())

    @property
    def gated(self) -> bool:
        """Kept with an fp32 reference to gate it by (a run under an accuracy budget)."""
        return isinstance(self.meta.get("reference"), dict)

    def open_reference(self) -> Runner:
        """The fp32 program this entry's rows are gated against without torch (its own file in f32 precision
        for an fp program, the fp32 original of an int8 one)."""
        ref = self.meta["reference"]
        meta = {"threads": self.meta.get("threads"), "options": ref.get("options") or {}}
        return OPENERS[KINDS[self.mode].runtime](self.folder / str(ref["file"]), meta)

    def touch(self) -> None:
        with contextlib.suppress(OSError):
            (self.folder / USED).touch()


def _digest(path: Path) -> str:
    """sha256 of a file's size, first and last MiB: cheap, and catches a truncated or overwritten file."""
    digest = hashlib.sha256()
    size = path.stat().st_size
    digest.update(str(size).encode())
    with open(path, "rb") as handle:
        digest.update(handle.read(_HEAD))
        if size > _HEAD:
            handle.seek(max(size - _HEAD, _HEAD))
            digest.update(handle.read(_HEAD))
    return digest.hexdigest()


def lookup(key: str, note: Callable[[str], None]) -> Entry | None:
    """The entry for ``key``, or None (no entry; or a damaged or foreign one: noted, and removed when the
    cache is writable, so the rebuild can take its place)."""
    folder = root() / key
    meta_file = folder / META
    if not meta_file.exists():
        return None
    problem = None
    meta: dict[str, Any] = {}
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        if not isinstance(meta, dict) or meta.get("schema") != SCHEMA or meta.get("key") != key:
            problem = "written by another version of pytest-jitcpu"
        elif meta.get("mode") not in KINDS:
            problem = f"its mode {meta.get('mode')!r} is not one this version can load"
        else:
            for name, digest in dict(meta["files"]).items():
                if _digest(folder / name) != digest:
                    problem = f"its file {name} is not what was saved (damaged or changed)"
                    break
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        problem = f"it cannot be read ({type(exc).__name__}: {str(exc)[:120]})"
    if problem is None:
        return Entry(folder, meta)
    note(f"jitcpu: note: the cached artifact in {folder} is not used: {problem}; building again")
    discard(folder)
    return None


def discard(folder: Path) -> None:
    """Remove an entry: renamed away first (atomic), so a concurrent run never sees half of it."""
    trash = folder.with_name(f".trash-{folder.name}-{os.getpid()}-{time.monotonic_ns()}")
    try:
        os.rename(folder, trash)
    except OSError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def store(
    key: str,
    built: Any,
    meta: dict[str, Any],
    note: Callable[[str], None],
    reference: dict[str, Any] | None = None,
) -> Entry | None:
    """Save ``built`` (a mode in KINDS) as the entry for ``key`` with ``meta`` (mode, dtype, domain,
    verified, ...); returns the entry, or None with a note when the cache cannot be written.

    ``reference`` (a run under an accuracy budget): how the fp32 program its rows are gated against loads
    (``{"options": {...}}``); it is saved beside the program (the fp32 original of an int8 one, in
    ``reference/``; an fp program is its own reference, loaded in f32), and ``meta["reference"]`` says where."""
    kind = KINDS[built.mode]
    base = root()
    tmp: Path | None = None
    try:
        base.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{key[:12]}-", dir=base))
        path = kind.save(built, tmp)
        if reference is not None:
            meta = {**meta, "reference": _save_reference(built, path, tmp, reference)}
        files = {p.relative_to(tmp).as_posix(): _digest(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
        full = {
            **meta,
            "schema": SCHEMA,
            "key": key,
            "mode": built.mode,
            "dtype": built.dtype,
            "runtime": kind.runtime,
            "torch_free": kind.torch_free and bool(meta.get("torch_free", True)),
            "file": path.name,
            "files": files,
            "created": time.time(),
        }
        (tmp / META).write_text(json.dumps(full, indent=1, default=str), encoding="utf-8")
        (tmp / USED).touch()
        final = base / key
        if final.exists():
            discard(final)  # a stale entry for the same request (the new one was verified just now)
        try:
            os.rename(tmp, final)
        except OSError:  # another run put its entry there first: keep that one
            shutil.rmtree(tmp, ignore_errors=True)
        tmp = None
        evict(keep=final)
        return Entry(final, full)
    except Exception as exc:  # noqa: BLE001 - a cache that cannot be written only costs the next run time
        note(
            f"jitcpu: note: could not keep the {built.mode}/{built.dtype} artifact in {base}: {type(exc).__name__}: {exc}"
        )
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        return None


def _save_reference(built: Any, path: Path, folder: Path, reference: dict[str, Any]) -> dict[str, Any]:
    save = getattr(built.portable, "reference", None)
    if save is None:  # an fp program: the same file, loaded with the reference's options (f32)
        return {**reference, "file": path.name}
    (folder / REFERENCE).mkdir()
    return {**reference, "file": Path(save(folder / REFERENCE)).relative_to(folder).as_posix()}


def update(entry: Entry, **fields: Any) -> None:
    """Rewrite ``meta.json`` with ``fields`` changed (None removes one); a failure leaves it as it was."""
    from ..atomic import write_text

    meta = {k: v for k, v in {**entry.meta, **fields}.items() if v is not None}
    with contextlib.suppress(OSError):
        write_text(entry.folder / META, json.dumps(meta, indent=1, default=str))
        entry.meta = meta


def declined(key: str) -> bool:
    """A run for this request already weighed a torch-free artifact and found it would not pay."""
    return (root() / f".declined-{key}").exists()


def decline(key: str, reason: str) -> None:
    """Remember that preparing an artifact for ``key`` did not pay (so later runs do not try again)."""
    with contextlib.suppress(OSError):
        root().mkdir(parents=True, exist_ok=True)
        from ..atomic import write_text

        write_text(root() / f".declined-{key}", reason + "\n")


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _last_used(folder: Path) -> float:
    try:
        return (folder / USED).stat().st_mtime
    except OSError:
        return 0.0


def evict(keep: Path | None = None, limit: int | None = None) -> list[Path]:
    """Remove the least recently used entries until the cache is within ``limit`` bytes (default
    :func:`limit_bytes`); the entry just written (``keep``) goes last. Returns the removed folders."""
    limit = limit_bytes() if limit is None else limit
    try:
        entries = [p for p in root().iterdir() if p.is_dir() and not p.name.startswith(".")]
        sizes = {p: _size(p) for p in entries}
    except OSError:
        return []
    total = sum(sizes.values())
    removed = []
    for folder in sorted(entries, key=lambda p: (p == keep, _last_used(p))):
        if total <= limit:
            break
        discard(folder)
        total -= sizes[folder]
        removed.append(folder)
    return removed


def request_options(
    task: str,
    *,
    mode: str,
    dtype: str | None,
    batch_size: int,
    max_seq_length: int | None,
    pooling: str | None,
    normalize: bool | None,
    candidates: Any,
    threads_requested: int | None,
    budget: Any = None,
) -> dict[str, Any]:
    """The run's options as the request key holds them: the torch-free start and :class:`.runner.Predictor`
    build them from the same arguments, so both find the same entry."""
    if isinstance(candidates, str):
        candidates = candidates.replace(",", " ").split()
    return {
        "task": task,
        "mode": mode,
        "dtype": dtype,
        "batch_size": batch_size,
        "max_seq_length": max_seq_length,
        "pooling": pooling,
        "normalize": normalize,
        "candidates": sorted(set(candidates)) if candidates is not None else None,
        "threads": threads(threads_requested),
        # a program chosen under one accuracy budget says nothing about another (or about none)
        "budget": [budget.metric, budget.threshold] if budget is not None else None,
    }
