"""Whole-file writes that never leave half a file: a temporary file in the target's folder, flushed to
disk, then renamed over the target (``os.replace`` is atomic on one file system). A crash, a full disk
or Ctrl-C leaves the old file (or none), never a truncated one. Every file jitcpu writes in one piece
(reports, ``--summary``, the outputs of ``jitcpu run``) goes through here.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


class AtomicFile:
    """A temporary file next to ``path`` (missing folders are created): :meth:`commit` flushes it to disk
    and renames it over ``path``; :meth:`discard` removes it and leaves ``path`` as it was."""

    def __init__(self, path: str | Path, mode: str = "w", **open_kwargs: Any) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self.tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".part", dir=self.path.parent)
        try:
            self.handle: IO[Any] = os.fdopen(fd, mode, **open_kwargs)
        except BaseException:
            os.close(fd)
            os.unlink(self.tmp)
            raise

    def commit(self) -> Path:
        try:
            self.handle.flush()
            os.fsync(self.handle.fileno())  # the data is on disk before the name points at it
            self.handle.close()
            _keep_mode(self.tmp, self.path)
            os.replace(self.tmp, self.path)
        except BaseException:
            self.discard()
            raise
        return self.path

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self.handle.close()
        with contextlib.suppress(OSError):
            os.unlink(self.tmp)


@contextlib.contextmanager
def replacing(path: str | Path, mode: str = "w", **open_kwargs: Any) -> Iterator[IO[Any]]:
    """``with replacing(path) as f: f.write(...)``: ``path`` is replaced on a clean exit, untouched on an
    exception."""
    file = AtomicFile(path, mode, **open_kwargs)
    try:
        yield file.handle
    except BaseException:
        file.discard()
        raise
    file.commit()


def write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """``Path.write_text``, atomically."""
    with replacing(path, "w", encoding=encoding) as handle:
        handle.write(text)
    return Path(path)


def same_file(a: str | Path, b: str | Path) -> bool:
    """True when two spellings (or a symlink) name one file: writing one would replace the other."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist yet
        return os.path.realpath(a) == os.path.realpath(b)


def _keep_mode(tmp: str, target: Path) -> None:
    """mkstemp makes the file 0600; give it the permissions a plain ``open`` would (umask), or those of
    the file it replaces, so a report stays readable by whoever could read the old one."""
    try:
        mode = target.stat().st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    os.chmod(tmp, mode)
