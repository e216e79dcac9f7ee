"""Cached verified artifacts and the torch-free start of ``jitcpu run``, as a user meets them: the command
line as a subprocess, a cache folder of its own per test, outputs compared row by row.

- a second run loads the artifact (the log says so), imports neither torch nor transformers, and writes
  the same rows in the same order as the first (ids exact, embeddings within float tolerance) and as eager;
- ``--verify`` checks the cached program against eager instead (torch path);
- a damaged, foreign or unwritable cache is a note and a rebuild, exit 0;
- two runs at once on one empty cache both succeed and leave one valid entry;
- an input outside the verified domain goes the normal way;
- ``auto`` on a small input prepares a torch-free artifact after its output, used by the next run;
- eviction keeps the cache under its size limit, least recently used first.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from inference_models import SENTENCES, encoder

from pytest_jitcpu.inference import artifacts

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
pytestmark = pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino is not installed")


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return encoder(tmp_path_factory.mktemp("artifact-models") / "st")


@pytest.fixture
def rows(tmp_path: Path) -> Path:
    """JSONL with ids, and one row longer than the model's 64 tokens (truncated in both paths)."""
    texts = [*SENTENCES, " ".join(["the lazy cat"] * 40)]
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"id": f"r{i}", "text": t}) + "\n" for i, t in enumerate(texts)))
    return path


def jitcpu(
    cache: Path, *args: str, modules: Path | None = None, env: dict[str, str] | None = None, wait: bool = True
) -> subprocess.CompletedProcess[str] | subprocess.Popen[str]:
    """``jitcpu ARGS`` in a new process with its own cache folder; with ``modules``, through
    tests/cli_modules.py, which writes the torch/transformers modules the process loaded there."""
    full = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "JITCPU_CACHE": "on",
        "JITCPU_CACHE_DIR": str(cache),
        "OMP_NUM_THREADS": "1",
        **(env or {}),
    }
    if modules is not None:
        full["JITCPU_TEST_MODULES"] = str(modules)
        command = [sys.executable, str(HERE / "cli_modules.py"), *args]
    else:
        command = [sys.executable, "-m", "pytest_jitcpu.cli", *args]
    if not wait:
        return subprocess.Popen(command, env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(command, check=False, env=full, capture_output=True, text=True, timeout=600)


def run_args(model: Path, source: Path, out: Path, *extra: str) -> list[str]:
    return ["run", str(model), "--input", str(source), "--output", str(out), "--batch-size", "4", *extra]


def read(path: Path) -> tuple[list[str], np.ndarray]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return [r["id"] for r in rows], np.array([r["embedding"] for r in rows], dtype=np.float32)


def same_rows(a: Path, b: Path, atol: float = 1e-5) -> None:
    ids_a, emb_a = read(a)
    ids_b, emb_b = read(b)
    assert ids_a == ids_b
    np.testing.assert_allclose(emb_a, emb_b, atol=atol)


def entries(cache: Path) -> list[Path]:
    folder = cache / artifacts.FOLDER
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")) if folder.exists() else []


def test_second_run_loads_the_artifact_without_torch_and_writes_the_same_rows(model, rows, tmp_path):
    cache = tmp_path / "cache"
    first = jitcpu(cache, *run_args(model, rows, tmp_path / "1.jsonl", "--mode", "openvino"))
    assert first.returncode == 0, first.stderr
    [entry] = entries(cache)
    meta = json.loads((entry / "meta.json").read_text())
    assert meta["torch_free"] and meta["domain"]["task"] == "feature-extraction" and meta["verified"]["rows"] > 0

    modules = tmp_path / "modules.json"
    second = jitcpu(cache, *run_args(model, rows, tmp_path / "2.jsonl", "--mode", "openvino"), modules=modules)
    assert second.returncode == 0, second.stderr
    assert "from the cache without torch" in second.stderr
    assert "verified against eager fp32 on" in second.stderr  # what the run rests on
    assert json.loads(modules.read_text()) == []  # neither torch nor transformers was imported
    assert "note: 1 row(s) longer than 64 tokens were truncated (line 11)" in second.stderr
    same_rows(tmp_path / "1.jsonl", tmp_path / "2.jsonl")

    eager = jitcpu(cache, *run_args(model, rows, tmp_path / "e.jsonl", "--mode", "eager", "--no-cache"))
    assert eager.returncode == 0, eager.stderr
    same_rows(tmp_path / "e.jsonl", tmp_path / "2.jsonl", atol=1e-4)

    verify = jitcpu(
        cache, *run_args(model, rows, tmp_path / "3.jsonl", "--mode", "openvino", "--verify"), modules=modules
    )
    assert verify.returncode == 0, verify.stderr
    assert "loaded from the artifact cache" in verify.stderr and "without torch" not in verify.stderr
    assert "torch" in json.loads(modules.read_text())
    same_rows(tmp_path / "2.jsonl", tmp_path / "3.jsonl")

    # Bad rows in the torch-free start: skipped in place (as the torch path writes them), or exit 1, nothing written.
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "text": "a cat"}\n{"id": "b", "text": ""}\n{"id": "c", "text": "the dog"}\n')
    skip = jitcpu(cache, *run_args(model, bad, tmp_path / "s.jsonl", "--mode", "openvino", "--on-error", "skip"))
    assert skip.returncode == 0 and "from the cache without torch" in skip.stderr, skip.stderr
    eager_skip = run_args(model, bad, tmp_path / "es.jsonl", "--mode", "eager", "--no-cache", "--on-error", "skip")
    assert jitcpu(cache, *eager_skip).returncode == 0
    got = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    want = [json.loads(line) for line in (tmp_path / "es.jsonl").read_text().splitlines()]
    assert [r.get("error") for r in got] == [r.get("error") for r in want] == [None, "empty text", None]
    assert [r["id"] for r in got] == ["a", "b", "c"] and got[1]["line"] == want[1]["line"] == 2
    fail = jitcpu(cache, *run_args(model, bad, tmp_path / "f.jsonl", "--mode", "openvino"))
    assert fail.returncode == 1 and "line 2: empty text" in fail.stderr and not (tmp_path / "f.jsonl").exists()


