"""Two worker processes on 127.0.0.1 with TF_CONFIG train one model under
MultiWorkerMirroredStrategy (CPU, the real collective ops over gRPC), each from only its own share
of the train data (its record shard and that shard's images, fetched from an S3 server)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bpnet.artifacts import read_manifest, verify_files
from bpnet.data.records import shard_names
from bpnet.layout import RAW_DIR, RECORDS_DIR
from tests.conftest import REPO, free_port, write_train_spec

PER_WORKER_BATCH = 2  # x 2 workers = the one-process run's batch of 4
CHEAP = {"num_epoch": 1, "infrequent_summary_every_n_steps": 0}
SHARDS = shard_names("train", 2)  # one per worker


@pytest.fixture(scope="module")
def train_data(synth_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session dataset as the pipeline's train Dataset folder, in two record shards."""
    from components import runtime

    out = tmp_path_factory.mktemp("two-shards")
    runtime.dataset_convert(str(synth_dir), (synth_dir / "coco_spec.json").read_text(), out / "train_data",
                            out / "val_data", True, len(SHARDS))
    return out / "train_data"


def spec_over(path: Path, synth_dir: Path, data: Path, **overrides) -> Path:
    """A small train spec reading a train Dataset folder (``records/`` and ``raw/``)."""
    return write_train_spec(path, synth_dir, data / RECORDS_DIR, **{
        "dataloader.dataset_config.root_data_path": str(data / RAW_DIR),
        "dataloader.dataset_config.train_records_path": SHARDS, **overrides})


def tf_config(index: int, ports: list[int]) -> str:
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                       "task": {"type": "worker", "index": index}})


def process_env(tmp: Path, name: str, config: str | None) -> dict[str, str]:
    """One core's worth of threads, a TMPDIR of its own (to see what it leaves behind), TF_CONFIG."""
    scratch = tmp / f"tmp-{name}"
    scratch.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CONFIG", "BPNET_CLUSTER")}
    env.update(TMPDIR=str(scratch), PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", TF_NUM_INTRAOP_THREADS="1",
               TF_NUM_INTEROP_THREADS="1", TF_CPP_MIN_LOG_LEVEL="2")
    if config:
        env["TF_CONFIG"] = config
    return env


def run_all(commands: dict[str, tuple[list[str], dict[str, str]]], timeout: float = 600) -> dict[str, tuple[int, str]]:
    """Start every command at once (the workers must meet), wait for all; name -> (exit code, output)."""
    procs = {name: subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for name, (argv, env) in commands.items()}
    out = {}
    for name, p in procs.items():
        try:
            text, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            text, _ = p.communicate()
        out[name] = (p.returncode, text)
    return out


