"""Hypothesis strategies for model inputs shaped like one example batch.

From the example :class:`~pytest_jitcpu.inputs.Inputs` a :class:`Plan` records, per tensor, its value
domain (token ids, 0/1 attention masks with padding, binary flags, floats with the example's mean and
std) and, per dimension, whether its size may vary: an *axis* shared by every tensor that has it
(batch = dim 0 of all tensors; other dims grouped by their size, e.g. the sequence length of
``input_ids`` and ``attention_mask``). Which axes really vary is settled by asking eager
(:func:`settle`): hidden size, channels, or a ViT's image size are rejected by the model and stay fixed.

Values of a small integer tensor are drawn element by element (so a failure shrinks to readable ids);
larger tensors and floats come from a ``torch.Generator`` seeded by a drawn integer, so an example stays
within Hypothesis' data budget and is still reproducible and shrinkable (sizes shrink toward 1).
"""

from __future__ import annotations

import hashlib
import inspect
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from hypothesis import strategies as st

from .. import nested
from ..inputs import Inputs, normalize
from ..settings import GENERATE_FORMS, UsageError
from .domain import Domain, by_roles
from .variations import Variation

ELEMENTWISE_MAX = 64  # integer tensors up to this many elements are drawn element by element
BATCH_EXTRA = 2  # batch sizes 1 .. example + 2
AXIS_EXTRA = 4  # other varying sizes 1 .. example + 4
SEED_MAX = 2**31 - 1
# 0: the example's distribution; 1: uniform over its range; 2: zeros (Hypothesis favours a
# range's ends, so the edge case sits at one and the shrink target at the other).
FLOAT_STYLES = 3
_IDS_NAMES = ("input_ids", "decoder_input_ids", "ids")
_POSITION_LIMITS = ("max_position_embeddings", "n_positions", "max_seq_len", "max_sequence_length", "n_ctx")


@dataclass(frozen=True)
class TensorSpec:
    """How to generate one input tensor."""

    name: str  # the keyword, or "args[i]" for positional inputs
    kind: str  # "ids", "mask", "binary", "float", "fixed"
    dtype: torch.dtype
    shape: tuple[int, ...]
    axes: tuple[str | None, ...]  # per dim: the axis whose size it takes, or None (fixed)
    low: float = 0
    high: float = 0
    mean: float = 0.0
    std: float = 1.0
    padding: str = "right"  # masks: which side the zeros go
    example: Any = None  # the example value, for "fixed"


@dataclass(frozen=True)
class Axis:
    """A size shared by the dims that take it; ``low == high`` means it does not vary."""

    name: str
    size: int
    low: int
    high: int


@dataclass(frozen=True)
class Plan:
    """How to generate inputs like an example batch."""

    is_dict: bool
    names: tuple[str, ...]
    specs: tuple[TensorSpec, ...]
    axes: tuple[Axis, ...] = field(default_factory=tuple)

    @property
    def varying(self) -> tuple[Axis, ...]:
        return tuple(a for a in self.axes if a.high > a.low)


def model_config(model: Any) -> Any:
    """The Hugging Face config of the model or of its first submodule that has one, else None."""
    config = getattr(model, "config", None)
    if config is not None:
        return config
    if isinstance(model, torch.nn.Module):
        for sub in model.modules():
            config = getattr(sub, "config", None)
            if config is not None:
                return config
    return None


def _config_int(config: Any, names: tuple[str, ...]) -> int | None:
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _is_binary(t: torch.Tensor) -> bool:
    if t.dtype == torch.bool:
        return True
    if t.numel() == 0 or t.is_complex():
        return False
    return bool(((t == 0) | (t == 1)).all())


