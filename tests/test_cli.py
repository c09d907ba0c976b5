"""The console script end to end, as a user runs it (subprocess), and how it reports a failure."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bpnet.cli import main
from bpnet.errors import DataError, UsageError

BPNET = [sys.executable, "-m", "bpnet.cli"]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*BPNET, *args], capture_output=True, text=True, timeout=300)


def test_synth_then_convert_both_modes(tmp_path: Path):
    data = tmp_path / "demo"
    assert run("synth", "-o", str(data), "--train_images", "6", "--val_images", "3").returncode == 0
    spec = data / "coco_spec.json"
    train = run("dataset_convert", "-d", str(spec), "-o", str(tmp_path / "out/train"), "-m", "train",
                "--generate_masks")
    assert train.returncode == 0, train.stderr
    assert "samples written" in train.stderr and "persons dropped by rule" in train.stderr
    val = run("dataset_convert", "-d", str(spec), "-o", str(tmp_path / "out/val"), "-m", "test", "--check_files",
              "--generate_masks")
    assert val.returncode == 0, val.stderr
    manifest = json.loads((tmp_path / "out/val-manifest.json").read_text())
    assert manifest["metadata"]["summary"]["samples_written"] == 3
    assert [f["path"] for f in manifest["files"]] == ["val-fold-000-of-001"]


def test_help_lists_guide_flags():
    out = run("dataset_convert", "-h").stdout
    for flag in ("-d", "--dataset_spec", "-o", "--output_filename", "-m", "--mode", "--generate_masks",
                 "--check_files", "-l", "--log_level"):
        assert flag in out


def test_bad_flag_value_exits_2(tmp_path: Path):
    result = run("dataset_convert", "-d", "x.json", "-o", str(tmp_path / "t"), "--num_shards", "0")
    assert result.returncode == 2 and "--num_shards: 0" in result.stderr


@pytest.mark.parametrize(("raised", "code", "line"), [
    (DataError("images/x.jpg: the data is bad"), 1, "images/x.jpg: the data is bad"),
    (UsageError("-3 — expected >= 0", field="seed"), 2, "bpnet synth: error: --seed: -3 — expected >= 0"),
    (FileNotFoundError(2, "No such file or directory", "/nope/out"), 1, "No such file or directory: '/nope/out'"),
    (KeyError("planted"), 1, "bpnet synth failed (a bug, not a data or settings problem)")])
def test_a_failure_is_one_line_and_a_bug_a_traceback(monkeypatch, caplog, capsys, tmp_path, raised, code, line):
    """The step function raises (planted): a BpnetError or an OSError on a path is reported in one
    line without a traceback, anything else is logged with its traceback; all exit non-zero."""
    def step(*args, **kwargs):
        raise raised

    monkeypatch.setattr("bpnet.data.synth.generate", step)
    assert main(["synth", "-o", str(tmp_path / "d")]) == code
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    shown = capsys.readouterr().err.splitlines() + [r.getMessage() for r in errors]
    assert any(line in text for text in shown), shown
    bug = isinstance(raised, KeyError)
    assert [r.exc_info[0] if r.exc_info else None for r in errors] == ([KeyError] if bug else [None] * len(errors))