def test_two_workers_train_as_one_process_and_only_the_chief_writes(train_data, synth_dir, tmp_path, moto_server,
                                                                    monkeypatch):
    from bpnet.storage import S3Store, open_store
    from components.worker_data import fetch_train_share

    for name, value in {"BPNET_S3_ENDPOINT": f"http://{moto_server.endpoint}", "BPNET_S3_ACCESS_KEY": "testing",
                        "BPNET_S3_SECRET_KEY": "testing"}.items():
        monkeypatch.setenv(name, value)
    S3Store("s3://mlpipeline").client.make_bucket("mlpipeline")
    open_store("s3://mlpipeline/run/train_data").upload_tree(train_data)
    # each worker trains from a folder holding only what it fetched: its shard and that shard's images
    two = {}
    for i in range(2):
        fetch_train_share("minio://mlpipeline/run/train_data", tmp_path / f"data-w{i}", i, 2)
        two[i] = spec_over(tmp_path / f"w{i}.yaml", synth_dir, tmp_path / f"data-w{i}", **CHEAP,
                           **{"dataloader.batch_size": PER_WORKER_BATCH})
    one = spec_over(tmp_path / "one.yaml", synth_dir, train_data, **CHEAP,
                    **{"dataloader.batch_size": 2 * PER_WORKER_BATCH})
    ports = [free_port(), free_port()]

    results = tmp_path / "results"  # both workers are given it: the chief's results folder

    def harness(spec: Path, name: str, out: Path, config: str | None, partitions: int = 1):
        return ([sys.executable, "-m", "tests.dist_worker", str(spec), str(out), str(tmp_path / name), str(partitions)],
                process_env(tmp_path, name, config))

    # one process making the global batches two workers make (each half from one shard)
    outcomes = run_all({"w0": harness(two[0], "w0", results, tf_config(0, ports)),
                        "w1": harness(two[1], "w1", results, tf_config(1, ports)),
                        "alone": harness(one, "alone", tmp_path / "results-alone", None, partitions=2)})
    for name, (code, text) in outcomes.items():
        assert code == 0, f"{name}:\n{text[-3000:]}"

    # the same weights on both workers after every step (the all-reduce gives both the same sum)
    summary = json.loads((results / "train_summary.json").read_text())
    w0, w1 = ((tmp_path / f"{n}.trace").read_text().split() for n in ("w0", "w1"))
    assert len(w0) == summary["steps"] == summary["steps_per_epoch"] > 1
    assert w0 == w1

    # only the chief wrote: its results folder is complete; worker 1 left nothing in its TMPDIR
    verify_files(results, read_manifest(results / "MANIFEST.json"))
    assert (results / "checkpoints" / "ckpt-1.index").is_file()
    assert list((tmp_path / "tmp-w1").iterdir()) == []

    # one process with the same global batch takes the same first step (the same samples, batch-norm
    # statistics over the global batch); later steps drift by float rounding only
    alone = json.loads((tmp_path / "results-alone" / "train_summary.json").read_text())
    assert alone["steps"] == summary["steps"]
    assert abs(summary["first_loss"] - alone["first_loss"]) <= 1e-5 * alone["first_loss"]
    a, b = (np.load(tmp_path / f"{n}-step1.npz") for n in ("w0", "alone"))
    worst = max(float(np.max(np.abs(a[k] - b[k]))) for k in b.files)
    assert worst < 1e-5, f"largest weight difference after one step: {worst}"


@pytest.mark.slow  # a real SIGKILL, TensorFlow's peer health check (30 s period) and a rerun: make test-all
def test_a_dead_worker_fails_the_job_clearly_and_the_rerun_resumes(train_data, synth_dir, tmp_path):
    spec = spec_over(tmp_path / "two.yaml", synth_dir, train_data, num_epoch=4,
                     **{"dataloader.batch_size": PER_WORKER_BATCH})
    results = tmp_path / "results"

    def workers() -> dict[str, tuple[list[str], dict[str, str]]]:
        ports = [free_port(), free_port()]
        argv = [sys.executable, "-m", "bpnet.cli", "train", "-e", str(spec), "-r", str(results), "-k", "dist"]
        return {f"w{i}": (argv, process_env(tmp_path, f"w{i}", tf_config(i, ports))) for i in range(2)}

    procs = {n: subprocess.Popen(a, env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for n, (a, e) in workers().items()}
    try:
        deadline = time.monotonic() + 300
        while not (results / "checkpoints" / "ckpt-1.index").exists():
            assert procs["w0"].poll() is None, procs["w0"].communicate()[0][-3000:]
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.5)
        procs["w1"].send_signal(signal.SIGKILL)
        text, _ = procs["w0"].communicate(timeout=240)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
            p.communicate()
    assert procs["w0"].returncode != 0
    assert "a worker died or became unreachable" in text and "resumes from the chief's last checkpoint" in text
    assert not (results / "MANIFEST.json").exists()

    outcomes = run_all(workers())
    for name, (code, out) in outcomes.items():
        assert code == 0, f"{name}:\n{out[-3000:]}"
    summary = json.loads((results / "train_summary.json").read_text())
    assert summary["resumed_from_epoch"] >= 1 and summary["steps"] == 4 * summary["steps_per_epoch"]
    verify_files(results, read_manifest(results / "MANIFEST.json"))
