"""MkDocs hooks: the reference tables of the docs come from the code's own tables, at build time.

A page holds a marker such as ``<!-- generated: modes -->``; ``on_page_markdown`` replaces it with a
table made from ``pytest_jitcpu.backends.table.BACKENDS`` (modes) or from what
``pytest_jitcpu.options.add_options`` registers with pytest (options), so the docs cannot drift from the
code. A marker with no generator fails the build. Pages other branches add (``OPTIONAL_PAGES``) join the
nav when their file exists (any other page not in the nav is appended, titled by its first heading), and
the benchmark results under ``benchmarks/results/`` are published beside the docs so pages link them. MkDocs is imported only in
the hooks that need it, so the tests can build the tables without it.
"""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _code(name: str) -> Any:
    """Import ``name`` from this checkout, installed or not (like a Sphinx conf.py). Done at call time:
    MkDocs restores ``sys.path`` after loading a hook. Only table modules are read, which import nothing
    heavy (pytest for the options)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module(name)


# (title, file) of pages that may or may not exist yet: those present join the nav after AFTER.
OPTIONAL_PAGES: tuple[tuple[str, str], ...] = (
    ("AOTInductor", "aoti.md"),
    ("Attention implementations", "attention.md"),
    ("Quantization", "quantization.md"),
    ("Artifact cache", "cache.md"),
    ("Performance", "performance.md"),
)
AFTER = "migrating.md"  # the optional pages follow the migration map in the nav
MARKER = re.compile(r"<!-- generated: ([a-z-]+) -->")


def _yes(value: bool) -> str:
    return "yes" if value else ""


def modes_table() -> str:
    """One row per backend of ``BACKENDS``, in its order."""
    BACKENDS = _code("pytest_jitcpu.backends.table").BACKENDS

    lines = [
        "| mode | what runs | `jitcpu run --mode` | default | `auto` candidate | round trip | searched | needs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for b in BACKENDS:
        needs = "; ".join(
            part
            for part in (
                f"`{b.package}` (extra `{b.extra}`)" if b.package else "",
                f"CPU: {b.cpu}" if b.cpu else "",
            )
            if part
        )
        auto = _yes(b.auto) or (f"no: {b.not_in_auto}" if b.not_in_auto else "")
        searched = _yes(b.searched) or (f"no: {b.not_searched}" if b.not_searched else "")
        lines.append(
            f"| `{b.name}` | {b.summary} | {', '.join(f'`{n}`' for n in b.cli_names)} | {_yes(b.default)} | "
            f"{auto} | {b.round_trip or ''} | {searched} | {needs} |"
        )
    return "\n".join(lines)


class _Recorder:
    """Stands in for pytest's parser and option group: records what ``add_options`` registers."""

    def __init__(self) -> None:
        self.options: list[tuple[list[str], dict[str, Any]]] = []
        self.ini: list[tuple[str, str, dict[str, Any]]] = []

    def getgroup(self, *_args: Any, **_kwargs: Any) -> _Recorder:
        return self

    def addoption(self, *names: str, **kwargs: Any) -> None:
        self.options.append((list(names), kwargs))

    def addini(self, name: str, help: str, **kwargs: Any) -> None:
        self.ini.append((name, help, kwargs))


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def options_table() -> str:
    """Every command-line option and ini key the plugin registers, with pytest's own help text."""
    rec = _Recorder()
    _code("pytest_jitcpu.options").add_options(rec)
    lines = ["| command line | what it does (environment variable, ini key, default) |", "|---|---|"]
    for names, kwargs in rec.options:
        metavar = kwargs.get("metavar")
        flag = " / ".join(f"`{n}={metavar}`" if metavar else f"`{n}`" for n in names)
        lines.append(f"| {flag} | {_cell(kwargs.get('help', ''))} |")
    lines += ["", "| ini key | what it does |", "|---|---|"]
    lines += [f"| `{name}` | {_cell(help)} |" for name, help, _ in rec.ini]
    return "\n".join(lines)


GENERATORS: dict[str, Callable[[], str]] = {"modes": modes_table, "options": options_table}


def on_page_markdown(markdown: str, page: Any, **_kwargs: Any) -> str:
    from mkdocs.exceptions import PluginError

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in GENERATORS:
            raise PluginError(f"{page.file.src_uri}: no generator for <!-- generated: {name} -->")
        return GENERATORS[name]()

    return MARKER.sub(replace, markdown)


def _title(path: Path) -> str:
    """A page's first ``# `` heading, else its file name."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return path.stem


def on_config(config: Any, **_kwargs: Any) -> Any:
    """Add the optional pages that exist after the migration map, then any other page the nav misses."""
    docs = Path(config["docs_dir"])
    nav = config["nav"]
    if nav is None:
        return config  # no nav: MkDocs lists every page itself
    present = [{title: name} for title, name in OPTIONAL_PAGES if (docs / name).is_file()]
    at = next((i + 1 for i, entry in enumerate(nav) if isinstance(entry, dict) and AFTER in entry.values()), len(nav))
    nav[at:at] = present
    listed = {value for entry in nav if isinstance(entry, dict) for value in entry.values()}
    nav.extend({_title(path): path.name} for path in sorted(docs.glob("*.md")) if path.name not in listed)
    return config


def on_files(files: Any, config: Any, **_kwargs: Any) -> Any:
    """Publish benchmarks/results/*.md as pages of the site (linked from the benchmarks page)."""
    from mkdocs.structure.files import File

    for path in sorted((ROOT / "benchmarks" / "results").glob("*.md")):
        files.append(File.generated(config, f"benchmarks/results/{path.name}", abs_src_path=str(path)))
    return files