def test_no_cache_neither_reads_nor_writes_artifacts(model, rows, tmp_path):
    cache = tmp_path / "cache"
    done = jitcpu(cache, *run_args(model, rows, tmp_path / "1.jsonl", "--mode", "openvino", "--no-cache"))
    assert done.returncode == 0, done.stderr
    assert entries(cache) == [] and "artifact cache" not in done.stderr


def test_a_damaged_or_foreign_entry_is_a_note_and_a_rebuild(model, rows, tmp_path):
    cache = tmp_path / "cache"
    assert jitcpu(cache, *run_args(model, rows, tmp_path / "0.jsonl", "--mode", "openvino")).returncode == 0

    def truncate(entry: Path) -> None:
        weights = max((p for p in entry.iterdir() if p.suffix in (".bin", ".onnx")), key=lambda p: p.stat().st_size)
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])

    def foreign(entry: Path) -> None:
        meta = json.loads((entry / "meta.json").read_text())
        (entry / "meta.json").write_text(json.dumps({**meta, "schema": "jitcpu-artifact/0", "torch": "1.0"}))

    def garbage(entry: Path) -> None:
        (entry / "meta.json").write_text("{not json")

    for i, damage in enumerate((truncate, foreign, garbage), start=1):
        [entry] = entries(cache)
        damage(entry)
        again = jitcpu(cache, *run_args(model, rows, tmp_path / f"{i}.jsonl", "--mode", "openvino"))
        assert again.returncode == 0, again.stderr
        assert "note: the cached artifact" in again.stderr and "building again" in again.stderr, damage.__name__
        assert json.loads((entries(cache)[0] / "meta.json").read_text())["schema"] == artifacts.SCHEMA  # rebuilt
        same_rows(tmp_path / "0.jsonl", tmp_path / f"{i}.jsonl")
    last = jitcpu(cache, *run_args(model, rows, tmp_path / "4.jsonl", "--mode", "openvino"))
    assert "from the cache without torch" in last.stderr, last.stderr


