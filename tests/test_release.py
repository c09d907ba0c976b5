"""Releases on a real S3 server (moto) and on local paths: complete releases, the latest pointer,
the promotion gate, warm starts, and a publish killed half-way."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from bpnet.release import promotion_decision, publish_release, read_latest
from bpnet.storage import S3Store, StorageError, fetch_dir
from components import runtime


@pytest.fixture
def s3(moto_server, monkeypatch) -> str:
    """A fresh release root on the S3 server (moto keeps its state per process: a new prefix each time)."""
    monkeypatch.setenv("BPNET_S3_ENDPOINT", f"http://{moto_server.endpoint}")
    monkeypatch.setenv("BPNET_S3_ACCESS_KEY", "testing")
    monkeypatch.setenv("BPNET_S3_SECRET_KEY", "testing")
    store = S3Store("s3://bpnet")
    if not store.client.bucket_exists("bpnet"):
        store.client.make_bucket("bpnet")
    return f"s3://bpnet/{uuid.uuid4().hex}/releases"


def release_dir(root: Path, ap: float, files: int = 3) -> Path:
    (root / "model").mkdir(parents=True)
    for i in range(files):
        (root / "model" / f"part{i:03d}.bin").write_bytes(os.urandom(2048))
    (root / "metrics.json").write_text(json.dumps({"AP": ap}))
    return root


@pytest.mark.parametrize("where", ["s3", "local"])
def test_publish_is_complete_and_moves_latest(request, tmp_path, where):
    root = request.getfixturevalue("s3") if where == "s3" else str(tmp_path / "releases")
    assert read_latest(root) is None
    first = publish_release(release_dir(tmp_path / "r1", 0.4), root, "r1", {"AP": 0.4})
    assert read_latest(root) == first and first["uri"].endswith("/r1")
    fetch_dir(first["uri"], tmp_path / "fetched")  # a complete, verifiable release
    assert (tmp_path / "fetched" / "metrics.json").is_file()
    publish_release(release_dir(tmp_path / "r2", 0.5), root, "r2", {"AP": 0.5})
    assert read_latest(root)["release"] == "r2"


def test_promotion_gate_against_the_minimum_and_the_latest_release(s3, tmp_path):
    root = s3
    assert runtime.promotion_gate(0.3, 0.2, root) == "promote"  # first release
    assert runtime.promotion_gate(0.1, 0.2, root).startswith("hold: AP 0.1000 is below the minimum 0.2000")
    publish_release(release_dir(tmp_path / "r1", 0.4), root, "r1", {"AP": 0.4})
    assert runtime.promotion_gate(0.35, 0.2, root) == "hold: AP 0.3500 is below the latest release r1 (0.4000)"
    assert runtime.promotion_gate(0.4, 0.2, root) == "promote"  # not lower: promoted
    assert promotion_decision(0.5, 0.2, None)[0]


def test_killed_publish_leaves_latest_on_the_previous_release(s3, tmp_path):
    root = s3
    publish_release(release_dir(tmp_path / "r1", 0.4), root, "r1", {"AP": 0.4})
    big = release_dir(tmp_path / "r2", 0.5, files=400)
    code = ("import sys; from bpnet.release import publish_release; "
            f"publish_release({str(big)!r}, {root!r}, 'r2', {{'AP': 0.5}})")
    proc = subprocess.Popen([sys.executable, "-c", code], env=os.environ.copy())
    store = S3Store(f"{root}/r2")
    try:
        deadline = time.monotonic() + 60
        while not store.list_objects():
            assert proc.poll() is None, "publish ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert 0 < len(store.list_objects()) < 402  # stopped half-way
    assert read_latest(root)["release"] == "r1"
    with pytest.raises(StorageError, match="no MANIFEST.json"):
        fetch_dir(f"{root}/r2", tmp_path / "half")


def test_warm_start_trains_from_the_latest_release(s3, tiny_model, synth_dir, tmp_path, monkeypatch):
    from bpnet.model.io import architecture_of, load_model
    from bpnet.prune import PruneSettings, prune
    from tests.conftest import write_train_spec

    monkeypatch.setenv("BPNET_MODEL_KEY", "tiny")
    model_file, _ = tiny_model
    released = prune(load_model(model_file, key="tiny"), PruneSettings(threshold=0.95, granularity=2,
                                                                        min_num_filters=4), (64, 64))
    release = tmp_path / "release"
    (release / "model").mkdir(parents=True)
    from bpnet.model.io import save_model

    (release / runtime.RELEASE_UNPRUNED).parent.mkdir(parents=True)
    save_model(released.model, release / runtime.RELEASE_UNPRUNED, key="tiny")  # what warm starts load
    publish_release(release, s3, "r1", {"AP": 0.3})

    data = tmp_path / "train_data"
    runtime.dataset_convert(str(synth_dir), (synth_dir / "coco_spec.json").read_text(), data, tmp_path / "val_data")
    spec = write_train_spec(tmp_path / "t.yaml", synth_dir, tmp_path / "unbound", num_epoch=1).read_text()
    out = tmp_path / "model"
    summary = runtime.train(data, spec, "", out, warm_start=s3)
    assert summary["warm_start"] == "r1"
    assert architecture_of(load_model(out / runtime.MODEL_FILE, key="tiny")) == released.architecture

    fresh = runtime.train(data, spec, "", tmp_path / "fresh", warm_start=f"{s3}-empty")
    assert "warm_start" not in fresh  # no release there yet: trained from the spec


def test_release_folder_holds_models_calibration_engines_metrics_and_card(tmp_path):
    def model_dir(name: str, files: dict[str, str]) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        for file, text in files.items():
            (folder / file).write_text(text)
        return folder

    trained = model_dir("trained", {runtime.MODEL_FILE: "keras unpruned"})
    retrained = model_dir("retrained", {runtime.MODEL_FILE: "keras", runtime.TRAIN_SPEC_FILE: "spec",
                                        runtime.POSE_CONFIG_FILE: "{}"})
    exported = model_dir("exported", {runtime.EXPORTED_FILE: "onnx", runtime.EXPORT_SETTINGS_FILE: "{}"})
    int8 = model_dir("int8", {runtime.EXPORTED_FILE: "qdq", "calibration.bin": "TRT-1-x\n",
                              "calibration.tensorfile.npy": "npy"})
    engines = [model_dir("e1", {"gpu-fp16.engine": "e"}), model_dir("e2", {"jetson-int8.engine": "e"})]
    evaluations = {name: {"AP": 0.5, "AP50": 0.7, "AP75": 0.4, "AP_medium": 0.5, "AP_large": 0.6, "AR": 0.6}
                   for name in ("unpruned", "pruned", "retrained", "ONNX fp32", "ONNX INT8")}
    pointer = runtime.publish(str(tmp_path / "releases"), trained, retrained, exported, int8, evaluations,
                              {"dataset_uri": "s3://d/coco", "data_version": "fp-1"}, {"prune": {"t": 0.1}}, engines)
    release = Path(pointer["uri"])
    expected = {"model/bpnet_model.tlt", "model/unpruned/bpnet_model.tlt", "model/train_spec.resolved.yaml",
                "model/pose_config.json",
                "onnx/bpnet_model.etlt", "onnx/bpnet_model.int8.etlt", "onnx/export.json",
                "calibration/calibration.bin", "calibration/calibration.tensorfile.npy",
                "engines/gpu-fp16.engine", "engines/jetson-int8.engine", "metrics.json", "MODEL_CARD.md"}
    assert {p.relative_to(release).as_posix() for p in release.rglob("*") if p.is_file()} == expected | {
        "MANIFEST.json"}
    card = (release / "MODEL_CARD.md").read_text()
    assert "s3://d/coco" in card and "| ONNX INT8 | 0.5000 |" in card and "engines/gpu-fp16.engine bytes" in card
    assert read_latest(str(tmp_path / "releases"))["release"] == pointer["release"]


def test_incomplete_release_is_refused_and_nan_is_never_promoted(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="the release would be incomplete: missing"):
        runtime.publish(str(tmp_path / "releases"), empty, empty, empty, empty, {}, {}, {})
    assert read_latest(str(tmp_path / "releases")) is None
    assert promotion_decision(float("nan"), 0.0, None) == (False, "AP is nan: not a number")
