"""Command-line options, ini keys and environment variables, and how they resolve into Settings.

Precedence: marker kwargs > command line > environment (``JITCPU_*``) > ini (``jitcpu_*``) > default.
An error names the source that held the bad value.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

import pytest

from .reports import writers
from .settings import (
    DEFAULT_DTYPES,
    DEFAULT_EXAMPLES,
    DEFAULT_MODES,
    DTYPES,
    FALLBACK_POLICIES,
    MODES,
    PARSERS,
    QUANTIZED_MODES,
    UNTESTED_POLICIES,
    Settings,
    UsageError,
    parse_flag,
    parse_modes,
)

MARKER_KWARGS = ("modes", "dtypes", "atol", "rtol", "fallback", "untested", "examples", "generate", "dynamic")
MARKER_LINE = (
    "jitcpu(modes=None, dtypes=None, atol=None, rtol=None, fallback=None, untested=None, examples=None, "
    "generate=None, dynamic=None): check models given to the "
    f"jitcpu fixture in these modes ({', '.join(MODES)}) and dtypes ({', '.join(DTYPES)}), with these tolerances "
    f"and fallback policy ({', '.join(FALLBACK_POLICIES)}), untested policy ({', '.join(UNTESTED_POLICIES)}); "
    "generate= makes the inputs the search tries (a callable, e.g. factory(batch_size=, seq_length=), a list or "
    "a Hypothesis strategy; in a module's pytestmark it serves every test there, a test's own marker wins); "
    "dynamic= declares the input domain as torch.export does, e.g. {'pixel_values': {0: 'batch'}} (False: static); "
    "unset values come from the command line, JITCPU_* environment variables and jitcpu_* ini keys."
)


def _argtype(parse: Callable[[Any, str], Any], flag: str) -> Callable[[str], Any]:
    def convert(value: str) -> Any:
        try:
            return parse(value, flag)
        except UsageError as exc:
            raise argparse.ArgumentTypeError(str(exc).split(": ", 1)[-1]) from None

    convert.__name__ = flag.lstrip("-").replace("-", "_")
    return convert


@dataclass(frozen=True)
class Option:
    name: str  # e.g. "modes" -> --jitcpu-modes, jitcpu_modes, JITCPU_MODES
    help: str
    default: Any

    @property
    def parse(self) -> Callable[[Any, str], Any]:
        return PARSERS[self.name]

    @property
    def flag(self) -> str:
        return f"--jitcpu-{self.name}"

    @property
    def ini(self) -> str:
        return f"jitcpu_{self.name}"

    @property
    def env(self) -> str:
        return f"JITCPU_{self.name.upper()}"


OPTIONS = (
    Option(
        "modes",
        f"comma-separated modes to check ({', '.join(MODES)}), or 'all' (all but the int8 ones: name "
        f"{', '.join(QUANTIZED_MODES)} with the atol/rtol they are to meet)",
        ",".join(DEFAULT_MODES),
    ),
    Option("dtypes", f"comma-separated dtypes ({', '.join(DTYPES)})", ",".join(DEFAULT_DTYPES)),
    Option("fallback", f"what a tracing fallback does ({', '.join(FALLBACK_POLICIES)})", "warn"),
    Option(
        "untested",
        f"what a pass that no other valid input could be tried on does ({', '.join(UNTESTED_POLICIES)})",
        "warn",
    ),
    Option("atol", "absolute tolerance for every dtype", "per-dtype scaled default"),
    Option("rtol", "relative tolerance for every dtype", "1.3e-6 fp32, 1.6e-2 bf16"),
    Option("examples", "generated inputs each passing trace is checked on (0: off)", DEFAULT_EXAMPLES),
    Option(
        "derandomize",
        "generate the same inputs on every run (false: new random inputs each run)",
        "true",
    ),
    Option(
        "serialize",
        "round-trip passing traces through torch.jit.save/load in a fresh Python without transformers "
        "(one loader process per session)",
        "true",
    ),
    Option(
        "isolate",
        "run each check in a forked child process, so a model that crashes the interpreter (segfault, abort) "
        "is an error record and the session goes on (false: in-process, e.g. to debug)",
        "true",
    ),
    Option(
        "timeout",
        "seconds an isolated check's child may send nothing (no phase, no record) before it is killed as hung "
        "and the check is an error record (0: no limit)",
        "900",
    ),
)


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("jitcpu", "jitcpu: check models under eager, TorchScript tracing and IPEX on CPU")
    for opt in OPTIONS:
        group.addoption(
            opt.flag,
            dest=f"jitcpu_{opt.name}",
            type=_argtype(opt.parse, opt.flag),
            default=None,
            metavar=opt.name.upper(),
            help=f"{opt.help}; env {opt.env}, ini {opt.ini}; default: {opt.default}",
        )
        parser.addini(opt.ini, f"{opt.help} (default: {opt.default})", default=None)
    group.addoption(
        "--jitcpu-ipex",
        dest="jitcpu_ipex",
        action="store_true",
        default=None,
        help="also check the ipex mode (Intel Extension for PyTorch); env JITCPU_IPEX, ini jitcpu_ipex; default: off",
    )
    parser.addini("jitcpu_ipex", "also check the ipex mode (default: false)", type="bool", default=False)
    parser.addini(
        "jitcpu_ipex_required",
        "make --jitcpu-ipex a usage error when IPEX is not usable here (default: false)",
        type="bool",
        default=False,
    )
    group.addoption(
        "--jitcpu-report",
        dest="jitcpu_report",
        action="append",
        default=None,
        metavar="PATH",
        help=f"write a report; {writers.HELP}; repeatable; "
        "env JITCPU_REPORT (paths separated by ','), ini jitcpu_report; default: none",
    )
    parser.addini(
        "jitcpu_report", f"report paths ({', '.join(writers.SUFFIXES)}) (default: none)", type="args", default=[]
    )
    group.addoption(
        "--jitcpu-baseline",
        dest="jitcpu_baseline",
        default=None,
        metavar="PATH",
        help="a previous JSON report: fail the session when a check got worse; env JITCPU_BASELINE, "
        "ini jitcpu_baseline; default: none",
    )
    parser.addini("jitcpu_baseline", "a previous JSON report to gate on (default: none)", default=None)


def resolve(config: pytest.Config, name: str, parse: Callable[[Any, str], Any]) -> Any:
    """The value of option ``name`` from --jitcpu-NAME > JITCPU_NAME > jitcpu_NAME, or None when none is set.

    The command-line value arrives parsed (its argparse ``type=``); an environment or ini value is given
    to ``parse(value, source)`` so an error names where the bad value came from.
    """
    cli = config.getoption(f"jitcpu_{name}")
    if cli is not None:
        return cli
    env_name = f"JITCPU_{name.upper()}"
    env = os.environ.get(env_name)
    if env is not None and env.strip():
        return parse(env, f"environment variable {env_name}")
    ini = config.getini(f"jitcpu_{name}")
    if ini not in (None, "", []):
        return parse(ini, f"ini option jitcpu_{name}")
    return None


def session_settings(config: pytest.Config) -> Settings:
    """Settings from command line > environment > ini > default (markers are applied per test)."""
    values = {opt.name: resolve(config, opt.name, opt.parse) for opt in OPTIONS}
    given = {name: value for name, value in values.items() if value is not None}
    settings = replace(Settings(), **given, ipex=ipex_requested(config))
    if "hypothesis" not in sys.modules:  # Hypothesis' plugin imports it only when a --hypothesis-* option is given
        return settings
    from .search.profiles import from_hypothesis  # unset examples/derandomize follow Hypothesis' profile and seed

    return from_hypothesis(settings, set(given), config.getoption("hypothesis_seed", None))


def ipex_requested(config: pytest.Config) -> bool:
    return bool(resolve(config, "ipex", parse_flag))


def _report_list(value: str | list[str], source: str) -> list[str]:
    """JITCPU_REPORT separates paths with ','; the ini key is a list already."""
    items = value.split(",") if isinstance(value, str) else value
    return [p.strip() for p in items if p.strip()]


def report_paths(config: pytest.Config) -> list[str]:
    paths = list(resolve(config, "report", _report_list) or [])
    for path in paths:
        problem = writers.path_problem(path)
        if problem:
            raise UsageError(f"--jitcpu-report: {problem}")
    return paths


def baseline_path(config: pytest.Config) -> str | None:
    return resolve(config, "baseline", lambda value, source: value.strip() or None)


@dataclass(frozen=True)
class Marker:
    """The ``jitcpu`` marks of one test merged into one (what :func:`marker_settings` reads of a mark)."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]


