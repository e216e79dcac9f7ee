"""The object behind the ``jitcpu`` fixture: ``jitcpu.check(model, inputs, **overrides)``."""

from __future__ import annotations

import warnings
from typing import Any

import pytest

from .record import CheckResult, Record, format_table
from .settings import Settings, UsageError


class JitcpuFallbackWarning(UserWarning):
    """A mode fell back (tracing failed; eager would be used). Fails the test with fallback="fail"."""


class JitcpuUntestedWarning(UserWarning):
    """A trace matched on the example, but no other valid input could be tried (its pass rests on the
    example alone). Fails the test with untested="fail"; hand valid inputs over with generate=."""


class JitcpuChecker:
    """Runs checks for one test and keeps their records for the reports."""

    def __init__(self, settings: Settings, nodeid: str) -> None:
        self.settings = settings
        self.nodeid = nodeid
        self.records: list[Record] = []
        self.results: list[CheckResult] = []
        self.reported = 0  # records already put on a test report

    def check(
        self, model: Any, inputs: Any, *, name: str | None = None, generate: Any = None, **overrides: Any
    ) -> CheckResult:
        """Check ``model`` on ``inputs`` in every selected mode and dtype.

        ``overrides``: modes, dtypes, atol, rtol, fallback, untested, examples (win over the marker and
        options). ``generate`` (else the marker's, e.g. a module's ``pytestmark``): the inputs the
        generalization search tries. Fails the test on a mismatch, divergence or eager error; a fallback
        warns, fails or is expected according to the fallback policy, an untested pass according to the
        untested policy.
        """
        try:
            settings = self.settings.updated(**overrides)
        except UsageError as exc:
            # from None: the message alone, without "During handling of the above exception ...".
            raise pytest.fail.Exception(f"jitcpu.check: {exc}", pytrace=False) from None
        if name is not None and not isinstance(name, str):
            raise pytest.fail.Exception(
                f"jitcpu.check: name: {name!r} is not a str; give the model's label as a string", pytrace=False
            )
        from . import isolation  # here, not at import: a session that never checks a model never imports torch

        label = self._label(name or type(model).__name__)
        if generate is None:
            generate = settings.generate
        try:
            result = isolation.check(
                model, inputs, settings=settings, nodeid=self.nodeid, name=label, generate=generate
            )
        except UsageError as exc:
            raise pytest.fail.Exception(f"jitcpu.check: {exc}", pytrace=False) from None
        self.records.extend(result.records)
        self.results.append(result)
        self._verdict(result, settings)
        return result

    def _label(self, name: str) -> str:
        """Several checks of the same model class in one test get distinct names: Bert, Bert#2, ..."""
        used = {r.model for r in self.records}
        if name not in used:
            return name
        n = 2
        while f"{name}#{n}" in used:
            n += 1
        return f"{name}#{n}"

    def _verdict(self, result: CheckResult, settings: Settings) -> None:
        failed = result.failed
        fallbacks = result.fallbacks
        unexpected: list[Record] = []
        if settings.fallback == "expect":
            unexpected = [r for r in result.records if r.mode != "eager" and r.status == "pass"]
        untested = result.untested
        problems = list(failed)
        if settings.fallback == "fail":
            problems += fallbacks
        if settings.untested == "fail":
            problems += untested
        if problems or unexpected:
            head = f"jitcpu: {result.model}: "
            parts = []
            if problems:
                parts.append(
                    f"{len(problems)} check(s) failed: "
                    + ", ".join(f"{r.mode}/{r.dtype} {'untested pass' if r.untested else r.status}" for r in problems)
                )
            if unexpected:
                parts.append(
                    "fallback expected but tracing succeeded (unexpected pass): "
                    + ", ".join(f"{r.mode}/{r.dtype}" for r in unexpected)
                )
            replays = [f"\n{r.replay}" for r in problems if r.replay]  # the divergence, as code to paste
            pytest.fail(head + "; ".join(parts) + "\n" + format_table(result.records) + "".join(replays), pytrace=False)
        if settings.fallback == "warn":
            for r in fallbacks:
                warnings.warn(
                    JitcpuFallbackWarning(f"jitcpu: {result.model} {r.mode}/{r.dtype} fell back to eager: {r.reason}"),
                    stacklevel=3,
                )
        if settings.untested == "warn":
            for r in untested:
                warnings.warn(
                    JitcpuUntestedWarning(
                        f"jitcpu: {result.model} {r.mode}/{r.dtype} passed on the example only, untested on any other "
                        f"input ({r.untested_reason}); hand valid inputs over with generate="
                    ),
                    stacklevel=3,
                )
