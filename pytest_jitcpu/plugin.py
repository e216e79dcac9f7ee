"""pytest wiring: options, marker, fixture, records on test reports, reports at the end of the session.

The session state lives in one :class:`Session` object in ``config.stash``. Records travel on each
``TestReport`` (attribute ``jitcpu`` and JUnit ``user_properties``), so pytest-xdist carries them to the
controller, which alone writes the reports.
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from . import options
from .environment import environment
from .fixture import JitcpuChecker
from .record import Record
from .report import sort_records, terminal_matrix, write
from .settings import Settings, UsageError

MARKER = "jitcpu"


class Session:
    """What one pytest session collects: settings, records, report paths."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.settings: Settings = options.session_settings(config)
        self.report_paths = options.report_paths(config)
        self.baseline = options.baseline_path(config)
        self.records: list[Record] = []
        self.written: list[Path] = []
        self.ipex_reason: str | None = None
        self.gate_lines: list[str] = []
        self.gate_failed = False
        self.write_errors: list[str] = []

    @property
    def is_worker(self) -> bool:
        return hasattr(self.config, "workerinput")

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Collect records on the controller (reports from xdist workers arrive here too)."""
        records = getattr(report, "jitcpu", None)
        if records and not self.is_worker:
            self.records.extend(Record.from_json(r) for r in records)


SESSION = pytest.StashKey[Session]()
CHECKER = pytest.StashKey[JitcpuChecker]()


def pytest_addoption(parser: pytest.Parser) -> None:
    options.add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", options.MARKER_LINE)
    try:
        session = Session(config)
        if session.baseline:
            from . import baseline

            baseline.validate(session.baseline)  # a missing or foreign baseline stops the run before tests
    except UsageError as exc:
        raise pytest.UsageError(str(exc)) from None
    if session.settings.ipex:
        from .backends import ipex

        session.ipex_reason = ipex.unavailable_reason()
        if session.ipex_reason and config.getini("jitcpu_ipex_required"):
            raise pytest.UsageError(
                f"--jitcpu-ipex: IPEX is required (ini jitcpu_ipex_required) but {session.ipex_reason}"
            )
    config.stash[SESSION] = session
    config.pluginmanager.register(session, "jitcpu-session")


def pytest_report_header(config: pytest.Config) -> list[str]:
    session = config.stash.get(SESSION, None)
    if session is None:
        return []
    s = options.with_ipex(session.settings)
    lines = [f"jitcpu: modes={','.join(s.modes)} dtypes={','.join(s.dtypes)} fallback={s.fallback}"]
    if s.ipex:
        lines.append(
            f"jitcpu: ipex not usable: {session.ipex_reason}" if session.ipex_reason else "jitcpu: ipex usable"
        )
    return lines


def _where(item: pytest.Item) -> str:
    return item.nodeid


def _item_settings(item: pytest.Item, session: Session) -> Settings:
    marker = item.get_closest_marker(MARKER)
    return options.with_ipex(options.marker_settings(session.settings, marker, _where(item)))


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Reject bad marker arguments before anything runs (workers fail the test in setup instead)."""
    state = config.stash.get(SESSION, None)
    if state is None or state.is_worker:
        return
    for item in items:
        if item.get_closest_marker(MARKER) is not None:
            try:
                _item_settings(item, state)
            except UsageError as exc:
                raise pytest.UsageError(str(exc)) from None


@pytest.fixture
def jitcpu(request: pytest.FixtureRequest) -> JitcpuChecker:
    """Check a model under eager, jit.trace (dict and tuple inputs), IPEX and more: ``jitcpu.check(model, inputs)``."""
    session = request.config.stash[SESSION]
    try:
        settings = _item_settings(request.node, session)
    except UsageError as exc:
        raise pytest.fail.Exception(str(exc), pytrace=False) from None
    checker = JitcpuChecker(settings, request.node.nodeid)
    request.node.stash[CHECKER] = checker
    return checker


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    """Put the records made so far on this phase's report (a check may run in a fixture's setup or
    teardown too); each record travels once, so xdist's controller sees every one."""
    report = yield
    checker = item.stash.get(CHECKER, None)
    if checker is not None and checker.reported < len(checker.records):
        fresh = checker.records[checker.reported :]
        checker.reported = len(checker.records)
        report.jitcpu = [r.to_json() for r in fresh]
        for r in fresh:
            prop = (f"jitcpu:{r.model}:{r.mode}:{r.dtype}", r.short())
            report.user_properties.append(prop)
            item.user_properties.append(prop)  # junitxml writes the teardown report's copy of these
    if (
        report.when == "call"
        and report.passed
        and (checker is None or not checker.records)
        and item.get_closest_marker(MARKER) is not None
    ):
        item.warn(
            pytest.PytestWarning(f"{item.nodeid}: marked @pytest.mark.jitcpu but jitcpu.check() was never called")
        )
    return report


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    state = session.config.stash.get(SESSION, None)
    if state is None or state.is_worker:
        return
    state.records = sort_records(state.records)
    env = environment()
    comparison = None
    extra: dict[str, Any] = {}
    if state.baseline:
        from . import baseline

        outcome = baseline.gate(state.baseline, state.records)
        state.gate_lines = outcome.lines
        state.gate_failed = outcome.failed
        comparison = outcome.markdown
        extra["baseline"] = outcome.to_json()
        if outcome.failed and session.exitstatus == 0:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
    for path in state.report_paths:
        try:
            state.written.append(write(path, state.records, env, extra or None, comparison))
        except OSError as exc:  # checked before the run, but a disk can fill or a folder vanish
            state.write_errors.append(f"jitcpu: could not write report {path}: {exc}")
            if session.exitstatus == 0:
                session.exitstatus = pytest.ExitCode.USAGE_ERROR  # as when the early check catches it


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    state = config.stash.get(SESSION, None)
    if state is None or state.is_worker:
        return
    verbosity = config.get_verbosity()
    if state.records and verbosity >= -1:
        lines = terminal_matrix(state.records, verbose=verbosity > 0)
        if verbosity < 0:
            lines = [f"jitcpu: {lines[-1]}"] if verbosity == -1 else []  # -q: the counts only
        else:
            terminalreporter.write_sep("=", "jitcpu compatibility matrix")
        for line in lines:
            terminalreporter.write_line(line)
    if state.gate_lines:
        terminalreporter.write_sep("=", "jitcpu baseline gate")
        for line in state.gate_lines:
            terminalreporter.write_line(line)
    for path in state.written:
        terminalreporter.write_sep("-", f"generated jitcpu report: {path}")
    for line in state.write_errors:
        terminalreporter.write_line(line, red=True, bold=True)
