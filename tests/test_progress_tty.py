"""``jitcpu run`` on a terminal shows tqdm's bar (rows of the total, rows/s, ETA) on stderr, then the same
summary line as off a terminal (where no bar is drawn: tests/test_cli.py)."""

from __future__ import annotations

import fcntl
import importlib.util
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


def on_terminal(argv: list[str], env: dict[str, str] | None = None) -> list[str]:
    """Run ``argv`` with stderr on a pseudo-terminal; the frames it drew (lines and carriage returns)."""
    master, slave = pty.openpty()
    # a terminal 120 columns wide (a fresh pty is 0 x 0, and tqdm fits its bar to the width)
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=slave, env=env or os.environ
    )
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
    return [f.strip() for f in terminal.replace("\n", "\r").split("\r") if f.strip()]


def assert_bar(frames: list[str]) -> None:
    bars = [f for f in frames if f"/{len(SENTENCES)} rows" in f]
    if not bars:
        pytest.fail(f"no progress bar on the terminal: {frames}")
    assert all("rows/s" in f and "ETA" in f for f in bars), bars
    assert any(f.startswith(f"jitcpu run: {len(SENTENCES)} rows ({len(SENTENCES)} ok)") for f in frames), frames


def test_a_terminal_gets_the_progress_bar_and_the_summary_line(tmp_path: Path) -> None:
    model = encoder(tmp_path / "st")
    texts = tmp_path / "in.txt"
    texts.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    argv = [sys.executable, "-m", "pytest_jitcpu.cli", "run", str(model), "--input", str(texts)]
    argv += ["--output", str(out), "--mode", "eager", "--batch-size", "2"]
    assert_bar(on_terminal(argv))
    assert len(out.read_text(encoding="utf-8").splitlines()) == len(SENTENCES)


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino is not installed")
def test_the_start_without_torch_draws_the_bar_too(tmp_path: Path) -> None:
    model = encoder(tmp_path / "st")
    texts = tmp_path / "in.txt"
    texts.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    env = {**os.environ, "JITCPU_CACHE": "on", "JITCPU_CACHE_DIR": str(tmp_path / "cache")}
    argv = [sys.executable, "-m", "pytest_jitcpu.cli", "run", str(model), "--input", str(texts)]
    argv += ["--mode", "openvino", "--batch-size", "2", "--output"]
    first = subprocess.run([*argv, str(tmp_path / "1.jsonl")], env=env, capture_output=True, text=True, check=False)
    assert first.returncode == 0, first.stderr
    frames = on_terminal([*argv, str(tmp_path / "2.jsonl")], env)
    assert any("from the cache without torch" in f for f in frames), frames
    assert_bar(frames)
    assert len((tmp_path / "2.jsonl").read_text(encoding="utf-8").splitlines()) == len(SENTENCES)