def _looks_like_mask(name: str, t: torch.Tensor, positional_index: int | None) -> bool:
    """0/1 and named like a mask; for positional inputs: 0/1, 2-D, a 1 in every row, not the first input."""
    if not _is_binary(t) or t.ndim == 0:
        return False
    if "mask" in name.lower():
        return True
    if positional_index is not None and positional_index > 0 and t.ndim == 2 and t.shape[1] > 1:
        return bool((t.reshape(t.shape[0], -1) != 0).any(dim=1).all())
    return False


def _padding_side(t: torch.Tensor) -> str:
    rows = (t != 0).reshape(-1, t.shape[-1]) if t.ndim else (t != 0).reshape(1, 1)
    left = bool((~rows[:, 0] & rows[:, -1]).any())
    return "left" if left else "right"


def _spec(name: str, value: Any, positional_index: int | None, config: Any, first_int: bool) -> TensorSpec:
    if not isinstance(value, torch.Tensor) or value.is_complex() or value.numel() == 0:
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else ()
        dtype = value.dtype if isinstance(value, torch.Tensor) else torch.float32
        return TensorSpec(name, "fixed", dtype, shape, (None,) * len(shape), example=value)
    t = value.detach()
    shape = tuple(t.shape)
    axes: tuple[str | None, ...] = (None,) * len(shape)
    if _looks_like_mask(name, t, positional_index):
        return TensorSpec(name, "mask", t.dtype, shape, axes, 0, 1, padding=_padding_side(t))
    if t.dtype == torch.bool or (_is_binary(t) and not t.is_floating_point() and "ids" not in name):
        return TensorSpec(name, "binary", t.dtype, shape, axes, 0, 1, mean=float(t.float().mean()))
    if not t.is_floating_point():
        low, high = int(t.min()), int(t.max())
        lname = name.lower()
        is_ids = lname.endswith(_IDS_NAMES) and "type" not in lname and "position" not in lname
        vocab = _config_int(config, ("vocab_size",)) if config is not None else None
        if vocab is not None and (is_ids or (positional_index is not None and first_int)) and 0 <= low <= high < vocab:
            low, high = 0, vocab - 1  # every id the embedding accepts, special tokens (often 0, 1, 2) included
        return TensorSpec(name, "ids", t.dtype, shape, axes, low, high)
    if _is_binary(t) and t.ndim:
        return TensorSpec(name, "binary", t.dtype, shape, axes, 0, 1, mean=float(t.float().mean()))
    f = t.float()
    finite = f[torch.isfinite(f)]
    if finite.numel() == 0:
        return TensorSpec(name, "fixed", t.dtype, shape, axes, example=value)
    std = float(finite.std()) if finite.numel() > 1 else 0.0
    return TensorSpec(
        name, "float", t.dtype, shape, axes, float(finite.min()), float(finite.max()), float(finite.mean()), std
    )


def plan_for(batch: Inputs, model: Any = None, domain: Domain | None = None) -> Plan:
    """The value domains of an example batch and, per dim, the axis of ``domain`` it takes (before
    :func:`settle`). ``domain`` defaults to :func:`pytest_jitcpu.domain.by_roles`."""
    config = model_config(model)
    if batch.is_dict:
        names = tuple(batch.kwargs)
        values = list(batch.kwargs.values())
    else:
        names = tuple(f"args[{i}]" for i in range(len(batch.args)))
        values = list(batch.args)
    specs: list[TensorSpec] = []
    first_int = True
    for i, (name, value) in enumerate(zip(names, values, strict=True)):
        spec = _spec(name, value, None if batch.is_dict else i, config, first_int)
        if spec.kind == "ids":
            first_int = False
        specs.append(spec)
    plan = Plan(batch.is_dict, names, tuple(specs))
    return _with_axes(plan, config, domain if domain is not None else by_roles(batch))


def _high(name: str, role: str, size: int, limit: int | None) -> int:
    """The largest size generated for an axis: a few more rows or positions; twice an image's side or an
    audio length."""
    if role == "batch":
        return size + BATCH_EXTRA
    if role in ("height", "width", "time"):  # image sides and audio lengths vary most in deployment
        return max(size + AXIS_EXTRA, 2 * size)
    high = size + AXIS_EXTRA
    if limit is not None and role == "sequence":
        high = max(size, min(high, limit - 2))  # RoBERTa-style position offsets use 2 slots
    return high


