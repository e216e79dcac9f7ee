"""The names a user can pick from (modes, dtypes, fallback policies) and the parsing of their values.

Shared by the pytest plugin and the command line, so a bad value reads the same everywhere:
``--jitcpu-dtypes: unknown dtype 'bf8'; choose from fp32, bf16``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from .backends.table import ALL_MODES, DEFAULT_MODES, MODES, QUANTIZED_MODES, TRACE_MODES  # noqa: F401 - settings names them for everyone
from .statuses import FAILING_STATUSES, STATUSES  # noqa: F401 - the same, for the statuses

DTYPES: tuple[str, ...] = ("fp32", "bf16")
DEFAULT_DTYPES: tuple[str, ...] = ("fp32", "bf16")
FALLBACK_POLICIES: tuple[str, ...] = ("warn", "fail", "expect")
# What a pass whose trace was tried on no other valid input does (Record.untested).
UNTESTED_POLICIES: tuple[str, ...] = ("warn", "fail")
DEFAULT_EXAMPLES = 10
# An isolated check whose child sends nothing (no phase, no record) for this long is hung (a deadlock after
# the fork, a model that never returns): long enough for a big model's compile or export of one phase.
DEFAULT_TIMEOUT_S = 900.0


class UsageError(ValueError):
    """A value given by the user is not valid; the message names the source and the choices."""


def _split(value: str | Iterable[str], what: str, source: str) -> list[str]:
    if isinstance(value, str):
        items: list[Any] = value.replace(" ", ",").split(",")
    elif isinstance(value, (list, tuple, set, frozenset)):
        items = list(value)
    else:  # a number, a dict, a generator: say so rather than guess what it meant
        raise UsageError(f"{source}: {value!r} is not a list of {what}s; give a list such as ['a', 'b'] or 'a,b'")
    return [str(item).strip() for item in items if str(item).strip()]


def parse_choices(value: str | Iterable[str], choices: Sequence[str], what: str, source: str) -> tuple[str, ...]:
    """Parse a comma-separated list (or a sequence) of names; ``all`` selects every choice."""
    items = _split(value, what, source)
    if items == ["all"]:
        return tuple(choices)
    if not items:
        raise UsageError(f"{source}: no {what} given; choose from {', '.join(choices)}")
    for item in items:
        if item not in choices:
            raise UsageError(f"{source}: unknown {what} {item!r}; choose from {', '.join(choices)}")
    # Keep the canonical order and drop repeats.
    return tuple(c for c in choices if c in items)


def parse_modes(value: str | Iterable[str], source: str = "modes") -> tuple[str, ...]:
    # `all` is every mode but the quantized ones: those are named, with the tolerance they are to meet
    # (docs/quantization.md), so a suite that says `all` does not start failing on int8 error.
    if _split(value, "mode", source) == ["all"]:
        return ALL_MODES
    modes = parse_choices(value, MODES, "mode", source)
    # eager is the reference: it always runs and always gets a record.
    return modes if "eager" in modes else ("eager", *modes)


def parse_dtypes(value: str | Iterable[str], source: str = "dtypes") -> tuple[str, ...]:
    return parse_choices(value, DTYPES, "dtype", source)


def parse_fallback(value: str, source: str = "fallback") -> str:
    value = str(value).strip()
    if value not in FALLBACK_POLICIES:
        raise UsageError(f"{source}: unknown fallback policy {value!r}; choose from {', '.join(FALLBACK_POLICIES)}")
    return value


def parse_untested(value: str, source: str = "untested") -> str:
    value = str(value).strip()
    if value not in UNTESTED_POLICIES:
        raise UsageError(f"{source}: unknown untested policy {value!r}; choose from {', '.join(UNTESTED_POLICIES)}")
    return value


GENERATE_FORMS = (
    "a Hypothesis strategy of inputs, a list of inputs, or a callable (random.Random -> inputs, "
    "index: int -> inputs, or batch_size=/seq_length= -> inputs)"
)


def parse_generate(value: Any, source: str = "generate") -> Any:
    """A user's input factory, kept as given: a Hypothesis strategy, a list of inputs or a callable."""
    from hypothesis.strategies import SearchStrategy  # here: only a test that gives generate= pays for it

    if isinstance(value, (SearchStrategy, list)) or callable(value):
        return value
    raise UsageError(f"{source}: expected {GENERATE_FORMS}; got {type(value).__name__}")


DYNAMIC_FORMS = (
    "a dict {input name: {dim: name}} (positional inputs by index), as torch.export's dynamic_shapes, "
    "e.g. {'pixel_values': {0: 'batch'}}; None for an input or False for all keeps them static"
)


def parse_dynamic(value: Any, source: str = "dynamic") -> Any:
    """A user's ``dynamic=`` (the input domain, :mod:`pytest_jitcpu.search.domain`): None for the defaults, False for
    static shapes, else {input: {dim: name} or None}. Its names are checked against the inputs when a check runs."""
    if value is True:
        return None  # the defaults
    if value is False:
        return False
    if not isinstance(value, Mapping):
        raise UsageError(f"{source}: expected {DYNAMIC_FORMS}; got {type(value).__name__}")
    for key, axes in value.items():
        if not isinstance(key, (str, int)) or isinstance(key, bool):
            raise UsageError(f"{source}: input {key!r} is not an input name or a positional index")
        if axes is None:
            continue
        if not isinstance(axes, Mapping):
            raise UsageError(
                f"{source}: {key!r}: expected {{dim: name}} such as {{0: 'batch'}}, got {type(axes).__name__}"
            )
        for axis, name in axes.items():
            if not isinstance(axis, int) or isinstance(axis, bool):
                raise UsageError(f"{source}: {key!r}: dim {axis!r} is not an integer")
            if not isinstance(name, str) or not name.strip():
                raise UsageError(f"{source}: {key!r}: dim {axis} needs a name such as 'batch' (got {name!r})")
    return dict(value)


