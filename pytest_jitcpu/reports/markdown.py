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

from ..record import UNTESTED_MARK, Record
from ..statuses import FAIL, OK, WARN
from .model import Model, column_order, counts_text, models, worst_first

CHARTS_OPEN = 10  # charts shown before the rest are folded into <details>


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


def table(header: Iterable[str], rows: Iterable[Iterable[str]]) -> list[str]:
    """A Markdown table; cells are written as given (escape text with :func:`escape`)."""
    header = list(header)
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def _check(r: Record) -> list[str]:
    """The cells that name a check: test, model, mode, dtype."""
    return [f"`{r.nodeid}`", escape(r.model), r.mode, r.dtype]


def _matrix(rows: list[Model], columns: list[tuple[str, str]]) -> list[str]:
    return table(
        ["", "test", "model", "verdict", *(f"{m} {d}" for m, d in columns)],
        (
            [m.sign, f"`{m.nodeid}`", escape(m.label), m.verdict()]
            + [status_cell(m.records[c]) if c in m.records else "" for c in columns]
            for m in rows
        ),
    )


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
    columns = column_order({(r.mode, r.dtype) for r in records})
    if attention:
        lines += ["### Needs attention (worst first)", "", *_matrix(attention, columns), ""]
    if passing:
        lines += [f"<details><summary>{OK} {_plural(len(passing), 'passing model')}</summary>", ""]
        lines += [*_matrix(passing, columns), "", "</details>", ""]
    details = [r for m in found for r in m.records.values() if r.status != "pass"]
    if details:
        lines += ["### Not passing", ""]
        lines += table(
            ["test", "model", "mode", "dtype", "status", "reason"],
            (
                [
                    *_check(r),
                    r.status,
                    escape((r.reason or "") + (f"; counterexample: {r.counterexample}" if r.counterexample else "")),
                ]
                for r in details
            ),
        )
        lines.append("")
    for r in details:
        if r.replay:
            lines += [f"<details><summary>replay {escape(r.model)} {r.mode}/{r.dtype}</summary>", ""]
            lines += ["```python", r.replay.rstrip(), "```", "", "</details>", ""]
    untested_records = [r for m in found for r in m.records.values() if r.untested]
    if untested_records:
        lines += [f"### Untested passes ({UNTESTED_MARK}: matched on the example only)", ""]
        header = ["test", "model", "mode", "dtype", "why no other input was tried"]
        lines += [*table(header, ([*_check(r), escape(r.untested_reason)] for r in untested_records)), ""]
    unserializable = [r for r in records if r.serializable is False]
    if unserializable:
        lines += ["### Not serializable (torch.jit.save / load round trip)", ""]
        header = ["test", "model", "mode", "dtype", "reason"]
        rows = ([*_check(r), escape(r.serializable_reason or "")] for r in unserializable)
        lines += [*table(header, rows), ""]
    fused = [r for r in records if r.fused_ops]
    if fused:
        lines += ["### Fused ops", ""]
        header = ["test", "model", "mode", "dtype", "fused ops"]
        lines += [*table(header, ([*_check(r), ", ".join(r.fused_ops or [])] for r in fused)), ""]
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


def render(
    records: list[Record],
    environment: dict[str, Any],
    extra: dict[str, Any] | None = None,
    comparison: str | None = None,
) -> str:
    """The report's text (``extra`` is for machine-readable formats; ``comparison`` is the baseline's section)."""
    return markdown(records, environment, comparison)
