"""``jitcpu run`` on a terminal shows tqdm's bar (rows of the total, rows/s, ETA) on stderr, then the same
summary line as off a terminal (where no bar is drawn: tests/test_cli.py)."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
import threading
from pathlib import Path

import pytest
from inference_models import SENTENCES, encoder


def test_a_terminal_gets_the_progress_bar_and_the_summary_line(tmp_path: Path) -> None:
    model = encoder(tmp_path / "st")
    texts = tmp_path / "in.txt"
    texts.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    master, slave = pty.openpty()
    # a terminal 120 columns wide (a fresh pty is 0 x 0, and tqdm fits its bar to the width)
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
    argv = [sys.executable, "-m", "pytest_jitcpu.cli", "run", str(model), "--input", str(texts)]
    argv += ["--output", str(out), "--mode", "eager", "--batch-size", "2"]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=slave, env=os.environ)
    os.close(slave)
    chunks: list[bytes] = []

    def drain() -> None:  # the pty must be read while the child writes, or it blocks
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        assert proc.wait(timeout=300) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(timeout=10)
    os.close(master)
    terminal = b"".join(chunks).decode("utf-8", errors="replace")
    frames = [f.strip() for f in terminal.replace("\n", "\r").split("\r") if f.strip()]
    bars = [f for f in frames if f"/{len(SENTENCES)} rows" in f]
    if not bars:
        pytest.fail(f"no progress bar on the terminal: {frames}")
    assert all("rows/s" in f and "ETA" in f for f in bars), bars
    assert any(f.startswith(f"jitcpu run: {len(SENTENCES)} rows ({len(SENTENCES)} ok)") for f in frames), frames
    assert len(out.read_text(encoding="utf-8").splitlines()) == len(SENTENCES)
