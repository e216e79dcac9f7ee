"""One row per mode: the only list of modes. Everything that names modes derives from it.

Settings (``MODES``, ``DEFAULT_MODES``, ``TRACE_MODES``), the divergence search, the serialization round
trip, ``jitcpu run``'s mode names, ``auto``'s candidates and their build cost, crash isolation (which
runtime's thread pool a fork does not copy), the fix hints (which modes are TorchScript), the report's
mode order and the schema's enum, the environment's versions, option help and CLI choices. Adding a
backend is one module under ``backends/`` and one row.

This module imports nothing heavy (no torch, transformers or Hypothesis): a row names its builder by
module and function, imported only when the mode is built.
"""

from __future__ import annotations

from dataclasses import dataclass

# What kind of program a mode runs: a TorchScript graph (its failures may be TorchScript's alone), torch
# itself (eager, or a torch.export / inductor program), or another runtime (the model converted to it).
FAMILIES: tuple[str, ...] = ("torch", "torchscript", "runtime")
# Build + warm-up of a mode not measured, in eager passes of `jitcpu run`'s reference batch: expensive.
UNMEASURED_BUILD_COST = 12.0


@dataclass(frozen=True)
class Backend:
    """One mode the engine can check and run."""

    name: str  # the engine's name, used in records, reports, markers and --jitcpu-modes
    module: str  # the module under pytest_jitcpu.backends that builds it
    builder: str  # the function in that module: (model, inputs, dtype) -> Built
    summary: str  # what runs, one line (README's modes table)
    cli_names: tuple[str, ...]  # names `jitcpu run --mode` accepts; the first is how it is shown
    default: bool = False  # in the default --jitcpu-modes
    # The round trip that proves the built program runs without the model's Python code: "torchscript"
    # (torch.jit.save/load in a process without transformers), "onnx"/"openvino" (the saved file run by its
    # runtime in a process that can import neither torch nor transformers), "aoti" (the .pt2 package run in
    # a process that can import neither transformers nor the model's module), or None (nothing to save).
    round_trip: str | None = None
    searched: bool = False  # the divergence search runs on it (it can bake a branch or a shape in)
    # Its builder takes the check's input domain (``domain=``) and declares its varying dims dynamic in
    # the artifact (torch.export's dynamic_shapes, OpenVINO's partial shapes).
    dynamic: bool = False
    not_searched: str | None = None  # why not, when that is worth a note on the record
    auto: bool = False  # `jitcpu run --mode auto` tries it by default
    not_in_auto: str | None = None  # why auto leaves it out unless --candidates names it
    package: str | None = None  # the distribution it needs beyond torch (its version goes in the report)
    import_name: str | None = None  # that package's import name
    version_key: str | None = None  # the key of its version in the report's environment
    cpu: str | None = None  # what it needs of the CPU, when anything
    extra: str | None = None  # the pytest-jitcpu extra that installs the package
    install: str | None = None  # how to install it, for an `unavailable` reason
    program: str = "traced module"  # what the built program is called in a reason ("... failed on ...")
    family: str = "torch"  # one of FAMILIES
    # Building and warming it up, in eager forward passes of `jitcpu run`'s reference batch (32 rows x 128
    # tokens): what `auto` expects choosing it to cost. Measured on all-MiniLM-L6-v2 (2 threads, AMD Zen5
    # and Intel Xeon): trace + freeze 3, ONNX export 5-6, OpenVINO conversion 10.
    build_cost: float = UNMEASURED_BUILD_COST
    # The runtime whose native thread pool, once this mode ran in a process, does not survive a fork: a
    # child forked after it deadlocked (measured, even in pure-Python code). Crash isolation then runs
    # checks in-process (backends.FORK_UNSAFE_POOLS) and never warms this mode up in the parent.
    fork_unsafe_pool: str | None = None
    # Crash isolation warms each mode up once in the parent (on a tiny Linear) before forking; not a mode
    # whose warm-up is a whole compile of its own (aoti: a minute or more of g++) that saves a child nothing.
    warm_up: bool = True
    attention: str | None = None  # the transformers attn_implementation it switches a copy of the model to
    # int8: compared by an accuracy budget the user states (run: --min-cosine/--min-agreement; the plugin:
    # the user's atol/rtol), never by fp tolerances; `auto` tries it only under such a budget, and `all`
    # in --jitcpu-modes leaves it out (its default tolerance would fail it, or hide its error if loosened).
    quantized: bool = False
    # A build needs calibration rows (static int8 activations): `jitcpu run` sets some of the input's own
    # rows aside for it; the plugin calibrates on the example inputs (noted on the record).
    calibrated: bool = False

    @property
    def display(self) -> str:
        return self.cli_names[0]

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"backend {self.name!r}: family {self.family!r} is not one of {FAMILIES}")

    @property
    def trace(self) -> bool:
        """A TorchScript trace (round-tripped with torch.jit.save/load)."""
        return self.round_trip == "torchscript"


