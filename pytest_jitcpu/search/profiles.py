"""Hypothesis' own settings for the divergence search, where the user did not set the jitcpu option.

A suite that runs ``--hypothesis-profile=ci`` (or loads a profile in its conftest) and
``--hypothesis-seed=N`` expects every Hypothesis search in it to follow them; the jitcpu options win
when given (marker > command line > environment > ini), then:

* ``examples``: the active profile's ``max_examples`` when it differs from Hypothesis' default profile's
  (the built-in ``ci`` profile, loaded on CI, keeps 100 from it: no 10x slower search by accident);
* ``derandomize``: the active profile's when a profile other than ``default`` is loaded (the user chose
  Hypothesis' behaviour for the session; ``ci`` derandomizes, as jitcpu does), and False when a seed is
  given (a seed asks for that random stream);
* the seed: ``--hypothesis-seed``.

The records of a search that used any of these say so in a note.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ..settings import Settings


def from_hypothesis(settings: Settings, given: set[str], seed: Any = None) -> Settings:
    """``settings`` with what Hypothesis' active profile and seed say for the fields not in ``given``."""
    from hypothesis import settings as hsettings

    name = hsettings.get_current_profile_name()
    active, default = hsettings.default, hsettings.get_profile("default")
    changes: dict[str, Any] = {}
    sources: list[str] = []
    if "examples" not in given and active.max_examples != default.max_examples:
        changes["examples"] = active.max_examples
        sources.append("examples")
    if "derandomize" not in given:
        if seed is not None:
            changes["derandomize"] = False
            sources.append("derandomize")
        elif name != "default" and active.derandomize != settings.derandomize:
            changes["derandomize"] = active.derandomize
            sources.append("derandomize")
    if seed is not None:
        changes["seed"] = int(seed) if str(seed).lstrip("-").isdigit() else seed  # as Hypothesis' plugin reads it
        sources.append("seed")
    if not sources:
        return settings
    return replace(settings, **changes, profile=name, from_hypothesis=frozenset(sources))


def note(settings: Settings) -> str | None:
    """Which search settings came from Hypothesis, for the records of a search (None: jitcpu's own)."""
    used = settings.from_hypothesis
    if not used:
        return None
    parts = []
    if "examples" in used:
        parts.append(f"max_examples={settings.examples} from Hypothesis profile {settings.profile!r}")
    if "derandomize" in used:
        why = "--hypothesis-seed" if "seed" in used else f"Hypothesis profile {settings.profile!r}"
        parts.append(f"derandomize={settings.derandomize} from {why}")
    if "seed" in used and not settings.derandomize:
        parts.append(f"seed={settings.seed!r} from --hypothesis-seed")
    return "generated inputs: " + ", ".join(parts) + " (set --jitcpu-examples / --jitcpu-derandomize to override)"