def merged_marker(marks: Iterable[pytest.Mark]) -> Marker | None:
    """A test's ``jitcpu`` marks (closest first: function, class, module) as one: the closer mark's
    keyword wins, so ``pytestmark = pytest.mark.jitcpu(generate=factory)`` serves a whole module and a
    test's own ``@pytest.mark.jitcpu(modes=...)`` adds to it."""
    found = list(marks)
    if not found:
        return None
    kwargs: dict[str, Any] = {}
    for mark in reversed(found):
        kwargs.update(mark.kwargs)
    return Marker(tuple(arg for mark in found for arg in mark.args), kwargs)


def marker_settings(base: Settings, marker: pytest.Mark | Marker | None, where: str) -> Settings:
    """Apply a ``@pytest.mark.jitcpu(...)`` on top of the session settings."""
    if marker is None:
        return base
    if marker.args:
        raise UsageError(f"{where}: @pytest.mark.jitcpu takes keyword arguments only ({', '.join(MARKER_KWARGS)})")
    unknown = [k for k in marker.kwargs if k not in MARKER_KWARGS]
    if unknown:
        raise UsageError(
            f"{where}: @pytest.mark.jitcpu got unknown keyword {unknown[0]!r}; choose from {', '.join(MARKER_KWARGS)}"
        )
    given = {key: value for key, value in marker.kwargs.items() if value is not None}
    return base.updated(source=f"{where}: @pytest.mark.jitcpu({{key}}=...)", **given)


def with_ipex(settings: Settings) -> Settings:
    """--jitcpu-ipex adds the ipex mode to whatever modes were chosen."""
    if settings.ipex and "ipex" not in settings.modes:
        return replace(settings, modes=parse_modes([*settings.modes, "ipex"]))
    return settings
