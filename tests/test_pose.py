"""The skeleton: counts, flip pairs, the COCO-17 -> 18-joint mapping (neck derivation) and the
checks any skeleton's pose config passes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bpnet.data.synth import COCO_KEYPOINTS
from bpnet.pose import (
    BPNET_SKELETON,
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
    out = dataset_to_model_keypoints(kps, COCO_KEYPOINTS, BPNET_SKELETON)
    neck = out[0, BPNET_SKELETON.joints.index("neck")]
    assert neck.tolist() == [20.0, 30.0, float(Visibility.OCCLUDED)]
    assert out[0, BPNET_SKELETON.joints.index("nose")].tolist() == [5, 6, Visibility.VISIBLE]


def test_neck_is_not_labeled_when_a_shoulder_is_missing():
    kps = np.zeros((1, 17, 3), np.float32)
    kps[0, COCO_KEYPOINTS.index("left_shoulder")] = (10, 20, Visibility.VISIBLE)
    out = dataset_to_model_keypoints(kps, COCO_KEYPOINTS, BPNET_SKELETON)
    assert out[0, BPNET_SKELETON.joints.index("neck")].tolist() == [0, 0, Visibility.NOT_LABELED]


def test_dataset_without_a_needed_joint_is_refused():
    names = [n for n in COCO_KEYPOINTS if n != "left_ankle"]
    with pytest.raises(PoseConfigError, match="left_ankle"):
        dataset_to_model_keypoints(np.zeros((1, 16, 3)), names, BPNET_SKELETON)


def test_another_skeleton_loads_with_its_own_channel_counts(tmp_path):
    config = BPNET_SKELETON.to_config()
    config["skeleton"] = config["skeleton"][:-1]
    config["skeleton_edge_names"] = config["skeleton_edge_names"][:-1]
    path = tmp_path / "pose.json"
    path.write_text(json.dumps(config))
    skeleton = load_pose_config(path)
    assert skeleton != BPNET_SKELETON and (skeleton.heat_channels, skeleton.paf_channels) == (19, 36)


def test_model_to_dataset_is_the_inverse_except_the_neck():
    from bpnet.pose import model_to_dataset_keypoints

    kps = np.random.default_rng(0).uniform(1, 100, (1, 17, 3)).astype(np.float32)
    kps[..., 2] = Visibility.VISIBLE
    model = dataset_to_model_keypoints(kps, COCO_KEYPOINTS, BPNET_SKELETON)[0]
    assert np.array_equal(model_to_dataset_keypoints(model, COCO_KEYPOINTS, BPNET_SKELETON), kps[0])


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


def test_tao_file_takes_the_default_declarations():
    """TAO's file declares no derived joints or sigmas: its skeleton is the default one, neck included."""
    assert "derived_joints" not in json.loads(TAO_POSE_CONFIG.read_text())["categories"][0]
    skeleton = load_pose_config(TAO_POSE_CONFIG)
    assert [d.name for d in skeleton.derived] == ["neck"] and skeleton.sigmas_for(["nose"]).tolist() == [0.026]


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(categories=[{**d["categories"][0], "name": "car"}, {**d["categories"][0], "name": "bus"}]),
     "one with name 'person'"),
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


HAND = REPO / "specs/skeletons/hand_21joints.json"


def _hand(tmp_path, edit) -> Path:
    data = json.loads(HAND.read_text())
    edit(data["categories"][0])
    path = tmp_path / "hand.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("edit, message", [
    (lambda c: c.update(skeleton=c["skeleton"][4:], skeleton_edge_names=None),
     r"skeleton: the limbs leave \['thumb1', 'thumb2', 'thumb3', 'thumb4'\] disconnected"),
    (lambda c: c.update(skeleton=c["skeleton"] + [[2, 1]], skeleton_edge_names=None),
     r"skeleton\[20\] \['thumb1', 'wrist'\] repeats skeleton\[0\]"),
    (lambda c: c["keypoints"].__setitem__(5, "thumb1"), r"keypoints\[5\] 'thumb1' repeats keypoints\[1\]"),
    (lambda c: c.update(num_joints=1, keypoints=["wrist"], skeleton=[], skeleton_edge_names=None),
     "1 joint.*at least 2"),
    (lambda c: c.update(oks_sigmas={"elbow": 0.05}), "oks_sigmas.elbow: unknown joint"),
    (lambda c: c.update(assembly_start=["palm"]), "assembly_start: unknown joint 'palm'"),
    (lambda c: c.update(derived_joints={"palm": ["wrist", "thumb1"]}), "derived_joints.palm: unknown joint 'palm'"),
    (lambda c: c.update(flip_pairs=[["thumb1", "knuckle"]]), r"flip_pairs\[0\]: unknown joint 'knuckle'"),
])
def test_a_bad_skeleton_is_refused_naming_the_entry(tmp_path, edit, message):
    with pytest.raises(PoseConfigError, match=message):
        load_pose_config(_hand(tmp_path, edit))


def test_any_skeleton_maps_flips_and_derives_by_its_declarations(tmp_path):
    hand = load_pose_config(HAND)
    assert (hand.num_joints, hand.heat_channels, hand.paf_channels) == (21, 22, 40)
    assert hand.flip_index.tolist() == list(range(21))  # no left/right names: nothing swaps
    animal = load_pose_config(REPO / "specs/skeletons/quadruped_17joints.json")
    flip = animal.flip_index
    assert animal.joints[flip[animal.joints.index("left_front_paw")]] == "right_front_paw"
    declared = load_pose_config(_hand(tmp_path, lambda c: c.update(flip_pairs=[["thumb1", "pinky_finger1"]],
                                                                   derived_joints={"thumb4": ["wrist", "thumb3"]})))
    assert declared.joints[declared.flip_index[1]] == "pinky_finger1"
    names = [n for n in declared.joints if n != "thumb4"]
    kps = np.zeros((1, 20, 3), np.float32)
    kps[0, names.index("wrist")] = (0, 0, Visibility.VISIBLE)
    kps[0, names.index("thumb3")] = (10, 4, Visibility.VISIBLE)
    assert dataset_to_model_keypoints(kps, names, declared)[0, 4].tolist() == [5, 2, Visibility.VISIBLE]