_QUANTIZED_NOT_SEARCHED = (
    "the same program as {0} before quantizing (searched there): int8 changes values, not the graph"
)

BACKENDS: tuple[Backend, ...] = (
    Backend(
        "eager",
        "eager",
        "build",
        "the reference: `model(**inputs)` in eval mode, run twice to prove it is deterministic",
        cli_names=("eager",),
        default=True,
        auto=True,
        build_cost=0.0,
    ),
    Backend(
        "trace-dict",
        "trace",
        "build_dict",
        "`torch.jit.trace(model, example_kwarg_inputs=inputs, strict=False)`, then `torch.jit.freeze`",
        cli_names=("trace", "trace-dict"),
        default=True,
        round_trip="torchscript",
        searched=True,
        auto=True,
        family="torchscript",
        build_cost=3.0,
    ),
    Backend(
        "trace-tuple",
        "trace",
        "build_tuple",
        "the same with a positional tuple in `forward()`'s parameter order (a skipped parameter between two "
        "given ones is filled with its default only if that is a tensor; otherwise `fallback`, never a tensor "
        "bound to the wrong parameter)",
        cli_names=("trace-tuple",),
        default=True,
        round_trip="torchscript",
        searched=True,
        family="torchscript",
        build_cost=3.0,
    ),
    Backend(
        "ipex",
        "ipex",
        "build",
        '`ipex.optimize(level="O1")`, traced and frozen (`--jitcpu-ipex`)',
        cli_names=("ipex",),
        round_trip="torchscript",
        searched=True,
        auto=True,
        package="intel-extension-for-pytorch",
        import_name="intel_extension_for_pytorch",
        version_key="ipex",
        cpu="bf16: avx_ne_convert, or avx512bw + avx512vl + avx512dq",
        extra="ipex",
        install="pip install 'pytest-jitcpu[ipex]' with torch 2.8.*",
        family="torchscript",
        build_cost=4.0,
    ),
    Backend(
        "export",
        "export",
        "build",
        "`torch.export.export` with the input domain's dims dynamic (batch, sequence, audio length, image size)",
        cli_names=("export",),
        searched=True,
        dynamic=True,
        program="exported program",
        # its module runs the same ATen kernels as eager through an FX graph: measured 0.96-0.99x eager
        not_in_auto="runs the same kernels as eager, no speed to gain",
        build_cost=5.0,
    ),
    Backend(
        "compile",
        "compile",
        "build",
        '`torch.compile(backend="inductor")` with freezing',
        cli_names=("compile",),
        not_searched="torch.compile guards and recompiles on other inputs",
        # inductor: 1.17x eager on MiniLM, but 1-2 minutes of compiling, again for each new batch size
        not_in_auto="compiles for minutes, and again per new batch size",
    ),
    Backend(
        "aoti",
        "aoti",
        "build",
        "`torch.export` with the input domain's dims dynamic, `aoti_compile_and_package` into a `.pt2` with its "
        "shape contract, loaded with `aoti_load_package`; an input outside the contract is refused, not run "
        "(bf16: autocast written into the program; needs a C++ compiler)",
        cli_names=("aoti",),
        round_trip="aoti",
        searched=True,
        dynamic=True,
        program="aoti package",
        # measured on tiny models and MiniLM (docs/aoti.md): 1-3 minutes of g++ per model on 2 shared cores;
        # 4x eager on a tiny BERT (Python overhead), within noise of eager on MiniLM at batch 32
        not_in_auto="compiles C++ for minutes per model before the first row, and is not faster on a CPU encoder",
        # g++ (one thread) took 13 one-thread eager passes of MiniLM's reference batch; eager with more
        # threads gets faster, the compile does not
        build_cost=30.0,
        warm_up=False,
    ),
    Backend(
        "onnx",
        "onnx",
        "build",
        "`torch.onnx.export(dynamo=True)` with the input domain's dims dynamic, run in ONNX Runtime's CPU provider "
        "(fp32; bf16 is `unavailable`: no bf16 Gemm in ONNX Runtime's CPU provider)",
        cli_names=("onnx",),
        round_trip="onnx",
        searched=True,
        dynamic=True,
        package="onnxruntime",
        import_name="onnxruntime",
        version_key="onnxruntime",
        extra="onnx",
        install="pip install 'pytest-jitcpu[onnx]'",
        program="ONNX model",
        auto=True,
        family="runtime",
        build_cost=6.0,
    ),
    Backend(
        "openvino",
        "openvino",
        "build",
        '`openvino.convert_model(model, example_input=inputs)` compiled for `"CPU"` with every input dim dynamic, '
        '`INFERENCE_PRECISION_HINT` `"f32"` (bf16 only on a CPU with native BF16)',
        cli_names=("openvino",),
        round_trip="openvino",
        searched=True,
        dynamic=True,
        package="openvino",
        import_name="openvino",
        version_key="openvino",
        cpu="bf16: native BF16 (avx512_bf16 or AMX)",
        extra="openvino",
        install="pip install 'pytest-jitcpu[openvino]'",
        program="OpenVINO model",
        auto=True,
        family="runtime",
        build_cost=10.0,
        fork_unsafe_pool="OpenVINO",  # compiling for CPU starts it
    ),
    # BetterTransformer's successors (docs/attention.md): each runs a copy of the model switched to one
    # attention implementation, eagerly; searched because padding is where they differ.
    Backend(
        "attn-eager",
        "attention",
        "build_eager",
        '`model.set_attn_implementation("eager")` on a copy (weights shared), run eagerly: the matmul-softmax '
        "attention",
        cli_names=("attn-eager",),
        searched=True,
        auto=True,
        program="model with eager attention",
        attention="eager",
        build_cost=0.5,  # a copy of the modules sharing the weights: no compile
    ),
    Backend(
        "attn-sdpa",
        "attention",
        "build_sdpa",
        '`model.set_attn_implementation("sdpa")` on a copy, run eagerly: '
        "`torch.nn.functional.scaled_dot_product_attention`",
        cli_names=("attn-sdpa",),
        searched=True,
        auto=True,
        program="model with sdpa attention",
        attention="sdpa",
        build_cost=0.5,
    ),
    Backend(
        "attn-flex",
        "attention",
        "build_flex",
        '`model.set_attn_implementation("flex_attention")` on a copy, run eagerly; transformers compiles '
        "the flex kernel with torch.compile on the first call",
        cli_names=("attn-flex",),
        searched=True,
        program="model with flex_attention",
        attention="flex_attention",
        # measured on a tiny BERT: 8 s to compile the kernel, again (4-35 s) for each new batch shape class
        not_in_auto="compiles its kernel for seconds per new shape, like compile",
    ),
    Backend(
        "onnx-int8",
        "onnx",
        "build_int8",
        "the `onnx` program quantized by ONNX Runtime's `quantize_dynamic` (int8 weights, activations quantized "
        "per batch at run time; per-channel weights, 7-bit `reduce_range` on a CPU without VNNI), fp32 only",
        cli_names=("onnx-int8",),
        round_trip="onnx",
        not_searched=_QUANTIZED_NOT_SEARCHED.format("onnx"),
        package="onnxruntime",
        import_name="onnxruntime",
        version_key="onnxruntime",
        extra="onnx",
        install="pip install 'pytest-jitcpu[onnx]'",
        program="quantized ONNX model",
        quantized=True,
        dynamic=True,
        family="runtime",
        build_cost=7.0,  # the onnx export plus quantize_dynamic (about one eager pass)
    ),
    Backend(
        "openvino-int8",
        "openvino",
        "build_int8",
        "the `openvino` model quantized by NNCF's `nncf.quantize` (int8 weights and activations, calibrated on "
        "rows of the input set aside for it), compiled for CPU, fp32 only",
        cli_names=("openvino-int8",),
        round_trip="openvino",
        not_searched=_QUANTIZED_NOT_SEARCHED.format("openvino"),
        package="nncf",
        import_name="nncf",
        version_key="nncf",
        extra="quant",
        install="pip install 'pytest-jitcpu[quant]'",
        program="quantized OpenVINO model",
        quantized=True,
        calibrated=True,
        dynamic=True,
        family="runtime",
        build_cost=14.0,  # the conversion plus NNCF's statistics (the calibration rows' passes come on top)
        fork_unsafe_pool="OpenVINO",
    ),
    Backend(
        "openvino-int8-dynamic",
        "openvino",
        "build_int8_dynamic",
        "the `openvino` model with int8 weights (per output channel) and activations quantized per token at "
        "run time by OpenVINO's CPU plugin (no calibration), fp32 only",
        cli_names=("openvino-int8-dynamic",),
        round_trip="openvino",
        not_searched=_QUANTIZED_NOT_SEARCHED.format("openvino"),
        package="openvino",
        import_name="openvino",
        version_key="openvino",
        extra="openvino",
        install="pip install 'pytest-jitcpu[openvino]'",
        program="quantized OpenVINO model",
        quantized=True,
        dynamic=True,
        family="runtime",
        build_cost=6.0,  # the conversion; quantizing the weights takes milliseconds
        fork_unsafe_pool="OpenVINO",
    ),
)