def _with_axes(plan: Plan, config: Any, domain: Domain) -> Plan:
    """Each spec's dims take the axis ``domain`` gives them; a dim outside the domain stays fixed. A tensor
    kept as is (``fixed``) pins the sizes of its dims: an axis of one of those sizes does not vary."""
    pinned = {size for s in plan.specs if s.kind == "fixed" for size in s.shape}
    limit = _config_int(config, _POSITION_LIMITS) if config is not None else None
    axes: dict[str, Axis] = {}
    new_specs = []
    for i, s in enumerate(plan.specs):
        key = s.name if plan.is_dict else i
        given = domain.axes(key)
        if s.kind == "fixed" or not s.shape or not given:
            new_specs.append(s)
            continue
        dims: list[str | None] = []
        for d, size in enumerate(s.shape):
            name = given.get(d)
            if name is None or (size in pinned and not domain.declared):
                dims.append(None)
                continue
            axes.setdefault(name, Axis(name, size, 1, _high(name, domain.role(name), size, limit)))
            dims.append(name)
        new_specs.append(replace(s, axes=tuple(dims)))
    return replace(plan, specs=tuple(new_specs), axes=tuple(axes.values()))


def _probe_sizes(axis: Axis) -> list[int]:
    """The sizes an axis is probed with: one larger, one smaller, and twice the example's (a model that
    takes only multiples of its patch or window size rejects the first two)."""
    return [
        n
        for n in dict.fromkeys((axis.size + 1, axis.size - 1, 2 * axis.size))
        if 1 <= n <= axis.high and n != axis.size
    ]


def settle(plan: Plan, accepts: Callable[[Inputs], bool]) -> Plan:
    """Keep an axis varying only if eager ``accepts`` inputs with another size of it (:func:`_probe_sizes`);
    an axis eager rejects every way (hidden size, channels, a fixed image size) stays at its size."""
    settled: list[Axis] = []
    sizes = {a.name: a.size for a in plan.axes}
    for axis in plan.axes:
        taken = [n for n in _probe_sizes(axis) if accepts(materialize(plan, {**sizes, axis.name: n}, _Fixed()))]
        if taken:
            settled.append(replace(axis, low=1, high=axis.high if max(taken) > axis.size else axis.size))
        else:
            settled.append(replace(axis, low=axis.size, high=axis.size))
    return replace(plan, axes=tuple(settled))


def resized(plan: Plan) -> list[Variation]:
    """For each varying axis, the example's shape with that axis resized as :func:`settle` probed it
    (values drawn the same way, so eager's outputs are cached already): tried after the free search, they
    show an artifact or a trace that keeps a dim of the domain static even when no draw hit that dim."""
    sizes = {a.name: a.size for a in plan.axes}
    made = []
    for axis in plan.varying:
        for size in _probe_sizes(axis):
            if axis.low <= size <= axis.high:
                inputs = materialize(plan, {**sizes, axis.name: size}, _Fixed())
                made.append(Variation("resized", f"{axis.name} {size} instead of {axis.size}", inputs))
    return made


def probe(plan: Plan, accepts: Callable[[Inputs], bool], n: int, seed: int = 0) -> bool:
    """Whether eager ``accepts`` any of up to ``n`` inputs drawn from ``plan`` (sizes and values from a
    fixed RNG): none means free generation cannot build a valid input here (coupled inputs), and a
    Hypothesis search would only spend hundreds of rejected draws finding that out. Stops at the first
    accepted input: the other draws would only cost eager runs (19 per check where eager takes them)."""
    draws = _Fixed(seed)
    for _ in range(n):
        sizes = {a.name: draws.integer(a.low, a.high) if a.high > a.low else a.size for a in plan.axes}
        if accepts(materialize(plan, sizes, draws)):
            return True
    return False


