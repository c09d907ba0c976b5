"""Issue 16 classes 6-7: a schedule sane for any run length, divergence as one line, corrupt
checkpoints, and a local pipeline driver that leaves no orphan processes or half-written runs."""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from bpnet.cli import main
from bpnet.errors import ModelError, StepError
from bpnet.model.io import checkpoint_problem, latest_readable_checkpoint
from bpnet.model.optimizer import MAX_SOFT_START_GROWTH, effective_soft_start, make_schedule
from bpnet.specs import TrainSpec, load_spec
from bpnet.specs.train import LearningRateSchedule
from bpnet.train import nonfinite_variables
from pipelines.local_run import LOCK_FILE, RunGuard, run_processes
from tests.conftest import REPO, write_train_spec

DEMO = load_spec(REPO / "specs/demo/bpnet_train_demo.yaml", TrainSpec).optimizer.learning_rate_schedule
GUIDE = LearningRateSchedule()  # the guide's m1 values: 0.05 / 0.5, 2e-5 down to 8e-8


@pytest.mark.parametrize("config", [DEMO, GUIDE, LearningRateSchedule(soft_start=0.3, annealing=0.3)],
                         ids=["demo", "guide", "soft_start=annealing"])
@pytest.mark.parametrize("steps_per_epoch", [1, 7, 28])
def test_schedule_is_finite_bounded_and_monotone_for_every_epoch_count(config, steps_per_epoch):
    for epochs in range(1, 41):
        total = epochs * steps_per_epoch
        schedule = make_schedule(config, total, steps_per_epoch)
        lr = np.asarray(schedule(np.arange(total + 1)), np.float64)  # every step at once
        assert np.isfinite(lr).all(), (epochs, lr)
        lo, hi = config.min_learning_rate, config.base_learning_rate
        assert (lr >= lo * (1 - 1e-5)).all() and (lr <= hi * (1 + 1e-5)).all(), (epochs, lr)
        peak = int(np.argmax(lr))
        assert (np.diff(lr[:peak + 1]) >= -1e-12).all() and (np.diff(lr[peak:]) <= 1e-12).all(), (epochs, lr)
        ramp = effective_soft_start(config, total) * total
        needed = math.log(hi / lo) / math.log(MAX_SOFT_START_GROWTH)
        if config.annealing * total >= needed:  # room for a gentle ramp: the rate grows at most 10% a step
            assert (lr[1:peak + 1] / lr[:peak] <= MAX_SOFT_START_GROWTH * (1 + 1e-4)).all(), (epochs, lr)
        assert ramp <= config.annealing * total + 1e-9  # never eats into the decay


def test_long_runs_keep_the_guides_fractions():
    ramp = math.log(DEMO.base_learning_rate / DEMO.min_learning_rate) / math.log(MAX_SOFT_START_GROWTH)
    assert effective_soft_start(DEMO, 200 * 28) == DEMO.soft_start  # a long demo run
    assert effective_soft_start(GUIDE, 100 * 6000) == GUIDE.soft_start  # an m1 COCO run
    assert effective_soft_start(LearningRateSchedule(soft_start=0.0), 10) == 0.0  # no warm-up, as asked
    # a short one (6 epochs, 168 steps) is stretched to the steps its range needs at the capped growth
    assert effective_soft_start(DEMO, 6 * 28) == pytest.approx(ramp / 168)


def test_nonfinite_weights_are_found_by_name():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3, name="d")])
    assert nonfinite_variables(model) == []
    kernel = model.layers[0].kernel
    kernel.assign(np.where(np.eye(2, 3) > 0, np.nan, 0.0).astype("float32"))
    assert nonfinite_variables(model) == [kernel.path]


