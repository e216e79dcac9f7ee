"""The ``jitcpu`` command line: run and check, the input formats, outputs in input order with ids, exit
codes (0 ok, 1 rows failed with --on-error fail, 2 usage), the guide's flag aliases, and the installed
console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from inference_models import SENTENCES, classifier, encoder, mean_pooled

from pytest_jitcpu.cli import main


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli-models")
    return {"st": encoder(root / "st"), "cls": classifier(root / "cls")}


@pytest.fixture
def texts(tmp_path: Path) -> Path:
    path = tmp_path / "in.txt"
    path.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_run_text_file_to_jsonl_and_npy_equal_to_eager(folders, texts, tmp_path, capsys):
    threads = torch.get_num_threads()
    out = tmp_path / "out.jsonl"
    args = ["run", str(folders["st"]), "--task", "feature-extraction", "--input", str(texts), "--mode", "eager"]
    assert main([*args, "--output", str(out), "--batch-size", "3", "--threads", "1"]) == 0
    assert torch.get_num_threads() == 1
    torch.set_num_threads(threads)
    err = capsys.readouterr().err
    final = next(line for line in err.splitlines() if line.startswith("jitcpu run: 10 rows"))
    for part in ("(10 ok)", "rows/s", "batch latency p50", "p95", "mode eager/fp32"):
        assert part in final
    rows = read_jsonl(out)
    expected = mean_pooled(folders["st"], SENTENCES).numpy()
    np.testing.assert_allclose(np.array([r["embedding"] for r in rows], dtype=np.float32), expected, atol=2e-5)
    npy = tmp_path / "out.npy"
    assert main([*args, "--output", str(npy)]) == 0
    np.testing.assert_allclose(np.load(npy), expected, atol=2e-5)
    assert not list(tmp_path.glob(".*.part")) and not list(tmp_path.glob(".*.raw"))


def test_csv_and_jsonl_ids_are_copied_in_input_order(folders, tmp_path, capsys):
    csv_in = tmp_path / "in.csv"
    csv_in.write_text(
        'id,text\n7,"the cat, and the dog"\n3,paris is the capital of france\n9,"a\nmulti-line row"\n', encoding="utf-8"
    )
    jsonl_in = tmp_path / "in.jsonl"
    jsonl_in.write_text("".join(json.dumps({"id": f"x{i}", "text": t}) + "\n" for i, t in enumerate(SENTENCES)))
    for source, ids in ((csv_in, ["7", "3", "9"]), (jsonl_in, [f"x{i}" for i in range(10)])):
        out = tmp_path / f"{source.stem}-{source.suffix[1:]}.jsonl"
        argv = ["run", str(folders["cls"]), "--task", "text-classification", "--input", str(source)]
        assert main([*argv, "--output", str(out), "--mode", "eager"]) == 0
        rows = read_jsonl(out)
        assert [r["id"] for r in rows] == ids
        assert all(r["label"] in ("negative", "neutral", "positive") and 0 < r["score"] <= 1 for r in rows)
    capsys.readouterr()


def test_bad_rows_fail_with_the_line_or_are_skipped_and_listed(folders, tmp_path, capsys):
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "a cat"}\n{"text": "the dog"\n{"text": ""}\n{"text": "paris"}\n', encoding="utf-8")
    out = tmp_path / "out.jsonl"
    base = ["run", str(folders["st"]), "--input", str(source), "--output", str(out), "--mode", "eager"]
    assert main(base) == 1
    err = capsys.readouterr().err
    assert "line 2: malformed JSON" in err and "no output written" in err and "--on-error skip" in err
    assert not out.exists()
    assert main([*base, "--on-error", "skip"]) == 0
    err = capsys.readouterr().err
    rows = read_jsonl(out)
    assert len(rows) == 4 and rows[1]["line"] == 2 and rows[2] == {"line": 3, "error": "empty text"}
    assert "embedding" in rows[0] and "embedding" in rows[3]
    assert "skipped 2 row(s):" in err and "  line 2: malformed JSON" in err and "  line 3: empty text" in err
    assert "(2 ok, 2 skipped)" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--input", "missing.txt"], "--input: missing.txt: no such file"),
        (["--task", "translation"], "unknown task 'translation'"),
        (["--model_name_or_path", "bert-base-uncased"], "no network model hub here: pass a local folder"),
        (["--task", "question-answering"], "has no trained question-answering head"),
        (["--mode", "trace", "--use_ipex"], "--mode trace contradicts --use_ipex"),
    ],
)
def test_usage_errors_exit_2_with_a_clear_message(folders, texts, tmp_path, capsys, args, message):
    model = [] if "--model_name_or_path" in args else [str(folders["st"])]
    argv = ["run", *model, "--input", str(texts), "--output", str(tmp_path / "o.jsonl"), *args]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_bad_flags_are_argparse_usage_errors(texts, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["run", "--input", str(texts), "--output", str(tmp_path / "o.jsonl"), "--batch-size", "0"])
    assert (
        exc.value.code == 2 and "--batch-size/--per_device_eval_batch_size: '0' must be >= 1" in capsys.readouterr().err
    )
    with pytest.raises(SystemExit) as exc:
        main(["run", "--input", str(texts)])
    assert exc.value.code == 2 and "--output" in capsys.readouterr().err


def test_the_guides_flags_translate(folders, tmp_path, capsys):
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"text": t}) + "\n" for t in SENTENCES), encoding="utf-8")
    out = tmp_path / "out.jsonl"
    argv = ["run", "--model_name_or_path", str(folders["cls"]), "--input", str(source), "--output", str(out)]
    assert (
        main(
            [*argv, "--no_cuda", "--jit_mode_eval", "--max_seq_length", "32", "--per_device_eval_batch_size", "4", "-v"]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "task: text-classification (from the model folder" in err  # the model's notes come with -v
    assert "running trace/fp32: verified on" in err and "mode trace/fp32" in err
    assert len(read_jsonl(out)) == len(SENTENCES)
    assert main([*argv, "--use_ipex", "--bf16"]) == 0  # no IPEX here: the reason, then eager in bf16
    err = capsys.readouterr().err
    if "ipex/bf16  unavailable" in err or "ipex/bf16 is unavailable" in err:
        assert "running eager/bf16" in err
    assert "mode eager/bf16" in err or "mode ipex/bf16" in err


def test_check_prints_the_matrix_and_writes_reports(folders, tmp_path, capsys):
    report_json, report_md = tmp_path / "r.json", tmp_path / "r.md"
    argv = ["check", str(folders["st"]), "--modes", "eager,trace-dict,ipex", "--dtypes", "fp32", "--examples", "0"]
    assert main([*argv, "--report", str(report_json), "--report", str(report_md)]) == 0
    out = capsys.readouterr().out
    assert "mode" in out and "latency_ms" in out and "vs eager" in out
    assert "trace-dict  fp32   pass" in out
    data = json.loads(report_json.read_text(encoding="utf-8"))
    assert data["schema"] == "jitcpu-report/1" and data["task"] == "feature-extraction"
    statuses = {(r["mode"], r["dtype"]): r["status"] for r in data["results"]}
    assert statuses[("eager", "fp32")] == "pass" and statuses[("trace-dict", "fp32")] == "pass"
    assert statuses[("ipex", "fp32")] in ("pass", "unavailable")
    assert "pytest-jitcpu compatibility report" in report_md.read_text(encoding="utf-8")


def test_check_exits_1_when_a_mode_does_not_match_eager(folders, monkeypatch, capsys):
    from pytest_jitcpu.backends import trace
    from pytest_jitcpu.backends.base import Built

    def wrong_trace(model, inputs, dtype):
        return Built("trace-dict", dtype, lambda x: model(**x.kwargs) + 1.0, module=model)

    monkeypatch.setattr(trace, "build_dict", wrong_trace)
    argv = ["check", str(folders["st"]), "--modes", "eager,trace-dict", "--dtypes", "fp32", "--examples", "0"]
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "trace-dict  fp32   mismatch" in out and "1 check(s) failed: trace-dict/fp32 mismatch" in out


def test_installed_console_script_runs(folders, texts, tmp_path):
    script = Path(sys.executable).with_name("jitcpu")
    if not script.exists():
        pytest.skip("the jitcpu console script is not installed next to this Python")
    out = tmp_path / "out.jsonl"
    argv = [str(script), "run", str(folders["st"]), "--input", str(texts), "--output", str(out), "--mode", "eager"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert len(read_jsonl(out)) == len(SENTENCES)
    assert "jitcpu run: 10 rows (10 ok)" in proc.stderr and "\r" not in proc.stderr  # no progress bar off a TTY


@pytest.mark.parametrize("spelling", ["same", "dotted", "symlink"])
def test_output_naming_the_input_is_refused_and_the_input_kept(texts, tmp_path, spelling):
    """--output that is the --input (another spelling of its path, or a symlink to it) exits 2 before
    anything runs, and the input file is left byte for byte as it was."""
    before = texts.read_bytes()
    if spelling == "same":
        output = str(texts)
    elif spelling == "dotted":
        output = str(texts.parent / "." / texts.name)
    else:
        output = str(tmp_path / "link.jsonl")
        os.symlink(texts, output)
    argv = [sys.executable, "-m", "pytest_jitcpu.cli", "run", "--input", str(texts), "--output", output]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "is the input file" in proc.stderr and "Traceback" not in proc.stderr
    assert texts.read_bytes() == before


def test_output_whose_parent_is_not_a_folder_is_refused_before_loading(texts):
    argv = [
        sys.executable,
        "-m",
        "pytest_jitcpu.cli",
        "run",
        "--input",
        str(texts),
        "--output",
        "/dev/null/sub/o.jsonl",
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "--output: cannot write /dev/null/sub/o.jsonl: /dev/null is not a directory" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_model_folder_without_tokenizer_files_is_refused(texts, tmp_path):
    """transformers 5 'loads' an empty tokenizer from such a folder: running would embed [UNK] only."""
    from transformers import BertConfig, BertModel

    folder = tmp_path / "no-tokenizer"
    config = BertConfig(
        vocab_size=300, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
    )
    BertModel(config).save_pretrained(folder)
    out = tmp_path / "o.jsonl"
    argv = [sys.executable, "-m", "pytest_jitcpu.cli", "run", str(folder), "--task", "feature-extraction"]
    proc = subprocess.run(
        [*argv, "--input", str(texts), "--output", str(out)], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 2, proc.stderr
    assert "vocab_size is 300" in proc.stderr and "tokenizer.save_pretrained" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()


def test_the_guides_jit_mode_eval_with_use_ipex_runs_trace_without_ipex(folders, texts, tmp_path):
    """``--jit_mode_eval --use_ipex`` means IPEX in JIT mode: without IPEX, its JIT half (the verified
    trace mode) runs, not eager, and the run says IPEX is unavailable."""
    from pytest_jitcpu.backends import ipex

    out, summary = tmp_path / "o.jsonl", tmp_path / "s.json"
    argv = [sys.executable, "-m", "pytest_jitcpu.cli", "run", str(folders["st"]), "--input", str(texts)]
    argv += ["--output", str(out), "--summary", str(summary), "--jit_mode_eval", "--use_ipex", "--no_cuda"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    mode = json.loads(summary.read_text(encoding="utf-8"))["mode"]
    if ipex.unavailable_reason() is None:
        assert mode == "ipex", proc.stderr
    else:
        assert "--use_ipex: IPEX is unavailable (" in proc.stderr
        assert "running --jit_mode_eval as --mode trace" in proc.stderr
        assert mode == "trace" and "running trace/fp32: verified on" in proc.stderr, proc.stderr
    assert len(read_jsonl(out)) == len(SENTENCES)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--summary", "{out}"], "--summary {out} is the same file as --output {out}"),
        (["--summary", "{input}"], "--summary {input} is the input file"),
        (["--summary", "-"], "--summary: give a file name"),
        (["--summary", "/dev/null/s.json"], "--summary: cannot write /dev/null/s.json: /dev/null is not a directory"),
    ],
)
def test_summary_that_would_overwrite_or_cannot_be_written_is_refused(texts, tmp_path, capsys, extra, message):
    out = tmp_path / "o.jsonl"
    fill = {"out": str(out), "input": str(texts)}
    before = texts.read_bytes()
    argv = ["run", "--input", str(texts), "--output", str(out), *(a.format(**fill) for a in extra)]
    assert main(argv) == 2
    assert message.format(**fill) in capsys.readouterr().err
    assert texts.read_bytes() == before and not out.exists()


def test_check_report_naming_the_input_or_a_bad_suffix_is_refused(texts, tmp_path, capsys):
    before = texts.read_bytes()
    assert main(["check", "--input", str(texts), "--report", str(texts)]) == 2
    assert "--report: " in capsys.readouterr().err  # .txt is not a report suffix: refused before anything
    link = tmp_path / "in.json"
    os.symlink(texts, link)
    assert main(["check", "--input", str(texts), "--report", str(link)]) == 2
    assert f"--report {link} is the input file" in capsys.readouterr().err
    assert texts.read_bytes() == before


def test_ray_flags_without_ray_or_output_are_usage_errors(texts, tmp_path, capsys):
    """Checked before Ray is imported or a cluster started (the Ray runs themselves are in tests/ray)."""
    out = str(tmp_path / "o.jsonl")
    assert main(["run", "--input", str(texts), "--output", out, "--actors", "2"]) == 2
    assert "--actors needs --ray" in capsys.readouterr().err
    assert main(["run", "--input", str(texts), "--output", out, "--shards", str(tmp_path / "s")]) == 2
    assert "--shards needs --ray" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["run", "--input", str(texts), "--ray"])
    assert exc.value.code == 2 and "--output (or --shards DIR with --ray)" in capsys.readouterr().err
    assert not (tmp_path / "o.jsonl").exists() and not (tmp_path / "s").exists()


def test_the_console_script_flushes_every_row_and_keeps_the_exit_code(folders, texts, tmp_path):
    """``jitcpu`` ends the process right after its outputs are closed (no slow interpreter teardown):
    every row written to a pipe arrives, the summary file is complete, and a failing run still exits 1."""
    summary = tmp_path / "s.json"
    argv = [sys.executable, "-m", "pytest_jitcpu.cli", "run", str(folders["st"]), "--input", str(texts)]
    proc = subprocess.run(
        [*argv, "--output", "-", "--summary", str(summary), "--mode", "eager"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(rows) == len(SENTENCES) and len({len(r["embedding"]) for r in rows}) == 1, proc.stdout[-500:]
    assert json.loads(summary.read_text(encoding="utf-8"))["rows"] == len(SENTENCES)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": 3}\n', encoding="utf-8")
    failed = subprocess.run(
        [*argv[:4], str(folders["st"]), "--input", str(bad), "--output", str(tmp_path / "o.jsonl"), "--mode", "eager"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert failed.returncode == 1, failed.stderr
    assert "line 2" in failed.stderr and not (tmp_path / "o.jsonl").exists()
