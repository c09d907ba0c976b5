"""The training input pipeline (tf.data): records -> augmented images, labels and loss masks.

tf.data reads, shuffles and batches the serialized records; each batch is then made by one
NumPy/OpenCV call (C loops that release the GIL; batches run in parallel). Per sample: compose the
augmentation transform, decode the JPEG at the coarsest DCT scale the transform allows (1/2,
1/4, 1/8 — a person-centric crop that shrinks the image need not decode every pixel), warp the
image with the transform, pool the mask to the output stride and warp it too, move the
keypoints (swapping left/right joints on a horizontal flip), draw heatmaps and PAFs, and
normalize as ``(data / scale) - offset``. Augmentation draws are keyed by (random_seed, sample
counter), so a seed reproduces the stream exactly.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import tensorflow as tf

from bpnet.data import augment, labels, records
from bpnet.data.masks import MASK_IGNORE, MASK_KEEP
from bpnet.errors import DataError
from bpnet.pose import BPNET_SKELETON, Skeleton
from bpnet.preprocess import DCT_RATIOS, ImageReadError, normalize, read_image
from bpnet.specs.train import MODEL_STRIDE, TrainSpec

log = logging.getLogger(__name__)

cv2.setNumThreads(1)  # tf.data runs samples in parallel; OpenCV's own threads would oversubscribe


def record_paths(spec: TrainSpec, split: str = "train") -> list[Path]:
    cfg = spec.dataloader.dataset_config
    folder = cfg.train_records_folder_path if split == "train" else cfg.val_records_folder_path
    names = cfg.train_records_path if split == "train" else cfg.val_records_path
    if folder is None or not names:
        raise DataError(f"the train spec lists no {split} records")
    return [Path(folder) / n for n in names]


def decode_ratio(scale: float, encoding: str) -> int:
    """Coarsest JPEG DCT ratio r with r * scale <= 1: nothing skipped is later upsampled."""
    if encoding != "jpg":
        return 1
    return max((r for r in DCT_RATIOS if r * scale <= 1.0), default=1)


@dataclass(frozen=True)
class SampleMaker:
    """Makes training samples from serialized records; NumPy in and out."""

    spec: TrainSpec
    root: Path
    training: bool = True
    skeleton: Skeleton = BPNET_SKELETON

    def batch(self, counters: np.ndarray, serialized: np.ndarray) -> tuple[np.ndarray, ...]:
        """A whole batch in one call: per-sample TF op overhead would cost more than the work."""
        parts = [self.sample(records.decode(s), int(c)) for c, s in zip(counters, serialized, strict=True)]
        return tuple(np.stack(column) for column in zip(*parts, strict=True))

    def sample(self, rec: records.PoseSample, counter: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(image uint8 RGB, heatmap, paf, mask 0..255) for one record."""
        loader = self.spec.dataloader
        dims = loader.image_config.image_dims
        out_h, out_w = dims.height, dims.width
        target_h, target_w = loader.pose_config.target_shape
        aug = loader.augmentation_config
        u = augment.draws(self.spec.random_seed, counter) if self.training else None
        bbox = rec.bboxes[rec.main_index] if rec.main_index >= 0 else None
        m, mirrored = augment.transform(aug.spatial_aug_params, aug.spatial_augmentation_mode, out_h, out_w,
                                       rec.height, rec.width, bbox, u)

        ratio = decode_ratio(augment.scale_of(m), loader.image_config.image_encoding)
        try:
            pixels = read_image(self.root / rec.filename, ratio)  # RGB uint8; normalized in-graph per batch
            full = self._full_mask(rec)
        except ValueError as exc:
            if not loader.dataset_config.skip_bad_images:
                raise BadRecordError(f"record of image {rec.image_id}: {exc}") from None
            log.warning("skipping the record of image %s (zero loss weight): %s", rec.image_id, exc)
            return (np.zeros((out_h, out_w, 3), np.uint8),
                    np.zeros((target_h, target_w, self.skeleton.heat_channels), np.float32),
                    np.zeros((target_h, target_w, self.skeleton.paf_channels), np.float32),
                    np.full((target_h, target_w, 1), MASK_IGNORE, np.float32))
        image = cv2.warpAffine(pixels, augment.rescaled(m, ratio, 1)[:2], (out_w, out_h),
                               flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)

        mask = np.full((target_h, target_w), MASK_KEEP, np.float32)
        if full is not None:
            pad_h, pad_w = -full.shape[0] % MODEL_STRIDE, -full.shape[1] % MODEL_STRIDE
            full = cv2.copyMakeBorder(full, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=MASK_KEEP)
            pooled = cv2.resize(full, (full.shape[1] // MODEL_STRIDE, full.shape[0] // MODEL_STRIDE),
                                interpolation=cv2.INTER_AREA).astype(np.float32)
            mask = cv2.warpAffine(pooled, augment.rescaled(m, MODEL_STRIDE, MODEL_STRIDE)[:2], (target_w, target_h),
                                  flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=MASK_KEEP)

        kps = rec.keypoints.copy()
        kps[..., :2] = augment.apply_to_points(m, kps[..., :2])
        if mirrored:
            kps = kps[:, self.skeleton.flip_index]
        lab = loader.label_processor_config
        heat = labels.heatmaps(kps, target_h, target_w, MODEL_STRIDE, lab.heatmap_gaussian_sigma)
        paf = labels.pafs(kps, self.skeleton, target_h, target_w, MODEL_STRIDE,
                          lab.paf_ortho_dist_thresh * MODEL_STRIDE, lab.paf_gaussian_sigma * MODEL_STRIDE)
        return image, heat, paf, mask[..., None]

    def _full_mask(self, rec: records.PoseSample) -> np.ndarray | None:
        """The record's mask at full size, or None when it has nothing to ignore."""
        if not rec.mask_filename or rec.mask_ignored == 0:
            return None
        path = self.root / rec.mask_filename
        data = np.fromfile(path, np.uint8) if path.is_file() else np.zeros(0, np.uint8)
        full = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
        if full is None or full.shape[:2] != (rec.height, rec.width):
            raise ImageReadError(f"mask {path} is missing, cannot be decoded or is not {rec.width}x{rec.height}")
        return full


class BadRecordError(DataError, RuntimeError):
    """A training record whose image or mask cannot be read; the message names the image id and file."""


def bad_record_error(exc: tf.errors.OpError) -> Exception:
    """The BadRecordError raised inside a tf.data map function, out of the TensorFlow error that
    carries it (its text, traceback included); ``exc`` itself if it carries none."""
    match = re.search(r"BadRecordError: (.+)", exc.message)
    return BadRecordError(match.group(1).strip()) if match else exc


def _batch_fn(maker: SampleMaker):
    """The tf.data map function: a batch of (counter, record) -> normalized (images, targets)."""
    spec = maker.spec
    dims = spec.dataloader.image_config.image_dims
    th, tw = spec.dataloader.pose_config.target_shape
    norm = spec.dataloader.normalization_params

    def fn(counters: tf.Tensor, serialized: tf.Tensor):
        image, heat, paf, mask = tf.numpy_function(maker.batch, [counters, serialized],
                                                   [tf.uint8, tf.float32, tf.float32, tf.float32], stateful=False)
        image.set_shape([None, dims.height, dims.width, 3])
        heat.set_shape([None, th, tw, maker.skeleton.heat_channels])
        paf.set_shape([None, th, tw, maker.skeleton.paf_channels])
        mask.set_shape([None, th, tw, 1])
        images = normalize(tf.cast(image, tf.float32), norm.image_scale, norm.image_offset)
        return images, {"heatmap": heat, "paf": paf, "mask": normalize(mask, norm.mask_scale, norm.mask_offset)}

    return fn


def _part_stream(spec: TrainSpec, paths: list[Path], share: int, batch_size: int, index: int, training: bool,
                 repeat: bool, counter_offset: int) -> tf.data.Dataset:
    """Partition ``index``'s contribution to every global batch: ``share`` of its own records,
    shuffled, with the augmentation counters of their places in the global batch (step t, place
    j: ``counter_offset + t * batch_size + index * share + j``), so the draws do not depend on
    which process makes the batch. One partition of the whole batch is the plain stream."""
    ds = tf.data.TFRecordDataset([str(p) for p in paths])
    if training:
        ds = ds.shuffle(spec.dataloader.shuffle_buffer_size, seed=spec.random_seed + counter_offset,
                        reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    start = counter_offset + index * share

    def counted(step: tf.Tensor, serialized: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return start + step * batch_size + tf.range(tf.shape(serialized, out_type=tf.int64)[0]), serialized

    return ds.batch(share, drop_remainder=training).enumerate().map(counted)


def build_dataset(spec: TrainSpec, paths: list[Path], batch_size: int, training: bool = True,
                  repeat: bool = True, counter_offset: int = 0, partitions: int = 1, part: int | None = None,
                  replica_batch: int | None = None) -> tf.data.Dataset:
    """Batches of (images, {"heatmap", "paf", "mask"}), prefetched.

    ``counter_offset`` (samples already seen, on resume) moves the augmentation stream and the
    shuffle order on, so a resumed run does not replay the first epochs' draws. With
    ``partitions`` = n the shards are split among n workers (``bpnet.data.partition``) and every
    batch of ``batch_size`` is n equal slices, slice i from partition i's own shuffled records;
    ``part`` = i makes only that slice (worker i's input: it reads its own shards and their
    images, nothing else), None the whole batch (one process reproducing an n-worker run). The
    result is cut into batches of ``replica_batch`` (one per local replica)."""
    from bpnet.data.partition import worker_shards

    if batch_size % partitions or not (part is None or 0 <= part < partitions):
        raise DataError(f"a batch of {batch_size} cannot be split into {partitions} equal worker slices "
                        f"(slice {part})")
    share = batch_size // partitions
    made = batch_size if part is None else share
    replica_batch = replica_batch or made
    if made % replica_batch:
        raise DataError(f"a worker's {made} samples per step cannot be split into batches of {replica_batch}")
    shards = worker_shards(paths, partitions)
    streams = [_part_stream(spec, shards[i], share, batch_size, i, training, repeat, counter_offset)
               for i in (range(partitions) if part is None else [part])]
    ds = streams[0] if len(streams) == 1 else tf.data.Dataset.zip(tuple(streams)).map(
        lambda *slices: tuple(tf.concat(column, 0) for column in zip(*slices, strict=True)))
    if replica_batch != made:
        ds = ds.unbatch().batch(replica_batch, drop_remainder=training)
    maker = SampleMaker(spec, Path(spec.dataloader.dataset_config.root_data_path), training, spec.skeleton)
    # one batch per core at a time: numpy_function holds the GIL between its C calls, and more
    # concurrent batches than cores only add thread switching
    ds = ds.map(_batch_fn(maker), num_parallel_calls=len(os.sched_getaffinity(0)), deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)
