"""Reports that survive the death of the session: records are written as tests finish, not only at the end.

A pytest session can die without running ``pytest_sessionfinish``: a test outside jitcpu kills the
interpreter, CI cancels the job after a timeout, the machine runs out of memory. Then the records of
every test that already ran must still be on disk. So, on the process that writes the reports (the
controller under xdist):

* each record is appended, as its test's report arrives, to ``PATH.journal`` next to the first JSON
  report ``PATH`` (JSON Lines, one record an object, flushed at once), and
* the reports themselves are rewritten as the run goes, each by temp file + rename (a reader never sees
  half a file), with ``"complete": false``; throttled so that rewriting costs at most
  :data:`OVERHEAD` of the run's time (beyond :data:`ALLOWANCE_S`) however many records there are.

The final reports (``"complete": true``) are written at the end as before; the journals are removed
then. A journal that is still there after a run says the session died; its lines are the records.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from ..record import Record
from .writers import journal_next_to

OVERHEAD = 0.05  # at most this share of the run's time goes to rewriting reports mid-run ...
ALLOWANCE_S = 1.0  # ... beyond this much: a small suite's reports are rewritten after every test
SUFFIX = ".journal"


def journal_path(report: str | Path) -> Path:
    report = Path(report)
    return report.with_name(report.name + SUFFIX)


def read(path: str | Path) -> list[Record]:
    """The records of a journal (a last line cut short by the crash is skipped)."""
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            records.append(Record.from_json(json.loads(line)))
        except (ValueError, TypeError):
            continue
    return records


class Journal:
    """Appends records to the journals and rewrites the partial reports, for one session."""

    def __init__(self, report_paths: list[str], write_partial: Callable[[list[Record]], float]) -> None:
        # One journal a session, next to the first JSON report (else the first report).
        first = journal_next_to(report_paths)
        self.paths = [journal_path(first)] if first else []
        self.write_partial = write_partial
        self.files: list[IO[str]] = []
        self.records: list[Record] = []
        self.start = time.monotonic()
        self.spent = 0.0  # seconds spent rewriting reports so far
        self.failed: str | None = None

    def add(self, records: list[Record]) -> None:
        if not self.paths or self.failed:
            return
        self.records.extend(records)
        try:
            if not self.files:  # a journal left by an earlier, killed run is replaced
                for path in self.paths:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    self.files.append(path.open("w", encoding="utf-8"))
            lines = "".join(json.dumps(r.to_json(), ensure_ascii=False) + "\n" for r in records)
            for f in self.files:
                f.write(lines)
                f.flush()  # in the OS once written: a killed process loses nothing already written
        except OSError as exc:  # a full disk must not fail the tests; the final report says it too
            self.failed = f"could not write the journal: {exc}"
            return
        now = time.monotonic()
        if self.spent <= ALLOWANCE_S + OVERHEAD * (now - self.start):
            self.spent += self.write_partial(self.records)

    def finish(self) -> None:
        """The final reports are written: the journals are no longer needed."""
        for f in self.files:
            f.close()
        for path in self.paths if self.files else []:
            path.unlink(missing_ok=True)
        self.files = []
