"""The Markdown report: a page for a CI job summary (``$GITHUB_STEP_SUMMARY``) or a PR comment.

Read top-down by someone deciding whether to merge: one verdict line, the counts, a status line per
model with a sign (worst offenders first), the passing models folded into ``<details>`` so 200 of them
stay one click away, the reasons of what did not pass, then a Mermaid ``xychart-beta`` chart per model
of its speed-up over eager fp32 (GitHub renders Mermaid in job summaries and comments, no extra tool).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from .record import UNTESTED_MARK, Record
from .report import counts_text
from .settings import DTYPES, FAILING_STATUSES, MODES

# How bad a status is, for "worst first": silently wrong numbers beat a reference that did not run.
SEVERITY = {"mismatch": 5, "diverges": 4, "error": 3, "fallback": 2, "unavailable": 1, "pass": 0}
FAIL, WARN, OK = "❌", "⚠️", "✅"
CHARTS_OPEN = 10  # charts shown before the rest are folded into <details>


class Model:
    """The records of one (test, model) check: one row of the matrix."""

    def __init__(self, nodeid: str, model: str) -> None:
        self.nodeid = nodeid
        self.model = model
        self.records: dict[tuple[str, str], Record] = {}

    @property
    def counts(self) -> Counter[str]:
        return Counter(r.status for r in self.records.values())

    @property
    def sign(self) -> str:
        counts = self.counts
        if any(counts[s] for s in FAILING_STATUSES):
            return FAIL
        return WARN if counts["fallback"] or self.untested else OK

    @property
    def untested(self) -> int:
        """Passes that rest on the example alone (no other valid input could be tried)."""
        return sum(r.untested for r in self.records.values())

    @property
    def rank(self) -> tuple[int, int, int]:
        """Sort key: worst status first, then more non-passing checks first."""
        counts = self.counts
        worst = max((SEVERITY.get(s, 0) for s in counts), default=0)
        failing = sum(n for s, n in counts.items() if s in FAILING_STATUSES)
        other = sum(n for s, n in counts.items() if s != "pass")
        return (-worst, -failing, -other)

    def verdict(self) -> str:
        counts = self.counts
        parts = [f"{counts[s]} {s}" for s in sorted(counts, key=lambda s: -SEVERITY.get(s, 0)) if s != "pass"]
        if self.untested:
            parts.append(f"{self.untested} untested")
        return ", ".join(parts) if parts else f"{counts['pass']} pass"

    def speedups(self) -> list[tuple[str, float]]:
        """(mode dtype, eager fp32 latency / latency) for every passing record with a latency."""
        eager = self.records.get(("eager", "fp32"))
        if eager is None or not eager.latency_ms:
            return []
        out = []
        for (mode, dtype), r in self.records.items():
            if r.latency_ms and r.status == "pass":  # the speed of a wrong answer is no offer
                out.append((f"{mode} {dtype}", eager.latency_ms / r.latency_ms))
        return out


def models(records: Iterable[Record]) -> list[Model]:
    """One Model per (test, model), in report order, each with its records in canonical column order."""
    found: dict[tuple[str, str], Model] = {}
    for r in records:
        found.setdefault((r.nodeid, r.model), Model(r.nodeid, r.model)).records[(r.mode, r.dtype)] = r
    for m in found.values():
        m.records = {key: m.records[key] for key in _order(m.records)}
    return list(found.values())


def _order(keys: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    def key(k: tuple[str, str]) -> tuple[int, int]:
        mode, dtype = k
        return (
            DTYPES.index(dtype) if dtype in DTYPES else len(DTYPES),
            MODES.index(mode) if mode in MODES else len(MODES),
        )

    return sorted(keys, key=key)


def worst_first(found: list[Model]) -> list[Model]:
    return sorted(found, key=lambda m: m.rank)  # stable: ties keep the report's order


def escape(text: str) -> str:
    """Text for a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def _cell(value: float | None) -> str:
    return "" if value is None else f"{value:.2g}"


def status_cell(r: Record) -> str:
    if r.untested:
        text = f"**{UNTESTED_MARK}**"
    else:
        text = r.status if r.status == "pass" else f"**{r.status}**"
    if r.status in ("pass", "mismatch", "diverges") and r.max_abs_diff is not None and r.mode != "eager":
        text += f" ({_cell(r.max_abs_diff)})"
    return text


def _matrix(rows: list[Model], columns: list[tuple[str, str]]) -> list[str]:
    lines = [
        "|  | test | model | verdict | " + " | ".join(f"{m} {d}" for m, d in columns) + " |",
        "|---|---|---|---|" + "---|" * len(columns),
    ]
    for m in rows:
        cells = [status_cell(m.records[c]) if c in m.records else "" for c in columns]
        lines.append(f"| {m.sign} | `{m.nodeid}` | {escape(m.model)} | {m.verdict()} | " + " | ".join(cells) + " |")
    return lines