def test_divergence_is_one_line_exit_1_and_keeps_the_last_good_checkpoint(converted, synth_dir, tmp_path,
                                                                         capsys, caplog):
    out = tmp_path / "run"
    good = write_train_spec(tmp_path / "good.yaml", synth_dir, converted, num_epoch=1)
    assert main(["train", "-e", str(good), "-r", str(out), "-k", "k"]) == 0
    (out / "MANIFEST.json").unlink()
    # The same run continued with an absurd rate (a real divergence, not an injected NaN).
    bad = write_train_spec(tmp_path / "bad.yaml", synth_dir, converted, num_epoch=3, **{
        "optimizer.learning_rate_schedule": {"base_learning_rate": 10.0, "min_learning_rate": 1.0,
                                             "soft_start": 0.0}})
    caplog.clear()
    capsys.readouterr()
    with caplog.at_level(logging.ERROR):
        assert main(["train", "-e", str(bad), "-r", str(out), "-k", "k"]) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "\n" not in errors[0]
    message = errors[0]
    assert message.startswith("training diverged at step ") and "(epoch 2)" in message
    assert "at learning rate 10" in message and "base_learning_rate" in message and "soft_start" in message
    assert f"{out / 'checkpoints' / 'ckpt-1'} is kept" in message
    assert "Traceback" not in capsys.readouterr().err
    checkpoints = out / "checkpoints"
    assert not list(checkpoints.glob("ckpt-2*")) and not (out / "MANIFEST.json").exists()
    assert latest_readable_checkpoint(checkpoints) == str(checkpoints / "ckpt-1")


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _small_checkpoints(directory: Path, count: int) -> list[str]:
    """Real tf.train checkpoints ckpt-1..count of one variable (a trainer's are the same format)."""
    import tensorflow as tf

    value = tf.Variable(tf.zeros((256, 256)))
    checkpoint = tf.train.Checkpoint(value=value)
    prefixes = []
    for n in range(1, count + 1):
        value.assign(tf.fill((256, 256), float(n)))
        prefixes.append(checkpoint.write(str(directory / f"ckpt-{n}")))
    return prefixes


def test_a_truncated_checkpoint_is_skipped_with_a_warning_naming_it(tmp_path, caplog):
    first, second = _small_checkpoints(tmp_path, 2)
    _truncate(Path(second + ".data-00000-of-00001"))
    assert "Read less bytes than requested" in checkpoint_problem(second)
    with caplog.at_level(logging.WARNING):
        assert latest_readable_checkpoint(tmp_path) == first
    assert [r.getMessage() for r in caplog.records] == [
        f"checkpoint {second}.* is unreadable (Read less bytes than requested); falling back to the previous one"]
    Path(first + ".index").write_bytes(b"not a checkpoint index")
    with pytest.raises(ModelError, match=r"no readable checkpoint: ckpt-2 \(Read less bytes than requested\); "
                                         r"ckpt-1 \(.+\); move the folder away to start over"):
        latest_readable_checkpoint(tmp_path)
    assert latest_readable_checkpoint(tmp_path / "none") is None


@pytest.mark.slow
def test_trainer_resumes_from_the_previous_checkpoint_when_the_latest_is_truncated(converted, synth_dir, tmp_path,
                                                                                   caplog):
    out = tmp_path / "run"
    spec = write_train_spec(tmp_path / "t.yaml", synth_dir, converted, num_epoch=2)
    assert main(["train", "-e", str(spec), "-r", str(out), "-k", "k"]) == 0
    checkpoints = out / "checkpoints"
    _truncate(checkpoints / "ckpt-2.data-00000-of-00001")
    (out / "MANIFEST.json").unlink()
    with caplog.at_level(logging.WARNING):
        assert main(["train", "-e", str(spec), "-r", str(out), "-k", "k"]) == 0
    assert any(str(checkpoints / "ckpt-2") in r.getMessage() and "unreadable" in r.getMessage()
               for r in caplog.records if r.levelno == logging.WARNING)
    summary = (out / "train_summary.json").read_text()
    assert '"resumed_from_epoch": 1' in summary and '"epochs": 2' in summary
    assert checkpoint_problem(checkpoints / "ckpt-2") is None  # rewritten by the resumed epoch 2


# The local pipeline driver: a dummy driver with a real process tree (fast), then the real DAG (slow).

