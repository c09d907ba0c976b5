"""The skeleton: counts, flip pairs and the COCO-17 -> 18-joint mapping (neck derivation)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bpnet.pose import (
    BPNET_SKELETON,
    COCO_KEYPOINTS,
    PoseConfigError,
    Visibility,
    dataset_to_model_keypoints,
    load_pose_config,
)

REPO = Path(__file__).resolve().parents[1]
TAO_POSE_CONFIG = REPO / "tests/data/tao/bpnet_18joints.json"


def test_channel_counts_match_the_published_model():
    assert BPNET_SKELETON.num_joints == 18
    assert BPNET_SKELETON.heat_channels == 19 and BPNET_SKELETON.paf_channels == 38


def test_flip_index_swaps_left_and_right_and_is_an_involution():
    flip = BPNET_SKELETON.flip_index
    joints = BPNET_SKELETON.joints
    assert joints[flip[joints.index("left_wrist")]] == "right_wrist"
    assert joints[flip[joints.index("neck")]] == "neck"
    assert np.array_equal(flip[flip], np.arange(18))


def test_neck_is_midpoint_of_shoulders_with_weaker_flag():
    kps = np.zeros((1, 17, 3), np.float32)
    kps[0, COCO_KEYPOINTS.index("left_shoulder")] = (10, 20, Visibility.VISIBLE)
    kps[0, COCO_KEYPOINTS.index("right_shoulder")] = (30, 40, Visibility.OCCLUDED)
    kps[0, COCO_KEYPOINTS.index("nose")] = (5, 6, Visibility.VISIBLE)
    out = dataset_to_model_keypoints(kps, COCO_KEYPOINTS)
    neck = out[0, BPNET_SKELETON.joints.index("neck")]
    assert neck.tolist() == [20.0, 30.0, float(Visibility.OCCLUDED)]
    assert out[0, BPNET_SKELETON.joints.index("nose")].tolist() == [5, 6, Visibility.VISIBLE]


def test_neck_is_not_labeled_when_a_shoulder_is_missing():
    kps = np.zeros((1, 17, 3), np.float32)
    kps[0, COCO_KEYPOINTS.index("left_shoulder")] = (10, 20, Visibility.VISIBLE)
    out = dataset_to_model_keypoints(kps, COCO_KEYPOINTS)
    assert out[0, BPNET_SKELETON.joints.index("neck")].tolist() == [0, 0, Visibility.NOT_LABELED]


def test_dataset_without_a_needed_joint_is_refused():
    names = [n for n in COCO_KEYPOINTS if n != "left_ankle"]
    with pytest.raises(PoseConfigError, match="left_ankle"):
        dataset_to_model_keypoints(np.zeros((1, 16, 3)), names)


def test_a_different_skeleton_config_is_refused(tmp_path):
    config = BPNET_SKELETON.to_config()
    config["skeleton"] = config["skeleton"][:-1]
    config["skeleton_edge_names"] = config["skeleton_edge_names"][:-1]
    path = tmp_path / "pose.json"
    path.write_text(json.dumps(config))
    with pytest.raises(PoseConfigError, match="only the default 18-joint skeleton.*18 limbs, expected 19"):
        load_pose_config(path)


def test_model_to_dataset_is_the_inverse_except_the_neck():
    from bpnet.pose import model_to_dataset_keypoints

    kps = np.random.default_rng(0).uniform(1, 100, (1, 17, 3)).astype(np.float32)
    kps[..., 2] = Visibility.VISIBLE
    model = dataset_to_model_keypoints(kps, COCO_KEYPOINTS)[0]
    assert np.array_equal(model_to_dataset_keypoints(model, COCO_KEYPOINTS), kps[0])


def test_tao_and_project_pose_configs_load_to_the_same_skeleton(tmp_path):
    project = tmp_path / "project.json"
    project.write_text(json.dumps(BPNET_SKELETON.to_config()))  # the flat form, no categories wrapper
    assert "categories" in json.loads(TAO_POSE_CONFIG.read_text())
    assert load_pose_config(TAO_POSE_CONFIG) == load_pose_config(project) == BPNET_SKELETON


def test_the_shipped_pose_configs_are_one_file():
    shipped = (REPO / "bpnet/resources/bpnet_18joints.json").read_bytes()
    assert (REPO / "specs/bpnet_18joints.json").read_bytes() == shipped
    assert load_pose_config(REPO / "specs/bpnet_18joints.json") == BPNET_SKELETON


def test_default_skeleton_is_tao_joint_and_limb_order():
    person = json.loads(TAO_POSE_CONFIG.read_text())["categories"][0]
    assert list(BPNET_SKELETON.joints) == person["keypoints"]
    assert [list(p) for p in BPNET_SKELETON.limb_names()] == person["skeleton_edge_names"]
    assert BPNET_SKELETON.limb_names()[0] == ("neck", "right_hip")  # PAF channels 0, 1


def test_the_previous_limb_order_is_refused_naming_the_channels(tmp_path):
    config = BPNET_SKELETON.to_config()
    config["skeleton"] = [config["skeleton"][6]] + config["skeleton"][:6] + config["skeleton"][7:]
    del config["skeleton_edge_names"]
    path = tmp_path / "pose.json"
    path.write_text(json.dumps(config))
    with pytest.raises(PoseConfigError, match=r"skeleton\[0\] \(PAF channels 0, 1\) is \['neck', 'right_shoulder'\]"):
        load_pose_config(path)


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(categories=[{**d["categories"][0], "name": "car"}]), "no entry with name 'person'"),
    (lambda d: d["categories"][0]["skeleton_edge_names"].reverse(), r"skeleton_edge_names\[0\]"),
    (lambda d: d["categories"][0]["skeleton"].append([1, 19]), r"skeleton\[19\] = \[1, 19\]"),
    (lambda d: d["categories"][0].pop("num_joints"), "num_joints None != 18"),
])
def test_bad_tao_pose_configs_are_refused_clearly(tmp_path, edit, message):
    data = json.loads(TAO_POSE_CONFIG.read_text())
    edit(data)
    path = tmp_path / "pose.json"
    path.write_text(json.dumps(data))
    with pytest.raises(PoseConfigError, match=message):
        load_pose_config(path)
