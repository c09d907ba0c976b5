"""Translation and rotation cover every sub-stride offset (position modulo the stride) uniformly."""

from __future__ import annotations

import numpy as np
import pytest

from bpnet.data import augment
from bpnet.specs import TrainSpec, load_spec
from bpnet.specs.train import MODEL_STRIDE
from tests.conftest import REPO

SPECS = ["specs/demo/bpnet_train_demo.yaml", "specs/bpnet_train_m1_coco.yaml"]
SAMPLES = 16_000


def _offsets(spec: TrainSpec, point: np.ndarray) -> np.ndarray:
    """(SAMPLES, 2) positions modulo the stride of one image point over many augmentation draws."""
    aug = spec.dataloader.augmentation_config
    dims = spec.dataloader.image_config.image_dims
    bbox = np.array([203.0, 117.0, 61.0, 180.0])  # x, y, w, h: an odd, off-grid person
    out = np.empty((SAMPLES, 2))
    for k in range(SAMPLES):
        m, _ = augment.transform(aug.spatial_aug_params, aug.spatial_augmentation_mode, dims.height, dims.width,
                                 480, 640, bbox, augment.draws(spec.random_seed, k))
        out[k] = augment.apply_to_points(m, point[None])[0]
    return np.mod(out, MODEL_STRIDE)


@pytest.mark.parametrize("spec_file", SPECS)
@pytest.mark.parametrize("point", [(233.5, 207.0), (251.0, 140.0)], ids=["bbox_centre", "off_centre_joint"])
def test_every_offset_modulo_the_stride_is_equally_likely(spec_file, point):
    """8x8 bins of (x mod 8, y mod 8): each holds 1/64 of the samples within sampling noise. The
    bbox centre moves by translation alone (rotation turns about it); a joint away from it moves
    by both, and rotation must not undo the uniformity."""
    spec = load_spec(REPO / spec_file, TrainSpec)
    offsets = _offsets(spec, np.array(point))
    counts, _, _ = np.histogram2d(offsets[:, 0], offsets[:, 1], bins=MODEL_STRIDE,
                                  range=[[0, MODEL_STRIDE], [0, MODEL_STRIDE]])
    expected = SAMPLES / MODEL_STRIDE**2  # 250; binomial sd ~16
    assert counts.min() > 0.75 * expected and counts.max() < 1.25 * expected, counts


def test_a_partial_stride_range_is_widened_to_whole_strides():
    assert augment.translation_range(-10.0, 10.0) == (-12.0, 12.0)
    assert augment.translation_range(-40.0, 40.0) == (-40.0, 40.0)  # TLT's m1 range: unchanged
    assert augment.translation_range(0.0, 3.0) == (-2.5, 5.5)
    assert augment.translation_range(5.0, 5.0) == (5.0, 5.0)  # no translation asked: none added


def test_without_widening_a_partial_range_favours_some_offsets():
    """Why the widening exists: a uniform 20 px range hits 4 of 8 offsets 3 times, the others twice."""
    rng = np.random.default_rng(0)
    raw = np.mod(rng.uniform(-10.0, 10.0, SAMPLES), MODEL_STRIDE)
    widened = np.mod(rng.uniform(*augment.translation_range(-10.0, 10.0), SAMPLES), MODEL_STRIDE)
    ratio = lambda v: np.bincount(v.astype(int), minlength=MODEL_STRIDE).max() / np.bincount(  # noqa: E731
        v.astype(int), minlength=MODEL_STRIDE).min()
    assert ratio(raw) > 1.3 and ratio(widened) < 1.15