DUMMY_DRIVER = """
import subprocess, sys, time
from pathlib import Path
from pipelines.local_run import Interrupted, RunGuard
root = Path(sys.argv[1])
try:
    with RunGuard(root, "demo", grace=1.0):
        run = root / "demo-2026-12-02-00-00-00-000000"
        (run / "train").mkdir(parents=True)
        grandchild = ("import os, signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                      "open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(600)")
        child = ("import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', sys.argv[1], sys.argv[2]]); "
                 "time.sleep(600)")
        step = subprocess.Popen([sys.executable, "-c", child, grandchild, str(root / "grandchild.pid")])
        step.wait()  # like kfp.local: the driver blocks on the step
except Interrupted as exc:
    print(exc, file=sys.stderr)
    sys.exit(exc.exit_code)
"""


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _start_dummy(root: Path):
    proc = subprocess.Popen([sys.executable, "-c", DUMMY_DRIVER, str(root)], cwd=REPO, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    deadline = time.monotonic() + 60
    while not (root / "grandchild.pid").is_file() or not (root / "grandchild.pid").read_text():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else "slow"
        time.sleep(0.05)
    return proc, int((root / "grandchild.pid").read_text())


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_signalled_driver_stops_its_whole_tree_and_removes_the_unfinished_run(tmp_path, sig):
    proc, grandchild = _start_dummy(tmp_path)
    token = json.loads((tmp_path / LOCK_FILE).read_text())["token"]
    assert len(run_processes(token)) == 2  # the step and its grandchild, which ignores SIGTERM
    with pytest.raises(StepError, match=f"another local run \\(pid {proc.pid}\\)"):
        RunGuard(tmp_path, "demo").__enter__()  # a second driver on the same root is refused
    os.kill(proc.pid, getattr(signal, sig))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + getattr(signal, sig)
    assert f"interrupted by {sig}: stopped 2 step process(es), removed {tmp_path}/demo-2026-" in err
    assert not _alive(grandchild) and run_processes(token) == []  # SIGKILL after the 1 s grace
    assert not list(tmp_path.glob("demo-*")) and not list(tmp_path.glob(".scratch-*"))
    assert not (tmp_path / LOCK_FILE).exists()


def test_rerun_after_a_sigkilled_driver_stops_its_orphans_and_cleans_up(tmp_path, caplog):
    finished = tmp_path / "demo-2026-12-01-00-00-00-000000"  # an earlier, finished run: kept
    finished.mkdir()
    (finished / "summary.json").write_text("{}")
    proc, grandchild = _start_dummy(tmp_path)
    os.kill(proc.pid, signal.SIGKILL)  # no handler runs: the step tree is orphaned
    proc.wait()
    assert _alive(grandchild)
    with caplog.at_level(logging.WARNING), RunGuard(tmp_path, "demo", grace=1.0) as guard:
        assert not _alive(grandchild)
        assert [p.name for p in tmp_path.glob("demo-*")] == [finished.name]
        assert [p.name for p in tmp_path.glob(".scratch-*")] == [guard.scratch.name]
    assert any(f"the previous run (pid {proc.pid}) was killed: stopped 2 leftover process(es), removed "
               f"{tmp_path}/demo-2026-12-02" in r.getMessage() for r in caplog.records)
    assert not list(tmp_path.glob(".scratch-*"))


def _runs(root: Path) -> list[Path]:
    return [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]


@pytest.mark.slow
def test_make_run_killed_during_training_leaves_nothing_and_a_rerun_completes(tmp_path, synth_dir):
    from pipelines.outputs import summary_rows
    from tests.conftest import local_run_spec

    spec = local_run_spec(tmp_path, synth_dir)
    root = tmp_path / "root"
    cmd = [sys.executable, "-m", "pipelines", "local", "--spec", str(spec)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "BPNET_MODEL_KEY": "resilience"}
    log_path = tmp_path / "driver.log"  # a file, not a pipe: an unread pipe would block the driver
    with log_path.open("w") as log_file:
        driver = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 600
        while not list(root.glob("*/train/model/events")):  # the train step is training (in its executor)
            assert driver.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, "no training within 600 s"
            time.sleep(0.2)
        token = json.loads((root / LOCK_FILE).read_text())["token"]
        step_processes = run_processes(token)
        assert step_processes
        driver.send_signal(signal.SIGTERM)
        driver.wait(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()
    err = log_path.read_text()
    assert driver.returncode == 143, err[-3000:]
    assert "interrupted by SIGTERM: stopped" in err and "Traceback" not in err.split("interrupted by SIGTERM")[-1]
    assert not any(_alive(pid) for pid in step_processes) and run_processes(token) == []
    assert _runs(root) == [] and not list(root.glob(".scratch-*")) and not (root / LOCK_FILE).exists()
    rerun = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    (run,) = _runs(root)
    summary = json.loads((run / "summary.json").read_text())  # the rerun is a whole run: every step, its figures
    assert [s["step"] for s in summary["steps"]] == [row.label for row in summary_rows()]
    [scored] = [s for s in summary["steps"] if s["step"] == "evaluate retrained"]
    assert summary["metrics"]["AP"] == json.loads((Path(scored["output"]) / "metrics.json").read_text())["AP"]
    assert not list(root.glob(".scratch-*")) and not (root / LOCK_FILE).exists()
