"""pytest wiring: options, marker, fixture, records on test reports, reports at the end of the session.

This module (the ``pytest11`` entry point), the package's ``__init__`` (lazy re-exports), options and
settings import neither torch, transformers nor Hypothesis: the engine is imported when a test first calls
``jitcpu.check``, and the environment (torch's version, the CPU) only when a report or the matrix is
written. ``tests/test_load_cost.py`` proves it; ``benchmarks/plugin_load.py`` measures the load cost.

The session state lives in one :class:`Session` object in ``config.stash``; its reporting hooks are its
own methods, and it is registered as a plugin only on the controller (not on xdist workers), and
unregistered in ``pytest_unconfigure``, the way pytest's junitxml registers ``LogXML``. Records travel on
each ``TestReport`` (attribute ``jitcpu`` and JUnit ``user_properties``), so pytest-xdist carries them to
the controller, which alone writes the reports: as they arrive (:mod:`pytest_jitcpu.reports.journal`, so a session
that dies leaves them) and at the end.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from . import options
from .record import Record
from .reports.journal import Journal
from .settings import Settings, UsageError

if TYPE_CHECKING:
    from .fixture import JitcpuChecker

MARKER = "jitcpu"


class Session:
    """What one pytest session collects: settings, records, report paths; its hooks run on the controller."""

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
        self.environment: dict[str, Any] | None = None
        self.journal = Journal(self.report_paths, self._write_partial)

    def pytest_report_header(self, config: pytest.Config) -> list[str]:
        s = options.with_ipex(self.settings)
        lines = [
            f"jitcpu: modes={','.join(s.modes)} dtypes={','.join(s.dtypes)} fallback={s.fallback} untested={s.untested}"
        ]
        if s.ipex:
            lines.append(f"jitcpu: ipex not usable: {self.ipex_reason}" if self.ipex_reason else "jitcpu: ipex usable")
        return lines

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Collect records (reports from xdist workers arrive here too)."""
        records = getattr(report, "jitcpu", None)
        if records:
            fresh = [Record.from_json(r) for r in records]
            self.records.extend(fresh)
            self.journal.add(fresh)  # on disk now: the session may die before sessionfinish

    def _write_partial(self, records: list[Record]) -> float:
        """The reports so far, marked ``"complete": false`` (rewritten as the run goes); the seconds the
        writing took (the environment, found once, does not count)."""
        from .environment import environment
        from .reports import sort_records, write

        if self.environment is None:
            self.environment = environment()
        start = time.monotonic()
        for path in self.report_paths:
            try:
                write(path, sort_records(records), self.environment, {"complete": False})
            except OSError:
                pass  # the final write reports it
        return time.monotonic() - start

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if not self.records and not self.report_paths and not self.baseline:
            return  # nothing was checked and nothing asked for: no import of torch for the environment
        from .environment import environment
        from .reports import sort_records, write

        self.records = sort_records(self.records)
        env = self.environment or environment()
        comparison = None
        extra: dict[str, Any] = {"complete": True}
        if self.baseline:
            from .reports import baseline

            outcome = baseline.gate(self.baseline, self.records)
            self.gate_lines = outcome.lines
            self.gate_failed = outcome.failed
            comparison = outcome.markdown
            extra["baseline"] = outcome.to_json()
            if outcome.failed and session.exitstatus == 0:
                session.exitstatus = pytest.ExitCode.TESTS_FAILED
        for path in self.report_paths:
            try:
                self.written.append(write(path, self.records, env, extra or None, comparison))
            except Exception as exc:  # noqa: BLE001 - checked before the run, but a disk can fill or a folder vanish
                self.write_errors.append(f"jitcpu: could not write report {path}: {exc}")
                if session.exitstatus == 0:
                    session.exitstatus = pytest.ExitCode.USAGE_ERROR  # as when the early check catches it
        if not self.write_errors:
            self.journal.finish()  # the reports are whole: the journals are no longer needed

    def pytest_terminal_summary(self, terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
        verbosity = config.get_verbosity()
        if self.records and verbosity >= -1:
            from .reports.terminal import terminal_matrix

            lines = terminal_matrix(self.records, verbose=verbosity > 0)
            if verbosity < 0:
                lines = [f"jitcpu: {lines[-1]}"] if verbosity == -1 else []  # -q: the counts only
            else:
                terminalreporter.write_sep("=", "jitcpu compatibility matrix")
            for line in lines:
                terminalreporter.write_line(line)
        if self.gate_lines:
            terminalreporter.write_sep("=", "jitcpu baseline gate")
            for line in self.gate_lines:
                terminalreporter.write_line(line)
        for path in self.written:
            terminalreporter.write_sep("-", f"generated jitcpu report: {path}")
        for line in self.write_errors:
            terminalreporter.write_line(line, red=True, bold=True)


SESSION = pytest.StashKey[Session]()
CHECKER = pytest.StashKey["JitcpuChecker"]()
SETTINGS = pytest.StashKey[Settings]()  # a marked test's settings, parsed in its setup
PLUGIN_NAME = "jitcpu-session"
HTML_PLUGIN_NAME = "jitcpu-html"


def pytest_addoption(parser: pytest.Parser) -> None:
    options.add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", options.MARKER_LINE)
    try:
        session = Session(config)
        if session.baseline:
            from .reports import baseline

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
    config.stash[SESSION] = session  # workers read the settings from here
    if not hasattr(config, "workerinput"):  # reports are merged and written on the controller only
        config.pluginmanager.register(session, PLUGIN_NAME)
    # pytest-html's hook specs exist only when it is installed; workers need the hooks too (the
    # per-test table is made where the test ran and travels as an extra on its report).
    if config.pluginmanager.hasplugin("html") and getattr(config.option, "htmlpath", None):
        from .reports.html import HtmlHooks

        config.pluginmanager.register(HtmlHooks(lambda: session.records), HTML_PLUGIN_NAME)


def pytest_unconfigure(config: pytest.Config) -> None:
    html = config.pluginmanager.get_plugin(HTML_PLUGIN_NAME)
    if html is not None:
        config.pluginmanager.unregister(html)
    session = config.stash.get(SESSION, None)
    if session is not None:
        del config.stash[SESSION]
        if config.pluginmanager.is_registered(session):
            config.pluginmanager.unregister(session)


def _item_settings(item: pytest.Item) -> Settings:
    """The marker's settings on top of the session's; parsed once, in setup."""
    cached = item.stash.get(SETTINGS, None)
    if cached is not None:
        return cached
    base = item.config.stash[SESSION].settings
    marker = options.merged_marker(item.iter_markers(MARKER))
    settings = options.with_ipex(options.marker_settings(base, marker, item.nodeid))
    item.stash[SETTINGS] = settings
    return settings


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """A bad marker argument errors this test at setup (with or without the fixture); the session goes on."""
    if item.get_closest_marker(MARKER) is None or SESSION not in item.config.stash:
        return
    try:
        _item_settings(item)
    except UsageError as exc:
        raise pytest.fail.Exception(str(exc), pytrace=False) from None


@pytest.fixture
def jitcpu(request: pytest.FixtureRequest) -> JitcpuChecker:
    """Check a model under eager, jit.trace (dict and tuple inputs), IPEX and more: ``jitcpu.check(model, inputs)``."""
    from .fixture import JitcpuChecker

    try:
        settings = _item_settings(request.node)
    except UsageError as exc:  # setup reports it first; this is for a fixture requested another way
        raise pytest.fail.Exception(str(exc), pytrace=False) from None
    checker = JitcpuChecker(settings, request.node.nodeid)
    request.node.stash[CHECKER] = checker
    return checker


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    """A marked test that passed without calling check() warns; inside the call phase, so a user's
    ``filterwarnings = error`` fails that test instead of raising out of a reporting hook."""
    result = yield
    # A module's pytestmark (say, generate= for every test) is no promise that each test there checks a model.
    if any(m.name == MARKER for m in getattr(item, "own_markers", ())):
        checker = item.stash.get(CHECKER, None)
        if checker is None or not checker.records:
            item.warn(
                pytest.PytestWarning(f"{item.nodeid}: marked @pytest.mark.jitcpu but jitcpu.check() was never called")
            )
    return result


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
    return report