def chart(m: Model) -> list[str]:
    """A Mermaid xychart-beta bar chart of one model's speed-up over eager fp32 per mode and dtype."""
    points = m.speedups()
    if len(points) < 2:  # eager alone says nothing
        return []
    title = f"{m.model} ({m.nodeid.split('::', 1)[-1] or m.nodeid}): speed-up over eager fp32".replace('"', "'")
    top = max(value for _, value in points)
    return [
        "```mermaid",
        "xychart-beta",
        f'    title "{title}"',
        "    x-axis [" + ", ".join(f'"{label}"' for label, _ in points) + "]",
        f'    y-axis "speed-up (x, higher is faster)" 0 --> {max(1.0, top) * 1.1:.2f}',
        "    bar [" + ", ".join(f"{value:.2f}" for _, value in points) + "]",
        "```",
    ]


def _plural(n: int, what: str) -> str:
    return f"{n} {what}" if n == 1 else f"{n} {what}s"


def markdown(records: list[Record], environment: dict[str, Any], comparison: str | None = None) -> str:
    """The Markdown report of these records (see the module docstring for its layout)."""
    counts = Counter(r.status for r in records)
    env = environment
    found = worst_first(models(records))
    attention = [m for m in found if m.sign != OK]
    passing = [m for m in found if m.sign == OK]
    failing = sum(m.sign == FAIL for m in found)
    warned = sum(m.sign == WARN for m in found)
    untested = sum(m.sign == WARN and m.untested > 0 for m in found)
    sign = FAIL if failing else WARN if warned else OK
    headline = (
        f"{sign} **{failing} of {_plural(len(found), 'model')} failing**" if failing else f"{sign} **no model failing**"
    )
    if warned - untested:
        headline += f", {warned - untested} falling back"
    if untested:
        headline += f", {untested} untested on other inputs"
    headline += f", {len(passing)} passing ({len(records)} checks)"
    lines = [
        "## pytest-jitcpu compatibility report",
        "",
        headline,
        "",
        f"torch {env.get('torch')}, transformers {env.get('transformers')}, ipex {env.get('ipex') or 'none'}, "
        f"CPU {env.get('cpu')} ({env.get('isa')}), {env.get('threads')} threads",
        "",
        " | ".join(counts_text({**counts, "untested": sum(r.untested for r in records)}, bold=True)),
        "",
    ]
    columns = _order({(r.mode, r.dtype) for r in records})
    if attention:
        lines += ["### Needs attention (worst first)", "", *_matrix(attention, columns), ""]
    if passing:
        lines += [f"<details><summary>{OK} {_plural(len(passing), 'passing model')}</summary>", ""]
        lines += [*_matrix(passing, columns), "", "</details>", ""]
    details = [r for m in found for r in m.records.values() if r.status != "pass"]
    if details:
        lines += [
            "### Not passing",
            "",
            "| test | model | mode | dtype | status | reason |",
            "|---|---|---|---|---|---|",
        ]
        for r in details:
            reason = (r.reason or "") + (f"; counterexample: {r.counterexample}" if r.counterexample else "")
            lines.append(f"| `{r.nodeid}` | {escape(r.model)} | {r.mode} | {r.dtype} | {r.status} | {escape(reason)} |")
        lines.append("")
    for r in details:
        if r.replay:
            lines += [f"<details><summary>replay {escape(r.model)} {r.mode}/{r.dtype}</summary>", ""]
            lines += ["```python", r.replay.rstrip(), "```", "", "</details>", ""]
    untested_records = [r for m in found for r in m.records.values() if r.untested]
    if untested_records:
        lines += [f"### Untested passes ({UNTESTED_MARK}: matched on the example only)", ""]
        lines += ["| test | model | mode | dtype | why no other input was tried |", "|---|---|---|---|---|"]
        for r in untested_records:
            lines.append(f"| `{r.nodeid}` | {escape(r.model)} | {r.mode} | {r.dtype} | {escape(r.untested_reason)} |")
        lines.append("")
    unserializable = [r for r in records if r.serializable is False]
    if unserializable:
        lines += ["### Not serializable (torch.jit.save / load round trip)", ""]
        lines += ["| test | model | mode | dtype | reason |", "|---|---|---|---|---|"]
        for r in unserializable:
            reason = escape(r.serializable_reason or "")
            lines.append(f"| `{r.nodeid}` | {escape(r.model)} | {r.mode} | {r.dtype} | {reason} |")
        lines.append("")
    fused = [r for r in records if r.fused_ops]
    if fused:
        lines += ["### Fused ops", "", "| test | model | mode | dtype | fused ops |", "|---|---|---|---|---|"]
        for r in fused:
            lines.append(
                f"| `{r.nodeid}` | {escape(r.model)} | {r.mode} | {r.dtype} | {', '.join(r.fused_ops or [])} |"
            )
        lines.append("")
    charts = [c for c in (chart(m) for m in found) if c]
    if charts:
        lines += [
            "### Speed-up over eager fp32",
            "",
            f"Steady-state latency of eager fp32 divided by each mode's, per model (CPU {env.get('cpu')}); "
            "above 1 is faster than eager. Passing checks only.",
            "",
        ]
        for c in charts[:CHARTS_OPEN]:
            lines += [*c, ""]
        if len(charts) > CHARTS_OPEN:
            lines += [f"<details><summary>{len(charts) - CHARTS_OPEN} more charts</summary>", ""]
            for c in charts[CHARTS_OPEN:]:
                lines += [*c, ""]
            lines += ["</details>", ""]
    if comparison:
        lines += [comparison, ""]
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines) + "\n"
