"""The learning curve: written by the trainer (JSON, PNG, TensorBoard), kept on resume, scored on
a subset of val images, drawn as a chart."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import tensorflow as tf

from bpnet.artifacts import read_manifest
from bpnet.curves import AP_COLOR, CURVE_JSON, CURVE_PNG, CurvePoint, is_ap_epoch, plot, read_curve
from bpnet.evaluate import coco_metrics, ground_truth
from bpnet.pose import BPNET_SKELETON
from bpnet.specs import DatasetSpec, TrainSpec, load_spec
from bpnet.train import train
from tests.conftest import write_train_spec


def _scalar_tags(events_dir) -> set[str]:
    tags = set()
    for path in events_dir.iterdir():
        for raw in tf.data.TFRecordDataset(str(path)):
            event = tf.compat.v1.Event.FromString(raw.numpy())
            tags |= {v.tag for v in event.summary.value}
    return tags


def test_training_writes_the_curve_and_resume_extends_it(converted, synth_dir, tmp_path):
    out = tmp_path / "run"
    spec = load_spec(write_train_spec(tmp_path / "a.yaml", synth_dir, converted, num_epoch=1), TrainSpec)
    train(spec, out, key="k")
    first = read_curve(out / CURVE_JSON)
    assert [p.epoch for p in first] == [1] and first[0].ap is not None and first[0].loss > 0
    spec = load_spec(write_train_spec(tmp_path / "b.yaml", synth_dir, converted, num_epoch=2), TrainSpec)
    train(spec, out, key="k")  # resumes at epoch 1: keeps that point, adds epoch 2
    points = read_curve(out / CURVE_JSON)
    assert [p.epoch for p in points] == [1, 2] and points[0] == first[0]
    assert points[1].step == 2 * points[0].step and all(p.ap is not None for p in points)
    png = cv2.imread(str(out / CURVE_PNG))
    assert png is not None and png.shape[0] > 100 and png.shape[1] > 200
    assert {CURVE_JSON, CURVE_PNG} <= {f["path"] for f in read_manifest(out / "MANIFEST.json")["files"]}
    assert {"curve/epoch_loss", "curve/val_AP", "curve/val_AP75"} <= _scalar_tags(out / "events")


@pytest.mark.slow  # trains three epochs: make test-all
def test_ap_epochs_follow_checkpoint_n_epoch(converted, synth_dir, tmp_path):
    spec = load_spec(write_train_spec(tmp_path / "t.yaml", synth_dir, converted, num_epoch=3, checkpoint_n_epoch=2),
                     TrainSpec)
    train(spec, tmp_path / "run", key="k")
    points = read_curve(tmp_path / "run" / CURVE_JSON)
    assert [p.ap is not None for p in points] == [False, True, True]  # epoch 2 (checkpoint) and the last


@pytest.mark.parametrize(("num_epoch", "checkpoint_n_epoch", "validation_every_n_epoch", "expected"), [
    (12, 5, None, [5, 10, 12]),  # unset: the checkpoint epochs and the last
    (12, 5, 3, [3, 6, 9, 12]),  # set: its own period, whatever the checkpoints
    (10, 5, 5, [5, 10]),  # TAO's specs: both 5
    (7, 2, 1, [1, 2, 3, 4, 5, 6, 7]),
    (7, 2, 0, [7]),  # 0: the last epoch only
    (3, 5, 10, [3]),  # a period longer than the run: the last epoch only
])
def test_ap_epochs_every_validation_every_n_epoch_else_checkpoint_n_epoch(
        num_epoch, checkpoint_n_epoch, validation_every_n_epoch, expected):
    assert [e for e in range(1, num_epoch + 1)
            if is_ap_epoch(e, num_epoch, checkpoint_n_epoch, validation_every_n_epoch)] == expected


def test_metrics_on_an_image_subset_ignore_the_other_images(synth_dir):
    spec = load_spec(synth_dir / "coco_spec.json", DatasetSpec)
    doc = ground_truth(spec, BPNET_SKELETON)
    subset = [image["id"] for image in doc["images"][:3]]
    perfect = [{"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"], "score": 1.0}
               for a in doc["annotations"] if a["image_id"] in subset and a["num_keypoints"] and not a["iscrowd"]]
    assert perfect
    sigmas = BPNET_SKELETON.sigmas_for(spec.keypoint_names)
    on_subset, _ = coco_metrics(json.loads(json.dumps(doc)), perfect, 1, sigmas, subset)
    on_all, _ = coco_metrics(json.loads(json.dumps(doc)), perfect, 1, sigmas)
    assert on_subset["AP"] > 0.99 and on_all["AR"] < on_subset["AR"]


def test_plot_draws_loss_and_ap():
    points = [CurvePoint(1, 10, 300.0), CurvePoint(2, 20, 120.0, 0.2, 0.5, 0.1), CurvePoint(3, 30, 80.0, 0.6, 0.9, 0.5)]
    image = plot(points, last_epoch=4)
    assert image.shape == (300, 560, 3) and image.dtype == np.uint8
    ap_pixels = np.all(image == np.array(AP_COLOR, np.uint8), axis=-1).sum()
    assert ap_pixels > 50
    assert not np.array_equal(plot(points[:1], 4), plot(points, 4))


def test_no_readable_val_ground_truth_means_a_curve_without_ap(synth_dir, tmp_path, caplog):
    """A train artifact holds the train split only: the val annotations the dataset spec names are
    absent (a DataError), which leaves AP out of the curve instead of failing the training."""
    import logging
    from types import SimpleNamespace

    from bpnet.curves import ValScorer

    spec_file = tmp_path / "coco_spec.json"
    spec_file.write_text((synth_dir / "coco_spec.json").read_text())  # its relative paths now lead nowhere
    spec = SimpleNamespace(skeleton=BPNET_SKELETON, dataloader=SimpleNamespace(dataset_config=SimpleNamespace(
        dataset_specs={"coco": str(spec_file)})))
    with caplog.at_level(logging.WARNING, logger="bpnet.curves"):
        assert ValScorer.from_train_spec(spec) is None
    assert "learning curve without AP" in caplog.text and "invalid ground truth" in caplog.text
