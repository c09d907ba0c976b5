"""Label generation against hand-computed values, and the augmentation that moves labels."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bpnet.data import labels
from bpnet.data.loader import SampleMaker, build_dataset, record_paths
from bpnet.data.records import PoseSample
from bpnet.pose import BPNET_SKELETON, Visibility
from bpnet.specs import TrainSpec, load_spec
from tests.conftest import write_train_spec

J = {n: i for i, n in enumerate(BPNET_SKELETON.joints)}
# On an 8x8 target at stride 8, cell (i, j) looks at input pixel (8j + 3.5, 8i + 3.5).


def one_person(**joints: tuple[float, float, int]) -> np.ndarray:
    kps = np.zeros((1, 18, 3), np.float32)
    for name, value in joints.items():
        kps[0, J[name]] = value
    return kps


def heat_of(kps: np.ndarray, sigma: float = 7.0) -> np.ndarray:
    return labels.heatmaps(kps, 8, 8, 8, sigma)


def test_heatmap_peak_location_value_and_spread():
    heat = heat_of(one_person(nose=(19.5, 27.5, Visibility.VISIBLE)))
    assert heat.shape == (8, 8, 19)
    nose = heat[..., J["nose"]]
    assert np.unravel_index(nose.argmax(), nose.shape) == (3, 2)
    assert nose[3, 2] == pytest.approx(1.0)
    assert nose[3, 3] == pytest.approx(math.exp(-64 / (2 * 49)), rel=1e-5)  # one cell = 8 px away
    assert heat[3, 2, -1] == pytest.approx(0.0) and heat[0, 7, -1] == pytest.approx(1.0)  # background
    assert np.all(np.delete(heat, [J["nose"], 18], axis=-1) == 0)


def test_not_labeled_is_ignored_and_occluded_counts():
    heat = heat_of(one_person(nose=(19.5, 27.5, Visibility.NOT_LABELED), neck=(35.5, 35.5, Visibility.OCCLUDED)))
    assert heat[..., J["nose"]].max() == 0.0
    assert heat[4, 4, J["neck"]] == pytest.approx(1.0)


def test_overlapping_people_take_the_max():
    kps = np.concatenate([one_person(nose=(19.5, 27.5, 2)), one_person(nose=(27.5, 27.5, 2))])
    heat = heat_of(kps)[..., J["nose"]]
    assert heat[3, 2] == pytest.approx(1.0) and heat[3, 3] == pytest.approx(1.0)


def paf_of(kps: np.ndarray, limb: tuple[str, str], band: float = 8.0, sigma: float = 0.24) -> np.ndarray:
    field = labels.pafs(kps, BPNET_SKELETON, 8, 8, 8, band=band, sigma=sigma)
    k = BPNET_SKELETON.limb_names().index(limb)
    return field[..., 2 * k:2 * k + 2]


def test_paf_is_the_unit_vector_on_the_limb_and_zero_off_it():
    kps = one_person(right_shoulder=(11.5, 11.5, 2), right_elbow=(51.5, 11.5, 2))  # horizontal, row 1
    field = paf_of(kps, ("right_shoulder", "right_elbow"))
    assert np.allclose(field[1, 1:7], [1.0, 0.0])
    assert np.allclose(field[0, 1:7], [1.0, 0.0]) and np.allclose(field[2, 1:7], [1.0, 0.0])  # 8 px band
    assert np.allclose(field[1, 7], [1.0, 0.0]) and np.allclose(field[1, 0], [1.0, 0.0])  # 8 px past the ends
    assert np.all(field[3:] == 0) and np.all(field[[0, 2]][:, [0, 7]] == 0)  # beyond the capsule
    others = labels.pafs(kps, BPNET_SKELETON, 8, 8, 8, 8.0, 0.24)
    k = BPNET_SKELETON.limb_names().index(("right_shoulder", "right_elbow"))
    assert np.all(np.delete(others, [2 * k, 2 * k + 1], axis=-1) == 0)


def test_diagonal_paf_has_unit_length_and_sigma_softens_the_edge():
    kps = one_person(left_hip=(3.5, 3.5, 2), left_knee=(59.5, 59.5, 2))
    field = paf_of(kps, ("left_hip", "left_knee"))
    on = np.linalg.norm(field, axis=-1)
    assert np.allclose(field[4, 4], [math.sqrt(0.5), math.sqrt(0.5)])
    assert set(np.round(np.unique(on), 5)) <= {0.0, 1.0}  # default: a binary band
    soft = np.linalg.norm(paf_of(kps, ("left_hip", "left_knee"), sigma=8.0), axis=-1)
    assert 0.0 < soft[2, 5] < 1.0 and soft[2, 5] == pytest.approx(math.exp(-(24 / math.sqrt(2) - 8) ** 2 / 128), 1e-4)


def test_paf_needs_both_ends_labeled():
    kps = one_person(right_shoulder=(11.5, 11.5, 2), right_elbow=(51.5, 11.5, 0))
    assert np.all(paf_of(kps, ("right_shoulder", "right_elbow")) == 0)


def test_overlapping_limbs_are_averaged():
    a = one_person(right_shoulder=(3.5, 27.5, 2), right_elbow=(59.5, 27.5, 2))
    b = one_person(right_shoulder=(27.5, 3.5, 2), right_elbow=(27.5, 59.5, 2))
    field = paf_of(np.concatenate([a, b]), ("right_shoulder", "right_elbow"))
    assert np.allclose(field[3, 3], [0.5, 0.5])
    assert np.allclose(field[3, 0], [1.0, 0.0])


# -- the whole sample: flip and transform ------------------------------------------------------------

@pytest.fixture
def sample_spec(tmp_path):
    def make(**overrides) -> TrainSpec:
        base = {"dataloader.augmentation_config.spatial_aug_params": {
            "rotate_deg_max": 0.0, "rotate_deg_min": 0.0, "translate_max_x": 0.0, "translate_min_x": 0.0,
            "translate_max_y": 0.0, "translate_min_y": 0.0, "flip_lr_prob": 0.0},
            "dataloader.augmentation_config.spatial_augmentation_mode": "center_aug"}
        for key, value in overrides.items():
            base["dataloader.augmentation_config.spatial_aug_params"][key] = value
        path = write_train_spec(tmp_path / "s.yaml", tmp_path, tmp_path, **base)
        return load_spec(path, TrainSpec)
    return make


def _record(tmp_path) -> PoseSample:
    import cv2

    cv2.imwrite(str(tmp_path / "img.jpg"), np.full((64, 64, 3), 128, np.uint8))
    kps = np.zeros((1, 18, 3), np.float32)
    kps[0, J["left_wrist"]] = (11.5, 19.5, 2)
    kps[0, J["left_elbow"]] = (11.5, 43.5, 2)
    kps[0, J["right_wrist"]] = (51.5, 51.5, 2)
    return PoseSample(1, "img.jpg", "", 64, 64, "coco", kps, np.array([[8, 8, 48, 48]], np.float32), -1)


def labels_of(spec: TrainSpec, tmp_path) -> tuple[np.ndarray, np.ndarray]:
    _, heat, paf, _ = SampleMaker(spec, tmp_path).sample(_record(tmp_path), 0)
    return heat, paf


def test_paf_channels_follow_the_tao_limb_order():
    """PAF channels 2k, 2k+1 hold limb k of TAO's pose config: neck -> right_hip is channels 0, 1."""
    kps = np.zeros((1, 18, 3), np.float32)
    kps[0, J["neck"]] = (40, 20, Visibility.VISIBLE)
    kps[0, J["right_hip"]] = (40, 100, Visibility.VISIBLE)  # straight down: unit vector (0, 1)
    field = labels.pafs(kps, BPNET_SKELETON, 16, 16, 8, 8.0, 0.24)
    assert np.abs(field[..., 2:]).max() == 0.0  # no other limb is labeled
    assert field[7, 4, 0] == 0.0 and field[7, 4, 1] == pytest.approx(1.0)


