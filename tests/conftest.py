"""Shared fixtures: a tiny synthetic dataset and a real S3-protocol server on 127.0.0.1."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from bpnet.data.synth import generate

REPO = Path(__file__).resolve().parents[1]
REAL = REPO / "tests" / "data" / "real_images"


def real_dataset(root: Path) -> Path:
    """A COCO tree under ``root`` with the real coco-mini-train annotations (tests/data/real_images):
    its three real images and placeholders of the annotated sizes for the others (filter counts
    and spec checks depend on the annotations and the files' presence, not on pixels)."""
    import json
    import shutil

    import cv2
    import numpy as np

    ann = REAL / "person_keypoints_train2017.json"
    (root / "annotations").mkdir(parents=True)
    shutil.copy(ann, root / "annotations" / ann.name)
    (root / "train2017").mkdir()
    for image in json.loads(ann.read_text())["images"]:
        real = REAL / image["file_name"]
        if real.is_file():
            shutil.copy(real, root / "train2017" / image["file_name"])
        else:
            cv2.imwrite(str(root / "train2017" / image["file_name"]),
                        np.full((image["height"], image["width"], 3), 128, np.uint8))
    return root


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small demo dataset shared (read-only) by the tests of the whole session."""
    root = tmp_path_factory.mktemp("synth")
    generate(root, seed=7, train_images=24, val_images=8, hard_scenes=True)  # converter and filter cases
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MotoServer:
    """moto's ThreadedMotoServer on a free loopback port, restartable."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self.port = free_port()
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.running = False

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self.server.start()
        self.running = True

    def stop(self) -> None:
        if self.running:
            self.server.stop()
            self.running = False


@pytest.fixture
def moto_server() -> Iterator[MotoServer]:
    server = MotoServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def converted(synth_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session dataset converted to train records (with masks) in a folder of its own."""
    from bpnet.data.convert import ConvertSettings, convert_dataset
    from bpnet.specs import DatasetSpec, load_spec

    out = tmp_path_factory.mktemp("records")
    spec = load_spec(synth_dir / "coco_spec.json", DatasetSpec)
    convert_dataset(spec, out / "train", ConvertSettings(generate_masks=True))
    return out


def write_train_spec(path: Path, synth_dir: Path, records: Path, **overrides) -> Path:
    """A small train spec over the session dataset; ``overrides`` are dotted keys (a.b.c=value)."""
    import yaml

    spec = {
        "num_epoch": 2, "checkpoint_n_epoch": 1, "random_seed": 5, "log_every_n_secs": 0,
        "summary_every_n_steps": 1, "infrequent_summary_every_n_steps": 2,
        "dataloader": {
            "batch_size": 4, "shuffle_buffer_size": 100,
            "image_config": {"image_dims": {"height": 64, "width": 64}},
            "pose_config": {"target_shape": [8, 8], "pose_config_path": str(REPO / "specs/bpnet_18joints.json")},
            "dataset_config": {"root_data_path": str(synth_dir), "train_records_folder_path": str(records),
                               "train_records_path": ["train-fold-000-of-001"],
                               "dataset_specs": {"coco": str(synth_dir / "coco_spec.json")}},
        },
        "model": {"stages": 2, "width_multiplier": 0.125},
        "optimizer": {"learning_rate_schedule": {"base_learning_rate": 1e-3, "min_learning_rate": 1e-5}},
    }
    for dotted, value in overrides.items():
        node = spec
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture(scope="session")
def tiny_model(synth_dir: Path, converted: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(model file, train spec) of a one-epoch model: real files, meaningless weights. Key: 'tiny'."""
    from bpnet.specs import TrainSpec, load_spec
    from bpnet.train import train

    root = tmp_path_factory.mktemp("tiny_model")
    spec_path = write_train_spec(root / "train.yaml", synth_dir, converted, num_epoch=1)
    result = train(load_spec(spec_path, TrainSpec), root / "run", key="tiny")
    return Path(result.model_path), spec_path


def cluster_spec(tmp_path: Path, **changes) -> Path:
    """specs/pipeline/cluster.yaml with its relative paths made absolute, plus ``changes``."""
    spec_dir = REPO / "specs" / "pipeline"
    data = yaml.safe_load((spec_dir / "cluster.yaml").read_text())
    data["specs"] = {k: str((spec_dir / v).resolve()) for k, v in data["specs"].items()}
    data["path_map"] = [f"/workspace/examples/bpnet/model_pose_config={REPO / 'specs'}"]
    data["kfp"].pop("host")
    data["dataset"]["version"] = "v7"
    for key, value in changes.items():
        data[key] = value if not isinstance(value, dict) else {**data.get(key, {}), **value}
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def local_run_spec(tmp_path: Path, synth_dir: Path, **changes) -> Path:
    """A run spec over the session dataset with a one-epoch tiny model (``changes``: top-level
    fields replaced), as the whole-DAG tests run it, on the host or in containers."""
    train = write_train_spec(tmp_path / "train.yaml", synth_dir, tmp_path / "unbound", num_epoch=1,
                             **{"model.kernel_regularization_factor": 1e-3})
    retrain = write_train_spec(tmp_path / "retrain.yaml", synth_dir, tmp_path / "unbound", num_epoch=1,
                               load_graph=True, pretrained_weights="bound/by/the/pipeline.tlt")
    infer = tmp_path / "infer.yaml"
    infer.write_text(yaml.safe_dump({"model_path": "bound/by/the/pipeline.tlt", "train_spec": "bound.yaml",
                                     "input_shape": [64, 64], "heatmap_threshold": 0.1}))
    data = {"name": "test", "pipeline_root": str(tmp_path / "root"), "images": {"gpu": "bpnet:test"},
            "dataset": {"uri": str(synth_dir)},
            "specs": {"dataset": str(synth_dir / "coco_spec.json"), "train": str(train), "retrain": str(retrain),
                      "inference": str(infer)},
            "prune": {"pruning_threshold": 0.9, "pruning_granularity": 2, "min_num_filters": 4},
            "export": {"input_shape": [64, 64], "cal_batches": 2, "cal_batch_size": 2},
            "release": {"root": str(tmp_path / "releases"), "min_ap": 0.0, "plain_onnx": True,
                        "max_int8_ap_drop": -1.0},  # INT8 would have to beat fp32 by 1.0: the INT8 gate trips
            "engines": {"enabled": False},
            "steps": {s: {"gpus": 0} for s in ("dataset_convert", "train", "prune", "retrain", "export", "calibrate",
                                               "evaluate", "inference")},
            "report_images": 2, **changes}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    return path