_BY_NAME = {b.name: b for b in BACKENDS}


def backend(name: str) -> Backend:
    """The row of engine mode ``name`` (KeyError for an unknown one: callers validate names first)."""
    return _BY_NAME[name]


MODES: tuple[str, ...] = tuple(b.name for b in BACKENDS)
DEFAULT_MODES: tuple[str, ...] = tuple(b.name for b in BACKENDS if b.default)
TRACE_MODES: tuple[str, ...] = tuple(b.name for b in BACKENDS if b.trace)
ROUND_TRIP_MODES: tuple[str, ...] = tuple(b.name for b in BACKENDS if b.round_trip)
SEARCHED_MODES: tuple[str, ...] = tuple(b.name for b in BACKENDS if b.searched)
DYNAMIC_MODES: tuple[str, ...] = tuple(b.name for b in BACKENDS if b.dynamic)
# Modes whose failure may be TorchScript's alone: a torch.export-based mode may still take the model.
TORCHSCRIPT_MODES: tuple[str, ...] = tuple(b.name for b in BACKENDS if b.family == "torchscript")
# Modes crash isolation does not warm up in the parent: running one would make the parent unforkable.
FORK_UNSAFE_MODES: frozenset[str] = frozenset(b.name for b in BACKENDS if b.fork_unsafe_pool)
NOT_WARMED: frozenset[str] = FORK_UNSAFE_MODES | frozenset(b.name for b in BACKENDS if not b.warm_up)
ATTENTION_MODES: tuple[str, ...] = tuple(b.name for b in BACKENDS if b.attention)
# `jitcpu run --mode` names -> engine modes (`trace` is the Trainer's jit_mode_eval: dict inputs).
CLI_NAMES: dict[str, str] = {cli: b.name for b in BACKENDS for cli in b.cli_names}
QUANTIZED_MODES: tuple[str, ...] = tuple(b.name for b in BACKENDS if b.quantized)
# What `all` selects in --jitcpu-modes / `jitcpu check --modes`: every mode but the quantized ones (named
# explicitly, with the tolerance they are to meet).
ALL_MODES: tuple[str, ...] = tuple(b.name for b in BACKENDS if not b.quantized)
AUTO_CANDIDATES: tuple[str, ...] = tuple(b.display for b in BACKENDS if b.auto)
NOT_IN_AUTO: dict[str, str] = {b.display: b.not_in_auto for b in BACKENDS if b.not_in_auto}
DISPLAY: dict[str, str] = {b.name: b.display for b in BACKENDS}