def test_flip_swaps_left_and_right_and_mirrors_pafs(sample_spec, tmp_path):
    h0, p0 = labels_of(sample_spec(flip_lr_prob=0.0), tmp_path)
    h1, p1 = labels_of(sample_spec(flip_lr_prob=1.0), tmp_path)
    flip = BPNET_SKELETON.flip_index
    assert np.allclose(h1[:, ::-1, :18][..., flip], h0[..., :18], atol=1e-5)
    assert h1[..., J["right_wrist"]].max() > 0.9 and np.unravel_index(
        h1[..., J["right_wrist"]].argmax(), (8, 8)) == (2, 6)  # the left wrist, mirrored and renamed
    limbs = BPNET_SKELETON.limb_names()
    k_left = limbs.index(("left_elbow", "left_wrist"))
    k_right = limbs.index(("right_elbow", "right_wrist"))
    p0, p1 = p0.reshape(8, 8, -1, 2), p1.reshape(8, 8, -1, 2)
    assert np.abs(p0[..., k_left, :]).max() > 0.9
    assert np.allclose(p1[:, ::-1, k_right, 0], -p0[..., k_left, 0], atol=1e-5)
    assert np.allclose(p1[:, ::-1, k_right, 1], p0[..., k_left, 1], atol=1e-5)