def test_an_unwritable_cache_is_a_note_and_the_run_succeeds(model, rows, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder would be\n")
    done = jitcpu(blocker / "cache", *run_args(model, rows, tmp_path / "1.jsonl", "--mode", "openvino"))
    assert done.returncode == 0, done.stderr
    assert "note: could not keep the openvino/fp32 artifact" in done.stderr
    assert len(read(tmp_path / "1.jsonl")[0]) == len(SENTENCES) + 1


def test_two_runs_at_once_share_one_cache(model, rows, tmp_path):
    cache = tmp_path / "cache"
    runs = [
        jitcpu(cache, *run_args(model, rows, tmp_path / f"{i}.jsonl", "--mode", "openvino"), wait=False) for i in (1, 2)
    ]
    for proc in runs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
    same_rows(tmp_path / "1.jsonl", tmp_path / "2.jsonl")
    assert len(entries(cache)) == 1
    assert not [p for p in (cache / artifacts.FOLDER).iterdir() if p.name.startswith((".tmp", ".trash"))]
    third = jitcpu(cache, *run_args(model, rows, tmp_path / "3.jsonl", "--mode", "openvino"))
    assert "from the cache without torch" in third.stderr, third.stderr
    same_rows(tmp_path / "1.jsonl", tmp_path / "3.jsonl")


def test_an_input_outside_the_verified_domain_goes_the_normal_way(model, rows, tmp_path):
    cache = tmp_path / "cache"
    assert jitcpu(cache, *run_args(model, rows, tmp_path / "1.jsonl", "--mode", "openvino")).returncode == 0
    [entry] = entries(cache)
    meta = json.loads((entry / "meta.json").read_text())
    meta["domain"]["max_tokens"] = 6  # as if it had been verified on short rows only
    (entry / "meta.json").write_text(json.dumps(meta))
    modules = tmp_path / "modules.json"
    again = jitcpu(cache, *run_args(model, rows, tmp_path / "2.jsonl", "--mode", "openvino"), modules=modules)
    assert again.returncode == 0, again.stderr
    assert "the cached artifact was verified up to 6" in again.stderr and "goes the normal way" in again.stderr
    assert "torch" in json.loads(modules.read_text())
    same_rows(tmp_path / "1.jsonl", tmp_path / "2.jsonl")


def test_auto_prepares_a_torch_free_next_run(model, rows, tmp_path):
    cache = tmp_path / "cache"
    first = jitcpu(cache, *run_args(model, rows, tmp_path / "1.jsonl"))
    assert first.returncode == 0, first.stderr
    # a few rows: the torch-free candidate is built anyway (for the later runs) and either runs this input
    # too, when it is the fastest verified mode, or is kept after the output
    ran = re.search(r"running (openvino|onnx)/", first.stderr)
    assert ran or "prepared the next run" in first.stderr, first.stderr
    assert len(entries(cache)) == 1
    modules = tmp_path / "modules.json"
    second = jitcpu(cache, *run_args(model, rows, tmp_path / "2.jsonl"), modules=modules)
    assert second.returncode == 0, second.stderr
    assert "from the cache without torch" in second.stderr and json.loads(modules.read_text()) == []
    same_rows(tmp_path / "1.jsonl", tmp_path / "2.jsonl", atol=2e-2 if "bf16" in second.stderr else 1e-5)
    off = jitcpu(tmp_path / "other", *run_args(model, rows, tmp_path / "3.jsonl"), env={"JITCPU_PREPARE": "off"})
    assert off.returncode == 0 and "prepared" not in off.stderr and entries(tmp_path / "other") == []


def test_eviction_removes_the_least_recently_used_beyond_the_limit(tmp_path, monkeypatch):
    monkeypatch.setenv("JITCPU_CACHE_DIR", str(tmp_path))
    root = artifacts.root()
    for i, name in enumerate(("old", "mid", "new")):
        folder = root / name
        folder.mkdir(parents=True)
        (folder / "model.bin").write_bytes(b"x" * 1000)
        (folder / artifacts.USED).touch()
        os.utime(folder / artifacts.USED, (time.time() - 100 + i, time.time() - 100 + i))
    removed = artifacts.evict(limit=2500)
    assert [p.name for p in removed] == ["old"]
    assert sorted(p.name for p in root.iterdir()) == ["mid", "new"]
    os.utime(root / "mid" / artifacts.USED)  # used just now: "new" is now the least recent
    assert [p.name for p in artifacts.evict(limit=1500)] == ["new"]


BUDGET = ("--min-cosine", "0.9")
needs_nncf = pytest.mark.skipif(importlib.util.find_spec("nncf") is None, reason="nncf is not installed")


@needs_nncf
def test_a_budget_run_keeps_int8_with_its_fp32_original_and_gates_it_without_torch(model, rows, tmp_path):
    cache = tmp_path / "cache"
    first = jitcpu(cache, *run_args(model, rows, tmp_path / "1.jsonl", *BUDGET))
    assert first.returncode == 0, first.stderr
    [entry] = entries(cache)
    meta = json.loads((entry / "meta.json").read_text())
    # the candidate auto prepares under a budget, whatever the input's size
    assert meta["mode"] == "openvino-int8-dynamic", first.stderr
    assert meta["budget"] == {"metric": "cosine", "threshold": 0.9} and meta["gate"]["ok"] is True
    reference = meta["reference"]
    assert reference["file"].startswith("reference/") and (entry / reference["file"]).is_file()
    assert reference["batches"] >= 1 and reference["worst_diff"] < 1e-4  # checked against eager fp32

    modules, summary = tmp_path / "modules.json", tmp_path / "summary.json"
    args = run_args(model, rows, tmp_path / "2.jsonl", *BUDGET, "--summary", str(summary))
    second = jitcpu(cache, *args, modules=modules)
    assert second.returncode == 0, second.stderr
    assert "from the cache without torch" in second.stderr and json.loads(modules.read_text()) == []
    line = re.search(
        r"accuracy gate \(--min-cosine 0\.9\): openvino-int8-dynamic/fp32 worst row cosine ([0-9.]+), "
        r"p1 [0-9.]+ over (\d+) rows, 0 under 0\.9 \(against its fp32 reference",
        second.stderr,
    )
    assert line, second.stderr
    gate = json.loads(summary.read_text())["gate"]
    assert gate["ok"] is True and gate["rows"] == int(line[2]) > 0 and gate["worst"] >= 0.9
    assert abs(gate["worst"] - float(line[1])) < 1e-4
    within_budget(tmp_path / "1.jsonl", tmp_path / "2.jsonl", 0.9)

    # a run without the budget, or under another one, is another request: never this int8 program
    for extra in ((), ("--min-cosine", "0.95")):
        other = jitcpu(cache, *run_args(model, rows, tmp_path / "3.jsonl", *extra, "--mode", "openvino"))
        assert other.returncode == 0, other.stderr
        assert "openvino-int8" not in other.stderr


@needs_nncf
def test_a_cached_int8_program_missing_the_budget_on_this_input_goes_the_torch_way(model, rows, tmp_path):
    cache = tmp_path / "cache"
    assert jitcpu(cache, *run_args(model, rows, tmp_path / "1.jsonl", *BUDGET)).returncode == 0
    [entry] = entries(cache)
    meta = json.loads((entry / "meta.json").read_text())
    # an fp32 reference that disagrees with the program (random weights), recorded as intact
    _scramble(entry / meta["reference"]["file"])
    for name in meta["files"]:
        meta["files"][name] = artifacts._digest(entry / name)
    (entry / "meta.json").write_text(json.dumps(meta))
    modules = tmp_path / "modules.json"
    again = jitcpu(cache, *run_args(model, rows, tmp_path / "2.jsonl", *BUDGET), modules=modules)
    assert again.returncode == 0, again.stderr
    assert re.search(r"misses --min-cosine 0\.9 on this input \(worst row cosine .*goes the normal way", again.stderr)
    assert "torch" in json.loads(modules.read_text())  # gated against eager fp32 instead
    within_budget(tmp_path / "1.jsonl", tmp_path / "2.jsonl", 0.9)


def within_budget(a: Path, b: Path, budget: float) -> None:
    """The same ids in the same order, each row's embeddings at cosine >= budget to the other's."""
    ids_a, emb_a = read(a)
    ids_b, emb_b = read(b)
    assert ids_a == ids_b
    cosine = (emb_a * emb_b).sum(1) / (np.linalg.norm(emb_a, axis=1) * np.linalg.norm(emb_b, axis=1))
    assert cosine.min() >= budget


def _scramble(xml: Path) -> None:
    """Replace the float weights of the OpenVINO model at ``xml`` by random ones, in place."""
    import openvino as ov
    import openvino.opset13 as ops

    model = ov.Core().read_model(str(xml))
    rng = np.random.default_rng(0)
    for op in model.get_ops():
        if op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.f32:
            shape = list(op.get_output_shape(0))
            if int(np.prod(shape)) > 64:
                op.output(0).replace(ops.constant(rng.standard_normal(shape).astype(np.float32)).output(0))
    tmp = xml.with_name("scrambled.xml")
    ov.save_model(model, str(tmp), compress_to_fp16=False)
    del model
    tmp.replace(xml)
    tmp.with_suffix(".bin").replace(xml.with_suffix(".bin"))


def test_a_first_run_runs_its_rows_through_the_program_it_kept(model, rows, tmp_path):
    """auto on a file chooses on its first window; when the pick is a program the cache keeps (OpenVINO
    here, timed fastest by tests/cli_fastest.py), the rows run through it as the next run will."""
    summary = tmp_path / "summary.json"
    command = [sys.executable, str(HERE / "cli_fastest.py"), *run_args(model, rows, tmp_path / "1.jsonl")]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "JITCPU_CACHE": "on",
        "JITCPU_CACHE_DIR": str(tmp_path / "cache"),
        "OMP_NUM_THREADS": "1",
        "JITCPU_TEST_FASTEST": "openvino",
    }
    first = subprocess.run(
        [*command, "--candidates", "eager,openvino", "--summary", str(summary), "-v"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert first.returncode == 0, first.stderr
    assert re.search(r"running openvino/(fp32|bf16): fastest verified mode", first.stderr), first.stderr
    assert "ran the rows through the openvino/" in first.stderr and "from the cache without torch" not in first.stderr
    written = json.loads(summary.read_text())
    assert written["mode"] == "openvino" and written["rows"] == written["ok"] == len(rows.read_text().splitlines())
    assert written["decision"].startswith("fastest verified mode") and written["wall_s"] >= written["setup_s"] > 0
    eager = jitcpu(tmp_path / "other", *run_args(model, rows, tmp_path / "2.jsonl", "--mode", "eager"))
    assert eager.returncode == 0, eager.stderr
    same_rows(tmp_path / "1.jsonl", tmp_path / "2.jsonl", atol=2e-2 if written["dtype"] == "bf16" else 1e-5)
