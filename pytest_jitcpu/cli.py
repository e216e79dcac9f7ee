"""The ``jitcpu`` command: ``jitcpu check MODEL`` (the compatibility matrix) and ``jitcpu run MODEL``
(batch inference in the fastest verified mode). Parsing only; the work is in :mod:`pytest_jitcpu.inference`.

Exit status: 0 success, 1 rows failed with ``--on-error fail`` (or a check failed), 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from .backends.table import DISPLAY, QUANTIZED_MODES
from .inference.task_table import DEFAULT_TASK, TASKS
from .reports import writers

if TYPE_CHECKING:  # the annotation only: importing the engine pulls torch in
    from .inference import Predictor

QUANTIZED = [DISPLAY[m] for m in QUANTIZED_MODES]  # the int8 modes, as --mode names them

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

RUN_EXAMPLE = """examples:
  jitcpu run --task feature-extraction --input sentences.txt --output embeddings.npy
  jitcpu run ./my-classifier --task text-classification --input rows.jsonl --output preds.jsonl --mode auto
  jitcpu run ./squad-model --task question-answering --input qa.jsonl --output answers.jsonl \\
      --max_seq_length 384 --doc_stride 128 --no_cuda --jit_mode_eval      # the guide's flags work too
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer >= minimum, else a usage error naming the value."""

    def convert(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from None
        if number < minimum:
            raise argparse.ArgumentTypeError(f"{value!r} must be >= {minimum}")
        return number

    return convert


_positive = _int_at_least(1)
_non_negative = _int_at_least(0)


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "model",
        nargs="?",
        default=None,
        metavar="MODEL",
        help="a local folder saved with save_pretrained, or 'default' (the default): the embedded "
        "sentence-transformers/all-MiniLM-L6-v2. There is no download from a model hub.",
    )
    p.add_argument("--model_name_or_path", dest="model_opt", default=None, help=argparse.SUPPRESS)
    p.add_argument(
        "--task",
        default=None,
        help=f"{', '.join(TASKS[:-1])} or {TASKS[-1]} "
        f"(default: from the folder's config.architectures; {DEFAULT_TASK} for a bare encoder)",
    )
    p.add_argument(
        "--max-seq-length",
        "--max_seq_length",
        dest="max_seq_length",
        type=_positive,
        default=None,
        help="tokens per sequence; longer rows are truncated and counted (question answering: window size). "
        "Default: the model's (sentence-transformers' max_seq_length, 384 for question answering)",
    )
    p.add_argument("--threads", type=_positive, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--input-format", choices=("text", "csv", "tsv", "jsonl"), default=None, help=argparse.SUPPRESS)


def build_parser() -> argparse.ArgumentParser:
    # From the backends table, not inference.selection: parsing (and --help, and a bad flag) needs no torch.
    from .backends.table import AUTO_CANDIDATES, CLI_NAMES, NOT_IN_AUTO

    RUN_MODES = ("auto", *CLI_NAMES)  # as inference.selection.RUN_MODES

    parser = _Parser(prog="jitcpu", description="Check and run a model on CPU in its fastest verified mode.")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"pytest-jitcpu {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{check,run}", parser_class=_Parser)
    sub.required = True

    check = sub.add_parser(
        "check",
        help="the compatibility matrix of a model: every mode x dtype, with statuses, diffs, reasons and latency",
        description="Check MODEL in every mode and dtype on one batch (built-in sentences, or --input rows).",
    )
    _model_args(check)
    check.add_argument(
        "--report", action="append", default=[], metavar="PATH", help=f"write {writers.HELP} (repeatable)"
    )
    check.add_argument(
        "--input", default=None, metavar="FILE", help="take the batch from these rows (default: built-in)"
    )
    check.add_argument("--modes", default="all", help="comma-separated modes (default: all)")
    check.add_argument("--dtypes", default="all", help="comma-separated dtypes: fp32, bf16 (default: all)")
    check.add_argument("--batch-size", type=_positive, default=8, help="rows in the checked batch (default: 8)")
    check.add_argument(
        "--examples", type=_non_negative, default=None, help="generated inputs per trace mode (default: engine's)"
    )
    check.add_argument("--atol", default=None, help="absolute tolerance (default: per dtype)")
    check.add_argument("--rtol", default=None, help="relative tolerance (default: per dtype)")

    run = sub.add_parser(
        "run",
        help="batch inference on a file, in the fastest verified mode",
        description="Run MODEL on every row of --input and write one output per row, in input order, to --output.",
        epilog=RUN_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _model_args(run)
    run.add_argument(
        "--input",
        required=True,
        metavar="FILE",
        help="plain text (a row a line), .csv/.tsv with a 'text' column, or .jsonl objects with 'text' "
        "('question' + 'context' for question answering); an 'id' is copied to the output; '-' is stdin",
    )
    run.add_argument(
        "--output", default=None, metavar="FILE", help=".jsonl (one object per row, in input order), or .npy embeddings"
    )
    run.add_argument(
        "--mode",
        choices=RUN_MODES,
        default=None,
        help="auto (default): check the candidate modes on a sample of the input, keep the verified ones, "
        "time them, run the fastest. A named mode is checked too and replaced by eager if it fails.",
    )
    run.add_argument(
        "--dtype",
        choices=("fp32", "bf16", "auto"),
        default=None,
        help="fp32, bf16 (CPU autocast), or auto with --mode auto (times both, keeps the faster). Default: "
        "fp32; --mode auto also tries bf16 where the CPU has native BF16 (avx512_bf16, AMX)",
    )
    run.add_argument("--batch-size", "--per_device_eval_batch_size", dest="batch_size", type=_positive, default=32)
    run.add_argument(
        "--on-error",
        choices=("fail", "skip"),
        default="fail",
        help="a bad row (malformed line, empty text, ...): fail stops with exit 1 and writes nothing (default); "
        "skip writes {'line','error'} in its place, counts and lists it at the end",
    )
    run.add_argument("--doc-stride", "--doc_stride", dest="doc_stride", type=_non_negative, default=128)
    run.add_argument(
        "--candidates",
        default=None,
        help=f"modes --mode auto tries, all of them whatever the input's size (default: {','.join(AUTO_CANDIDATES)}"
        f" and trace+onednn, as many as this input's size repays; {' and '.join(NOT_IN_AUTO)} can be added)",
    )
    run.add_argument(
        "--cache",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="remember auto's decision and keep the verified ONNX / OpenVINO program per model, versions, CPU and "
        "options in ~/.cache/pytest-jitcpu (JITCPU_CACHE_DIR; JITCPU_CACHE_MAX_MB, default 2048): a later run "
        "loads it, and runs it without importing torch when it can (default: on, JITCPU_CACHE=off turns it off)",
    )
    run.add_argument(
        "--verify",
        action="store_true",
        help="do not rest on the cached verification: load the model in PyTorch and check the cached program "
        "against eager on this input's batches (a mismatch rebuilds it)",
    )
    budget = run.add_argument_group(
        f"accuracy budget (docs/quantization.md): with one, --mode auto also tries int8 ({', '.join(QUANTIZED)})"
    )
    budget.add_argument(
        "--min-cosine",
        default=None,
        metavar="X",
        help="embeddings: every row's cosine to eager fp32 must be >= X, in (0, 1], e.g. 0.99; measured row by "
        "row on held-back batches of this input (default: none, fp tolerances only, no int8)",
    )
    budget.add_argument(
        "--min-agreement",
        default=None,
        metavar="X",
        help="classification, token classification, question answering: the share of rows whose labels equal "
        "eager fp32's must be >= X, in (0, 1] (default: none)",
    )
    budget.add_argument(
        "--verify-all",
        action="store_true",
        help="check every row against eager fp32 (an fp32 run as well: slower) and recompute in fp32 the rows "
        "that miss the budget, so every output row meets it (default: the gate's sample)",
    )
    run.add_argument("--pooling", choices=("mean", "cls", "max"), default=None, help="feature-extraction pooling")
    run.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=None, help="L2-normalize embeddings")
    run.add_argument("--summary", default=None, metavar="PATH", help="also write the run's summary as JSON")
    run.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None, help="default: on a TTY")
    # pytest's -q/-v: by default the decision in one line, the progress bar and the final line
    run.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="also print the model's notes (task, pooling) and every candidate auto tried, with its status, "
        "latency and reason",
    )
    run.add_argument("-q", "--quiet", action="count", default=0, help="print only warnings, errors and the final line")
    ray = run.add_argument_group("Ray (pip install 'pytest-jitcpu[ray]')")
    ray.add_argument(
        "--ray",
        nargs="?",
        const="",
        default=None,
        metavar="ADDRESS",
        help="run on Ray Data: the cluster at ADDRESS (host:6379, auto, ray://host:10001), else RAY_ADDRESS, else "
        "a new local cluster; --input may then be a folder or a glob, and Parquet",
    )
    ray.add_argument(
        "--actors",
        type=_positive,
        default=None,
        help="Ray actors, each with --threads CPUs (default: as many as the cluster's CPUs allow)",
    )
    ray.add_argument("--shards", default=None, metavar="DIR", help="also (or instead of --output) write shards to DIR")
    ray.add_argument(
        "--shard-format", choices=("jsonl", "parquet"), default="jsonl", help="shard files (default jsonl)"
    )
    # The guide's Trainer / run_qa.py flags, so its command lines translate.
    run.add_argument("--jit_mode_eval", action="store_true", help="alias: --mode trace")
    run.add_argument("--use_ipex", action="store_true", help="alias: --mode ipex")
    run.add_argument("--bf16", action="store_true", help="alias: --dtype bf16")
    run.add_argument("--no_cuda", action="store_true", help="accepted and ignored: this runs on CPU")
    return parser


def _verbosity(args: argparse.Namespace) -> int:
    """-v minus -q, as pytest counts them: 0 by default."""
    return args.verbose - args.quiet


def _mode(args: argparse.Namespace) -> str:
    aliases = "ipex" if args.use_ipex else "trace" if args.jit_mode_eval else None
    if args.mode and aliases and args.mode != aliases:
        raise _usage(f"--mode {args.mode} contradicts --{'use_ipex' if args.use_ipex else 'jit_mode_eval'}")
    mode = args.mode or aliases or "auto"
    if mode == "ipex" and args.use_ipex and args.jit_mode_eval:
        # The guide's pair means "IPEX in JIT mode": without IPEX, its JIT half (the verified trace mode)
        # is still what was asked for, not eager.
        from .backends import ipex

        reason = ipex.unavailable_reason()
        if reason:
            _err(f"jitcpu run: --use_ipex: IPEX is unavailable ({reason}); running --jit_mode_eval as --mode trace")
            return "trace"
    return mode


def _dtype(args: argparse.Namespace) -> str | None:
    if args.dtype and args.bf16 and args.dtype != "bf16":
        raise _usage(f"--dtype {args.dtype} contradicts --bf16")
    return args.dtype or ("bf16" if args.bf16 else None)  # None: fp32, or auto's choice (see --dtype)


def _usage(message: str) -> Exception:
    from .settings import UsageError

    return UsageError(message)


def _model(args: argparse.Namespace) -> str | None:
    if args.model and args.model_opt and args.model != args.model_opt:
        raise _usage(f"two models given: {args.model} and --model_name_or_path {args.model_opt}")
    return args.model or args.model_opt


def _err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _check_outputs(input: str | None, outputs: Sequence[tuple[str, str | None]]) -> None:
    """Refuse outputs that would overwrite the input or each other, or cannot be written, before the
    model loads (nothing has run yet, so nothing is lost)."""
    from .atomic import same_file
    from .settings import unwritable

    seen: list[tuple[str, str]] = []
    for flag, path in outputs:
        if not path or path == "-":
            continue
        if input and input != "-" and same_file(path, input):
            raise _usage(f"{flag} {path} is the input file {input}; write the output to another file")
        for other_flag, other in seen:
            if same_file(path, other):
                raise _usage(f"{flag} {path} is the same file as {other_flag} {other}; give each its own file")
        seen.append((flag, path))
        problem = unwritable(path)
        if problem:
            raise _usage(f"{flag}: cannot write {path}: {problem}")


def _check_input(path: str) -> None:
    """A missing, unreadable or binary input is refused before the model loads (seconds, not minutes)."""
    from .inference.rows import check_readable

    check_readable(path)


def _run(args: argparse.Namespace) -> int:
    if args.summary == "-":
        raise _usage("--summary: give a file name (standard output is for --output -)")
    if args.ray is None and (args.actors or args.shards):
        raise _usage(f"{'--actors' if args.actors else '--shards'} needs --ray")
    from .settings import parse_fraction

    parse_fraction(args.min_cosine, "--min-cosine")  # a bad value is refused before torch loads
    parse_fraction(args.min_agreement, "--min-agreement")
    if args.verify_all and args.min_cosine is None and args.min_agreement is None:
        raise _usage("--verify-all needs a budget to verify: --min-cosine X (embeddings) or --min-agreement X")
    if args.ray is not None and (args.min_cosine or args.min_agreement or args.verify_all):
        raise _usage("--min-cosine, --min-agreement and --verify-all do not run on --ray yet; run without --ray")
    _check_outputs(args.input, (("--output", args.output), ("--summary", args.summary)))
    if args.ray is not None:
        from .inference import cluster  # imports Ray: a usage error naming the extra when it is missing

        return cluster.cli_run(args, _model(args), _mode(args), _dtype(args))
    _check_input(args.input)  # one file here; Ray reads folders and globs itself (raydata.input_files)
    from .inference import fastpath  # imports no torch: a cached ONNX / OpenVINO program may run without it

    code = fastpath.try_run(args, _model(args), _mode(args), _dtype(args), _err)
    if code is not None:
        return code
    import time

    started = time.perf_counter()
    from .inference import Predictor, RowError
    from .inference.selection import ModelFailed

    import_s = time.perf_counter() - started  # torch and transformers: what a torch-free start saves
    loading = time.perf_counter()
    predictor = Predictor(
        _model(args),
        args.task,
        mode=_mode(args),
        dtype=_dtype(args),
        batch_size=args.batch_size,
        threads=args.threads,
        max_seq_length=args.max_seq_length,
        doc_stride=args.doc_stride,
        on_error=args.on_error,
        candidates=args.candidates,
        pooling=args.pooling,
        normalize=args.normalize,
        cache=args.cache,
        verbose=_verbosity(args),
        min_cosine=args.min_cosine,
        min_agreement=args.min_agreement,
        verify_all=args.verify_all,
    )
    try:
        code = _hand_over(args, predictor, loading)
        if code is not None:
            return code
        summary = predictor.run(args.input, args.output, args.input_format, args.progress)
    except ModelFailed as exc:
        _err(f"jitcpu run: {exc}; no output written")
        return EXIT_FAILED
    except RowError as exc:
        _err(f"jitcpu run: {args.input} {exc}")
        _err("jitcpu run: stopped (--on-error fail); no output written. Pass --on-error skip to skip bad rows.")
        partial = predictor.summary
        for note in partial.notes():
            _err(note)
        return EXIT_FAILED
    for note in summary.notes():
        _err(note)
    if args.summary:
        from .atomic import write_text

        write_text(args.summary, json.dumps(summary.to_json(), indent=2) + "\n")
    if summary.rows == 0:
        _err(f"jitcpu run: warning: {args.input} has no rows; the output is empty")
    _err(f"jitcpu run: {summary.line()}")
    if args.output != "-" and _verbosity(args) >= 0:
        _err(f"jitcpu run: wrote {args.output}")
    if args.cache is not False:
        predictor.prepare_next(import_s)  # after the output: the next run may start without torch
    return EXIT_OK


def _hand_over(args: argparse.Namespace, predictor: Predictor, started: float) -> int | None:
    """``auto`` on a file: choose on its first window first; when the pick is a program the cache kept for
    the torch-free start, the rows run through it as the next run will (batches pipelined, numpy padding),
    faster than torch's loop. None: the normal run goes on (it keeps the choice). ``started``: when the
    model began loading (the summary's times count from there, as the normal run's do)."""
    import time

    from .inference import artifacts, fastpath

    if (
        _mode(args) != "auto"
        or predictor.loaded.task != fastpath.TASK
        or not predictor.cache
        or args.verify
        or args.verify_all
        or "-" in (args.input, args.output)
    ):
        return None
    decision = predictor.choose_for(args.input, args.input_format)
    if decision is None or decision.mode not in artifacts.KINDS:
        return None
    handover = fastpath.Handover(
        decision=decision.reason,
        gate=decision.gate.to_json() if decision.gate is not None else None,
        setup_s=time.perf_counter() - started,  # loading the model and choosing (its eager batches included)
        started=started,
        lines=predictor.expected_rows,  # choose_for counted them
    )
    return fastpath.try_run(args, _model(args), _mode(args), _dtype(args), _err, handover=handover)


def _check(args: argparse.Namespace) -> int:
    from .reports.writers import path_problem
    from .settings import parse_tolerance

    for path in args.report:  # as the plugin's --jitcpu-report: refused before the model loads
        problem = path_problem(path)
        if problem:
            raise _usage(f"--report: {problem}")

    _check_outputs(args.input, [("--report", path) for path in args.report])
    if args.input:
        _check_input(args.input)
    atol, rtol = parse_tolerance(args.atol, "--atol"), parse_tolerance(args.rtol, "--rtol")
    from .inference import check_model  # torch: only once the arguments are known to be good

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    result = check_model(
        _model(args),
        args.task,
        input=args.input,
        input_format=args.input_format,
        modes=args.modes,
        dtypes=args.dtypes,
        batch_size=args.batch_size,
        max_seq_length=args.max_seq_length,
        examples=args.examples,
        atol=atol,
        rtol=rtol,
        report_paths=args.report,
    )
    return EXIT_FAILED if result.failed else EXIT_OK


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _dispatch(args: argparse.Namespace) -> int:
    """SIGTERM (a CI timeout, ``kill``) unwinds like Ctrl-C while a command runs, so temporary files are
    removed and the message says nothing was written (the default action kills the process where it
    stands). The caller's handler is put back afterwards (``main`` also runs inside other programs)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return _run(args) if args.command == "run" else _check(args)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return _run(args) if args.command == "run" else _check(args)
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    # No model hub: everything is read from local folders (a hub id is refused with a clear message).
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "run" and args.output is None and not (args.ray is not None and args.shards):
        parser.error("the following arguments are required: --output (or --shards DIR with --ray)")
    from .settings import UsageError

    try:
        return _dispatch(args)
    except UsageError as exc:
        _err(f"jitcpu {args.command}: error: {exc}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        _err(f"jitcpu {args.command}: interrupted; no output written")
        return 130


def entry() -> None:
    """The console script (and ``python -m pytest_jitcpu.cli``): :func:`main`, then exit.

    Once torch is loaded, a normal interpreter shutdown spends about a second unloading modules and
    native libraries (measured on the 3000-sentence benchmark: 1.0 s of a 7.6 s process) after every
    output is closed and renamed. So the exit handlers run (logging, temp folders, Ray), stdout and
    stderr are flushed, and the process ends there, with main's exit code.
    """
    code = main()
    if "torch" not in sys.modules:
        sys.exit(code)  # nothing heavy loaded (a usage error): the normal exit is instant
    import atexit

    atexit._run_exitfuncs()  # what Py_Finalize would run first; os._exit skips it
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can reach it
            code = code or 1
    os._exit(code)


if __name__ == "__main__":
    entry()
