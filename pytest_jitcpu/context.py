"""What one ``check`` call carries from the first mode to the last: one object instead of long
parameter lists and per-check globals.

The engine makes a :class:`CheckContext` after the eager reference ran; the builders, the divergence
search and the round trip read it. A :class:`Watch` (set by :mod:`pytest_jitcpu.isolation` in a forked
child) follows the check from outside: the phase, each record, and the input a built module is about to
run on, so a crash there can be told apart from a crash of eager.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .inputs import Inputs
from .search.domain import Domain
from .settings import Settings


@dataclass(frozen=True)
class Watch:
    """Who follows a check while it runs: the phase running now, each record once made, each input a
    built module is about to run on in the search, and the (mode, dtype) checks to leave out (done, or
    crashed, in an earlier child). A check without one runs as usual."""

    phase: Callable[[str, str, str], None]
    record: Callable[[Any], None]
    trying: Callable[[str, str, Inputs, str], None] | None = None
    skip: frozenset[tuple[str, str]] = frozenset()
    # Why an earlier child died while the domain was decided (eager on an input of another size): this
    # check keeps the domain as declared, without asking eager which sizes it accepts.
    undecided: str | None = None


DECIDING = "deciding the input domain"  # the phase in which eager runs on other sizes first


@dataclass
class CheckContext:
    """One check: the model as given, its example, the resolved settings, and what is decided once for
    every (mode, dtype): the input domain, the inputs the search tries, eager's outputs on them."""

    model: Any
    batch: Inputs
    settings: Settings
    nodeid: str
    label: str
    generate: Any = None
    notes: list[str] = field(default_factory=list)
    snapshot: Any = None  # state.Snapshot: every mode starts from the model as given
    on_built: Callable[[Any], None] | None = None
    watch: Watch | None = None
    domain: Domain | None = None  # decided after the eager reference (generalize.decide)
    oracle: Any = None  # generalize.Oracle: eager fp32 on other inputs, cached for every mode
    plan: Any = None  # strategies.Plan over the domain, settled against eager; None when none could be made
    why_no_plan: str | None = None
    search: Any = None  # generalize.Search, made when the first searched mode passes

    def phase(self, mode: str, dtype: str, what: str) -> None:
        if self.watch is not None:
            self.watch.phase(mode, dtype, what)

    def trying(self, mode: str, dtype: str, inputs: Inputs, where: str) -> None:
        if self.watch is not None and self.watch.trying is not None:
            self.watch.trying(mode, dtype, inputs, where)
