"""The import path the README documents (``pytest_jitcpu.journal.read``); the journal lives in
:mod:`pytest_jitcpu.reports.journal`."""

from __future__ import annotations

from .reports.journal import SUFFIX, Journal, journal_path, read

__all__ = ["SUFFIX", "Journal", "journal_path", "read"]