def test_rotation_moves_keypoints_with_the_image(sample_spec, tmp_path):
    heat, _ = labels_of(sample_spec(rotate_deg_max=90.0, rotate_deg_min=90.0), tmp_path)
    # 90 degrees about the centre (31.5, 31.5): (x, y) -> (63 - y, x); left wrist (11.5, 19.5) -> (43.5, 11.5)
    assert np.unravel_index(heat[..., J["left_wrist"]].argmax(), (8, 8)) == (1, 5)


def test_pipeline_is_deterministic_by_seed(converted, synth_dir, tmp_path):
    def first_batch(seed: int):
        spec = load_spec(write_train_spec(tmp_path / f"{seed}.yaml", synth_dir, converted, random_seed=seed), TrainSpec)
        images, lab = next(iter(build_dataset(spec, record_paths(spec), 4)))
        return images.numpy(), lab["heatmap"].numpy()

    a, b, c = first_batch(1), first_batch(1), first_batch(2)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_masks_reach_the_labels(converted, synth_dir, tmp_path):
    spec = load_spec(write_train_spec(tmp_path / "m.yaml", synth_dir, converted), TrainSpec)
    masks = [lab["mask"].numpy() for _, lab in build_dataset(spec, record_paths(spec), 4, training=False,
                                                             repeat=False)]
    values = np.concatenate([m.ravel() for m in masks])
    assert values.max() == pytest.approx(1.0) and values.min() < 0.5  # crowds / unlabeled people are masked


def test_either_flip_mirrors_the_person_so_left_and_right_swap():
    from bpnet.data.augment import transform
    from bpnet.specs.train import SpatialAugParams

    u = np.array([0.9, 0.9, 0.5, 0.9, 0.5, 0.5, 0.5, 0.5, 0.5])  # draws above both flip probabilities
    for lr, tb, swap in ((0.0, 0.0, False), (1.0, 0.0, True), (0.0, 1.0, True), (1.0, 1.0, False)):
        params = SpatialAugParams(flip_lr_prob=lr, flip_tb_prob=tb)
        u_flip = u.copy()
        u_flip[:2] = (0.0 if lr else 0.9, 0.0 if tb else 0.9)
        assert transform(params, "center_aug", 64, 64, 64, 64, None, u_flip)[1] is swap