def parse_tolerance(value: str | float | None, source: str = "tolerance") -> float | None:
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "default", "none")):
        return None
    return _finite_non_negative(
        value, source, "is not a number; give a non-negative float such as 1e-5", "must be a finite number >= 0"
    )


def parse_fraction(value: str | float | None, source: str) -> float | None:
    """An accuracy budget (``--min-cosine``, ``--min-agreement``): a number in (0, 1], or None when not given."""
    if value is None:
        return None
    number = _finite_non_negative(
        value, source, "is not a number; give one in (0, 1], such as 0.99", "must be a number in (0, 1], such as 0.99"
    )
    if not 0 < number <= 1:
        raise UsageError(f"{source}: {value!r} must be a number in (0, 1], such as 0.99")
    return number


def _finite_non_negative(value: str | float, source: str, not_a_number: str, out_of_range: str) -> float:
    """``value`` as a float >= 0 and finite, else a UsageError "{source}: {value!r} <why>"."""
    try:
        if isinstance(value, bool):
            raise TypeError  # float(True) is 1.0: a flag given where a number was meant
        number = float(value)
    except (TypeError, ValueError):
        raise UsageError(f"{source}: {value!r} {not_a_number}") from None
    if not number >= 0 or number == float("inf"):
        raise UsageError(f"{source}: {value!r} {out_of_range}")
    return number


def parse_examples(value: str | int, source: str = "examples") -> int:
    try:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise TypeError  # int() would turn True into 1 and 1.5 into 1 without a word
        number = int(value)
    except (TypeError, ValueError):
        raise UsageError(f"{source}: {value!r} is not an integer; give 0 to turn generated inputs off") from None
    if number < 0:
        raise UsageError(f"{source}: {value!r} must be >= 0 (0 turns generated inputs off)")
    return number


def parse_timeout(value: str | float, source: str = "timeout") -> float:
    """Seconds (> 0), or 0 for no limit."""
    return _finite_non_negative(
        value,
        source,
        "is not a number of seconds; give 0 for no limit",
        "must be a number of seconds >= 0 (0: no limit)",
    )


def parse_flag(value: str | bool, source: str = "flag") -> bool:
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise UsageError(f"{source}: {value!r} is not a boolean; use true or false")


def unwritable(path: str) -> str | None:
    """Why a file cannot be created at ``path`` (checked before any work, not after), or None.

    Shared by the plugin's report paths and the command line's outputs."""
    if os.path.isdir(path):
        return "it is a directory"
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):  # the folders are created at the end; the first existing one decides
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        return f"{parent} is not a directory"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"{parent} is not writable"
    return None


@dataclass(frozen=True)
class Settings:
    """What one ``check`` runs: resolved from marker, command line, environment, ini and defaults."""

    modes: tuple[str, ...] = DEFAULT_MODES
    dtypes: tuple[str, ...] = DEFAULT_DTYPES
    atol: float | None = None
    rtol: float | None = None
    fallback: str = "warn"
    untested: str = "warn"
    examples: int = DEFAULT_EXAMPLES
    ipex: bool = False
    derandomize: bool = True
    serialize: bool = True
    generate: Any = None  # the inputs the generalization search tries (marker or check() generate=)
    dynamic: Any = None  # the input domain as the user declared it (None: the defaults by role; False: static)
    isolate: bool = True  # run each check in a forked child: a crash is an error record, not the session's end
    timeout: float = DEFAULT_TIMEOUT_S  # an isolated check's child silent this long is hung: killed, an error
    extra: dict = field(default_factory=dict)
    # Set by profiles.from_hypothesis: the search's seed, and which fields came from Hypothesis' profile/seed.
    seed: Any = None
    profile: str | None = None
    from_hypothesis: frozenset[str] = frozenset()

    def updated(self, source: str = "{key}", **changes: object) -> Settings:
        """A copy with the given fields parsed and replaced (unknown names are usage errors).

        ``source`` names where the values came from in an error, with ``{key}`` for the field.
        None leaves a field as it is, except atol/rtol, where it means the dtype's default."""
        parsed: dict[str, object] = {}
        for key, value in changes.items():
            if value is None and key not in ("atol", "rtol"):
                continue
            if key not in PARSERS:
                raise UsageError(f"unknown setting {key!r}; choose from {', '.join(PARSERS)}")
            parsed[key] = PARSERS[key](value, source.format(key=key))
        return replace(self, **parsed, from_hypothesis=self.from_hypothesis - parsed.keys())


# How each Settings field is parsed from a user's value: the marker, check(**overrides), the command
# line, the environment and ini all go through these.
PARSERS: dict[str, Callable[[Any, str], Any]] = {
    "modes": parse_modes,
    "dtypes": parse_dtypes,
    "atol": parse_tolerance,
    "rtol": parse_tolerance,
    "fallback": parse_fallback,
    "untested": parse_untested,
    "generate": parse_generate,
    "dynamic": parse_dynamic,
    "examples": parse_examples,
    "ipex": parse_flag,
    "derandomize": parse_flag,
    "serialize": parse_flag,
    "isolate": parse_flag,
    "timeout": parse_timeout,
}