class _Draws:
    """Where generated numbers come from: Hypothesis (shrinkable) or a fixed RNG (probes)."""

    def integer(self, low: int, high: int) -> int:
        raise NotImplementedError

    def integers(self, low: int, high: int, n: int) -> list[int]:
        return [self.integer(low, high) for _ in range(n)]


class _Fixed(_Draws):
    def __init__(self, seed: int = 0) -> None:
        self.rng = random.Random(seed)

    def integer(self, low: int, high: int) -> int:
        return self.rng.randint(low, high)


def fixed_draws(seed: int = 0) -> _Draws:
    """Values from a fixed RNG (as :func:`settle` and :func:`resized` draw them: eager's outputs are cached)."""
    return _Fixed(seed)


class _Drawn(_Draws):
    def __init__(self, draw: Callable[[st.SearchStrategy[Any]], Any]) -> None:
        self.draw = draw

    def integer(self, low: int, high: int) -> int:
        return self.draw(st.integers(low, high))

    def integers(self, low: int, high: int, n: int) -> list[int]:
        return self.draw(st.lists(st.integers(low, high), min_size=n, max_size=n))


def materialize(plan: Plan, sizes: Mapping[str, int], draws: _Draws) -> Inputs:
    """Inputs with these axis sizes, values taken from ``draws``."""
    values = []
    for s in plan.specs:
        if s.kind == "fixed":
            values.append(s.example.clone() if isinstance(s.example, torch.Tensor) else s.example)
            continue
        shape = tuple(sizes[a] if a is not None else d for a, d in zip(s.axes, s.shape, strict=True))
        values.append(_tensor(s, shape, draws))
    if plan.is_dict:
        return Inputs(kwargs=dict(zip(plan.names, values, strict=True)))
    return Inputs(args=tuple(values))


def _generator(draws: _Draws) -> torch.Generator:
    return torch.Generator().manual_seed(draws.integer(0, SEED_MAX))


def _tensor(s: TensorSpec, shape: tuple[int, ...], draws: _Draws) -> torch.Tensor:
    n = 1
    for d in shape:
        n *= d
    if s.kind == "ids":
        low, high = int(s.low), int(s.high)
        if n <= ELEMENTWISE_MAX:
            return torch.tensor(draws.integers(low, high, n), dtype=torch.int64).reshape(shape).to(s.dtype)
        return torch.randint(low, high + 1, shape, generator=_generator(draws), dtype=torch.int64).to(s.dtype)
    if s.kind == "mask":
        return _mask(s, shape, draws)
    if s.kind == "binary":
        if n <= ELEMENTWISE_MAX:
            return torch.tensor(draws.integers(0, 1, n), dtype=torch.int64).reshape(shape).to(s.dtype)
        p = min(max(s.mean, 0.05), 0.95)
        return (torch.rand(shape, generator=_generator(draws)) < p).to(s.dtype)
    return _floats(s, shape, draws).to(s.dtype)


def _floats(s: TensorSpec, shape: tuple[int, ...], draws: _Draws) -> torch.Tensor:
    """Mostly the example's distribution (mean, std; sign kept when the example's values all had one);
    sometimes uniform over [min, max], or all zeros unless every example value was negative (an
    ``if x.sum() > 0`` traced on positive inputs flips only there)."""
    style = draws.integer(0, FLOAT_STYLES - 1)  # shrinks toward 0: the example's distribution
    g = _generator(draws)
    if style == 2 and s.high >= 0:
        return torch.zeros(shape)
    if style >= 1:
        return torch.rand(shape, generator=g) * (s.high - s.low) + s.low
    values = torch.randn(shape, generator=g) * s.std + s.mean
    if s.low >= 0:  # non-negative inputs (e.g. pixel values in [0, 1]) stay non-negative
        values = values.clamp_min(0.0)
    if s.high <= 0:
        values = values.clamp_max(0.0)
    return values


