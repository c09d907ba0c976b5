"""The one TFRecord schema written by dataset_convert and read by the training input pipeline.

Each ``tf.train.Example`` is one training sample: an image (by path, not by value, as in TLT:
paths are relative to the dataset's root, which the train spec gives as ``root_data_path``), its
loss mask, and every labeled person's keypoints in the model's 18-joint layout.

=====================  =======  =========================================================
feature                type     meaning
=====================  =======  =========================================================
image/id               int64    COCO image id
image/filename         bytes    image path relative to the dataset root
image/mask_filename    bytes    mask PNG path relative to the dataset root ('' = no mask)
image/mask_ignored     int64    mask pixels to ignore: 0 = none (the mask need not be read), -1 = unknown
image/height           int64    image height in pixels
image/width            int64    image width in pixels
dataset                bytes    dataset name (the dataset spec's ``dataset``)
person/num             int64    P, the number of persons in this sample
person/keypoints       float    P x J x 3 (x, y, visibility); J = keypoints/num_joints
person/bbox            float    P x 4 (x, y, w, h)
person/main_index      int64    index of the person this sample is centred on; -1 if none
keypoints/num_joints   int64    J (18 for BodyPoseNet)
=====================  =======  =========================================================

Visibility values are ``bpnet.pose.Visibility`` (0 not labeled, 1 occluded, 2 visible).
When a sample is centred on a person (person-centric augmentation) that person comes first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bpnet.errors import DataError

SHARD_PATTERN = "{prefix}-fold-{index:03d}-of-{count:03d}"
_SHARD_RE = re.compile(r"^(?P<prefix>.+)-fold-(?P<index>\d{3})-of-(?P<count>\d{3})$")


@dataclass
class PoseSample:
    image_id: int
    filename: str
    mask_filename: str
    height: int
    width: int
    dataset: str
    keypoints: np.ndarray  # (P, J, 3)
    bboxes: np.ndarray  # (P, 4)
    main_index: int = -1
    mask_ignored: int = 0


def shard_names(prefix: str, count: int) -> list[str]:
    return [SHARD_PATTERN.format(prefix=prefix, index=i, count=count) for i in range(count)]


def shard_prefix(shard_path: str | Path) -> str:
    """``.../train-fold-000-of-002`` -> ``.../train`` (raises for a name not in the pattern)."""
    match = _SHARD_RE.match(str(shard_path))
    if not match:
        raise DataError(f"{shard_path}: not a shard name of the form <prefix>-fold-NNN-of-NNN")
    return match.group("prefix")


def encode(sample: PoseSample) -> bytes:
    import tensorflow as tf

    def ints(*values: int) -> tf.train.Feature:
        return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))

    def floats(values: np.ndarray) -> tf.train.Feature:
        return tf.train.Feature(float_list=tf.train.FloatList(value=np.asarray(values, np.float32).ravel()))

    def text(value: str) -> tf.train.Feature:
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.encode("utf-8")]))

    keypoints = np.asarray(sample.keypoints, np.float32)
    num_joints = keypoints.shape[1] if keypoints.ndim == 3 else 0
    feature = {
        "image/id": ints(sample.image_id),
        "image/filename": text(sample.filename),
        "image/mask_filename": text(sample.mask_filename),
        "image/mask_ignored": ints(sample.mask_ignored),
        "image/height": ints(sample.height),
        "image/width": ints(sample.width),
        "dataset": text(sample.dataset),
        "person/num": ints(len(keypoints)),
        "person/keypoints": floats(keypoints),
        "person/bbox": floats(sample.bboxes),
        "person/main_index": ints(sample.main_index),
        "keypoints/num_joints": ints(num_joints),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def decode(serialized: bytes) -> PoseSample:
    """Decode one record with the protobuf parser (fast: no TensorFlow op per record)."""
    from tensorflow.core.example.example_pb2 import Example

    f = Example.FromString(serialized).features.feature

    def one(name: str, default: int = 0) -> int:
        values = f[name].int64_list.value if name in f else ()
        return int(values[0]) if values else default

    def text(name: str) -> str:
        values = f[name].bytes_list.value if name in f else ()
        return values[0].decode("utf-8") if values else ""

    num, joints = one("person/num"), one("keypoints/num_joints")
    return PoseSample(
        image_id=one("image/id"), filename=text("image/filename"), mask_filename=text("image/mask_filename"),
        height=one("image/height"), width=one("image/width"), dataset=text("dataset"),
        keypoints=np.asarray(f["person/keypoints"].float_list.value, np.float32).reshape(num, joints, 3),
        bboxes=np.asarray(f["person/bbox"].float_list.value, np.float32).reshape(num, 4),
        main_index=one("person/main_index", -1), mask_ignored=one("image/mask_ignored"))


def read_samples(paths: list[str | Path]) -> list[PoseSample]:
    import tensorflow as tf

    return [decode(r.numpy()) for r in tf.data.TFRecordDataset([str(p) for p in paths])]
