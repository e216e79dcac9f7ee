"""The CI gate: compare this run's records with a previous JSON report (``--jitcpu-baseline=PATH``).

Checks are matched by (nodeid, model, mode, dtype). Statuses are ranked by their row in
:mod:`pytest_jitcpu.statuses`: ``pass`` (best), then ``fallback``, then ``mismatch`` / ``diverges`` /
``error`` (worst). A check *regressed* when

* its status rank got worse (``pass -> fallback``, ``pass -> diverges``, ``fallback -> mismatch`` ...),
* it still passes but its max abs diff grew past the tolerance the baseline recorded for it (a loosened
  ``atol`` hides a numerical regression otherwise), or
* it was serializable in the baseline and is not now, or
* it passed tested on other inputs in the baseline and passes *untested* now (no other valid input could
  be tried this time: the pass rests on the example alone).

``unavailable`` on either side is an environment change (no IPEX, no BF16 on this runner): listed, never
failing. Improvements, new checks and checks missing from this run are listed too; only regressions
fail the session (exit status 1).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..record import Record
from ..settings import UsageError
from ..statuses import TABLE, WORST_RANK
from . import markdown
from .json import load

# unavailable has no rank: on either side it is an environment change, never a regression.
RANK = {s.name: s.rank for s in TABLE if s.rank is not None}
Key = tuple[str, str, str, str]


def key(r: Record) -> Key:
    return (r.nodeid, r.model, r.mode, r.dtype)


@dataclass
class Change:
    """One check that differs from the baseline."""

    kind: str  # "regression", "improvement", "environment", "changed", "new", "missing"
    nodeid: str
    model: str
    mode: str
    dtype: str
    before: str | None
    after: str | None
    detail: str = ""

    def line(self) -> str:
        label = {"regression": "REGRESSION", "environment": "environment"}.get(self.kind, self.kind)
        what = f"{self.nodeid} [{self.model}] {self.mode}/{self.dtype}"
        states = f"{self.before or '-'} -> {self.after or '-'}"
        return f"{label}: {what}: {states}" + (f" ({self.detail})" if self.detail else "")

    def to_json(self) -> dict[str, Any]:
        return {
            "nodeid": self.nodeid,
            "model": self.model,
            "mode": self.mode,
            "dtype": self.dtype,
            "before": self.before,
            "after": self.after,
            "detail": self.detail or None,
        }


@dataclass
class Outcome:
    """What the gate found; ``failed`` is True when any check regressed."""

    path: str
    compared: int = 0
    changes: list[Change] = field(default_factory=list)
    error: str | None = None  # the baseline could not be read at the end of the session

    def of(self, kind: str) -> list[Change]:
        return [c for c in self.changes if c.kind == kind]

    @property
    def failed(self) -> bool:
        return bool(self.of("regression")) or self.error is not None

    @property
    def headline(self) -> str:
        if self.error is not None:
            return f"cannot compare with the baseline: {self.error}"
        counts = [
            (len(self.of("regression")), "regression", "regressions"),
            (len(self.of("improvement")), "improvement", "improvements"),
            (len(self.of("environment")), "environment change", "environment changes"),
            (len(self.of("changed")), "other change", "other changes"),
            (len(self.of("new")), "new check", "new checks"),
            (len(self.of("missing")), "missing check", "missing checks"),
        ]
        parts = [f"{n} {one if n == 1 else many}" for n, one, many in counts if n]
        if not self.of("regression"):
            parts.insert(0, "no regressions")
        return f"{', '.join(parts)} against {self.path} ({self.compared} checks compared)"

    @property
    def lines(self) -> list[str]:
        """Terminal lines: the headline, then regressions first, then everything else that changed."""
        order = ("regression", "improvement", "environment", "changed", "new", "missing")
        body = [c.line() for kind in order for c in self.of(kind)]
        tail = ["jitcpu baseline gate FAILED: a check got worse than in the baseline"] if self.of("regression") else []
        return [self.headline, *body, *tail]

    @property
    def markdown(self) -> str:
        """The section the Markdown report ends with (written by the Markdown writer's table)."""
        lines = ["### Against the baseline", "", f"`{self.path}`: {self.headline.split(' against ')[0]}."]
        if self.changes:
            order = ("regression", "improvement", "environment", "changed", "new", "missing")
            rows = (
                [
                    "**regression**" if kind == "regression" else kind,
                    f"`{c.nodeid}`",
                    markdown.escape(c.model),
                    c.mode,
                    c.dtype,
                    c.before or "",
                    c.after or "",
                    markdown.escape(c.detail),
                ]
                for kind in order
                for c in self.of(kind)
            )
            header = ["change", "test", "model", "mode", "dtype", "baseline", "now", "detail"]
            lines += ["", *markdown.table(header, rows)]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        kinds = {
            "regression": "regressions",
            "improvement": "improvements",
            "environment": "environment_changes",
            "changed": "other_changes",
            "new": "new",
            "missing": "missing",
        }
        data: dict[str, Any] = {"path": self.path, "failed": self.failed, "compared": self.compared}
        for kind, name in kinds.items():
            data[name] = [c.to_json() for c in self.of(kind)]
        return data


def read(path: str | Path) -> list[Record]:
    """The records of a JSON report; a missing or foreign file is a usage error naming the path."""
    where = f"--jitcpu-baseline: {path}"
    if not Path(path).is_file():
        raise UsageError(f"{where}: no such file (write one with --jitcpu-report={path} on a good run)")
    try:
        data = load(path)
    except ValueError as exc:  # json.JSONDecodeError is a ValueError too
        raise UsageError(f"{where}: not a jitcpu JSON report ({str(exc).split(': ', 1)[-1]})") from None
    except OSError as exc:
        raise UsageError(f"{where}: cannot be read ({exc.strerror or exc})") from None
    results = data.get("results")
    if not isinstance(results, list):
        raise UsageError(f"{where}: not a jitcpu JSON report (no 'results' list)")
    try:
        return [Record.from_json(r) for r in results]
    except TypeError as exc:
        raise UsageError(f"{where}: a result lacks a field a jitcpu report has ({exc})") from None


def validate(path: str | Path) -> None:
    """Raise UsageError unless ``path`` is a readable jitcpu JSON report (checked before tests run)."""
    read(path)


def compare(baseline: list[Record], current: list[Record], path: str = "baseline") -> Outcome:
    """Every difference between the baseline's checks and this run's."""
    outcome = Outcome(path=str(path))
    before = {key(r): r for r in baseline}
    after = {key(r): r for r in current}
    for k, now in after.items():
        was = before.get(k)
        if was is None:
            outcome.changes.append(_change("new", k, None, now.status, now.reason or ""))
            continue
        outcome.compared += 1
        change = _diff(k, was, now)
        if change is not None:
            outcome.changes.append(change)
    for k, was in before.items():
        if k not in after:
            outcome.changes.append(_change("missing", k, was.status, None, "not run this time"))
    return outcome


def _change(kind: str, k: Key, before: str | None, after: str | None, detail: str = "") -> Change:
    return Change(kind, *k, before, after, detail)


def _diff(k: Key, was: Record, now: Record) -> Change | None:
    if was.status != now.status:
        reason = now.reason or ""
        if "unavailable" in (was.status, now.status):
            return _change("environment", k, was.status, now.status, reason)
        old, new = RANK.get(was.status, WORST_RANK), RANK.get(now.status, WORST_RANK)
        if new > old:
            return _change("regression", k, was.status, now.status, _with_counterexample(reason, now))
        if new < old:
            return _change("improvement", k, was.status, now.status, was.reason or "")
        return _change("changed", k, was.status, now.status, reason)
    if now.status == "pass":
        grew = _diff_grew(was, now)
        if grew:
            return _change("regression", k, was.status, now.status, grew)
        if now.untested and _verdict(was) == "tested":
            detail = f"no longer tested on other inputs: {now.untested_reason}"
            return _change("regression", k, "pass", "pass (untested)", detail)
        if was.untested and _verdict(now) == "tested":
            return _change("improvement", k, "pass (untested)", "pass", "tested on other inputs now")
    if was.serializable is True and now.serializable is False:
        detail = f"no longer serializable: {now.serializable_reason or 'round trip failed'}"
        return _change("regression", k, was.status, now.status, detail)
    if was.serializable is False and now.serializable is True:
        return _change("improvement", k, was.status, now.status, "serializable now")
    return None


def _verdict(r: Record) -> str | None:
    g = r.generalization
    return g.get("verdict") if isinstance(g, dict) else None


def _diff_grew(was: Record, now: Record) -> str | None:
    """A passing check whose max abs diff grew past the tolerance the baseline recorded for it."""
    if was.max_abs_diff is None or now.max_abs_diff is None or was.atol is None:
        return None
    if now.max_abs_diff > was.max_abs_diff and now.max_abs_diff > was.atol:
        return (
            f"max abs diff grew from {was.max_abs_diff:.3g} to {now.max_abs_diff:.3g}, past the baseline's "
            f"atol {was.atol:.3g}"
        )
    return None


def _with_counterexample(reason: str, r: Record) -> str:
    return f"{reason}; counterexample: {r.counterexample}" if r.counterexample else reason


def gate(path: str | Path, records: list[Record]) -> Outcome:
    """Compare ``records`` with the baseline report at ``path`` (the plugin's session-finish step)."""
    try:
        baseline = read(path)
    except UsageError as exc:  # validated at start-up; the file changed or vanished during the run
        return Outcome(path=str(path), error=str(exc))
    return compare(baseline, records, str(path))