def _mask(s: TensorSpec, shape: tuple[int, ...], draws: _Draws) -> torch.Tensor:
    """0/1 with at least one 1 per row: each row keeps a prefix (right padding) or suffix (left padding)."""
    if not shape:
        return torch.ones((), dtype=s.dtype)
    length = shape[-1]
    rows = 1
    for d in shape[:-1]:
        rows *= d
    if rows <= ELEMENTWISE_MAX:
        pads = draws.integers(0, length - 1, rows)  # shrinks toward no padding
    else:
        g = _generator(draws)
        pads = torch.randint(0, length, (rows,), generator=g).tolist()
    mask = torch.ones(rows, length, dtype=torch.int64)
    for row, pad in enumerate(pads):
        if pad:
            if s.padding == "left":
                mask[row, :pad] = 0
            else:
                mask[row, length - pad :] = 0
    return mask.reshape(shape).to(s.dtype)


def strategy(plan: Plan) -> st.SearchStrategy[Inputs]:
    """Inputs like the example: axis sizes first (they shrink toward 1), then the values."""

    @st.composite
    def inputs(draw: Callable[[st.SearchStrategy[Any]], Any]) -> Inputs:
        draws = _Drawn(draw)
        sizes = {a.name: (draws.integer(a.low, a.high) if a.high > a.low else a.size) for a in plan.axes}
        return materialize(plan, sizes, draws)

    return inputs()


def user_strategy(generate: Any, examples: int, batch: Inputs | None = None) -> st.SearchStrategy[Inputs]:
    """The strategy for a user's ``generate=``: a Hypothesis strategy of inputs, a list of inputs, or a
    callable: taking ``batch_size=`` and/or ``seq_length=`` (a test suite's own input factory, see
    :class:`SizedFactory`), an example index (first parameter annotated ``int``), or a ``random.Random``."""
    if isinstance(generate, st.SearchStrategy):
        return generate.map(normalize)
    if isinstance(generate, list):
        if not generate:
            raise UsageError("generate: the list of inputs is empty")
        return st.sampled_from(generate).map(normalize)
    if callable(generate):
        names = size_parameters(generate)
        if names:
            return SizedFactory(generate, names, batch).strategy()
        if _takes_index(generate):
            return st.integers(0, max(examples - 1, 0)).map(lambda i: normalize(generate(i)))
        return st.randoms(use_true_random=False).map(lambda rng: normalize(generate(rng)))
    raise UsageError(f"generate: expected {GENERATE_FORMS}; got {type(generate).__name__}")


SIZE_PARAMETERS = ("batch_size", "seq_length")  # the names transformers' ModelTester classes take


def size_parameters(fn: Callable[..., Any]) -> list[str]:
    """Which of :data:`SIZE_PARAMETERS` a callable takes by keyword."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return []
    return [name for name in SIZE_PARAMETERS if name in params]


class SizedFactory:
    """A test suite's own input factory, ``factory(batch_size=..., seq_length=...)``.

    Sizes are drawn from 1 to the example's size + :data:`BATCH_EXTRA` (batch) / + :data:`AXIS_EXTRA`
    (sequence) and shrink toward 1. A size the factory cannot build (a tester that needs room for its
    image tokens raises) is rejected like an input eager rejects; :attr:`error` keeps the last such
    error, so a search where every size failed can say why it tested nothing.
    """

    def __init__(self, fn: Callable[..., Any], names: list[str], batch: Inputs | None) -> None:
        self.fn = fn
        self.names = names
        self.example = example_sizes(batch)
        self.error: str | None = None
        self.built = 0  # inputs the factory made
        self.rejected = 0  # sizes it raised on

    def strategy(self) -> st.SearchStrategy[Inputs]:
        extra = {"batch_size": BATCH_EXTRA, "seq_length": AXIS_EXTRA}
        drawn = {name: st.integers(1, self.example[name] + extra[name]) for name in self.names}
        return st.fixed_dictionaries(drawn).map(self._build)

    def _build(self, sizes: dict[str, int]) -> Inputs:
        from hypothesis import reject

        try:
            value = self.fn(**sizes)
        except Exception as exc:  # noqa: BLE001 - a size the suite cannot build is not a valid input
            given = ", ".join(f"{k}={v}" for k, v in sizes.items())
            message = (str(exc).strip().splitlines() or [""])[0][:200]
            self.error = f"generate({given}) raised {type(exc).__name__}: {message}"
            self.rejected += 1
            reject()
        self.built += 1
        return normalize(value)


def example_sizes(batch: Inputs | None) -> dict[str, int]:
    """The example's batch size and sequence length: dims 0 and 1 of its first tensor of 2+ dims
    (``input_ids`` in a Hugging Face batch); 2 and 7 (a ModelTester's usual ones) when it has none."""
    found = {"batch_size": 2, "seq_length": 7}
    tensors = nested.tensors(batch.values()) if batch is not None else []
    ranked = sorted((t for t in tensors if t.ndim >= 1), key=lambda t: t.ndim < 2)  # 2+ dims first, stable
    if ranked:
        first = ranked[0]
        found["batch_size"] = max(int(first.shape[0]), 1)
        if first.ndim >= 2:
            found["seq_length"] = max(int(first.shape[1]), 1)
    return found


def _takes_index(fn: Callable[..., Any]) -> bool:
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return False
    return bool(params) and params[0].annotation in (int, "int")


def digest(inputs: Inputs) -> str:
    """A stable key for generated inputs (same structure, dtypes, shapes and values: same key)."""
    h = hashlib.sha1(usedforsecurity=False)
    items = inputs.kwargs.items() if inputs.kwargs is not None else enumerate(inputs.args)
    for key, value in items:
        h.update(repr(key).encode())
        _feed(h, value)
    return h.hexdigest()


def _feed(h: Any, value: Any) -> None:
    flat, structure = nested.flatten(value)
    h.update(str(structure).encode())  # keys and nesting; the leaves follow in walk order
    for leaf in flat:
        if isinstance(leaf, torch.Tensor):
            t = leaf.detach().cpu().contiguous()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        else:
            h.update(repr(leaf).encode())


def summarize(inputs: Inputs, limit: int = 24) -> str:
    """Shapes and short values, e.g. ``input_ids=int64[1, 3] [[5, 9, 2]], attention_mask=int64[1, 3] [[1, 1, 0]]``."""
    if inputs.kwargs is not None:
        return ", ".join(f"{k}={_summary(v, limit)}" for k, v in inputs.kwargs.items())
    return ", ".join(_summary(v, limit) for v in inputs.args)


def _summary(value: Any, limit: int) -> str:
    if not isinstance(value, torch.Tensor):
        return repr(value) if len(repr(value)) <= 40 else type(value).__name__
    t = value.detach().cpu()
    head = f"{str(t.dtype).replace('torch.', '')}{list(t.shape)}"
    if t.numel() == 0:
        return head
    if t.is_floating_point():
        f = t.float()
        if t.numel() <= 8:
            return f"{head} {_round(f.tolist())}"
        std = float(f.std()) if f.numel() > 1 else 0.0
        return f"{head} mean={float(f.mean()):.3g} std={std:.3g}"
    if t.numel() <= limit:
        return f"{head} {t.tolist()}"
    flat = t.reshape(-1)[:8].tolist()
    return f"{head} [{', '.join(map(str, flat))}, ...] in [{int(t.min())}, {int(t.max())}]"


def _round(value: Any) -> Any:
    if isinstance(value, list):
        return [_round(v) for v in value]
    return float(f"{value:.3g}")
