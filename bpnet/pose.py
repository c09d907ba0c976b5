"""The skeleton: joints, limbs, flip pairs and the dataset -> model keypoint mapping.

This is the one place that knows the BodyPoseNet 18-joint layout (COCO's 17 keypoints plus a
neck derived from the shoulders). The layout itself comes from the pose config shipped as package
data (``bpnet/resources/bpnet_18joints.json``, TAO's file, also ``specs/bpnet_18joints.json``):
its joint order is the heatmap channel order and its limb order the PAF channel order. Labels,
flipping, decoding and drawing derive everything from the ``Skeleton`` and look joints up by name.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from importlib import resources
from pathlib import Path

import numpy as np

from bpnet.errors import DataError


class Visibility(IntEnum):
    """BodyPoseNet's internal visibility categories (datasets map their own flags onto these)."""

    NOT_LABELED = 0
    OCCLUDED = 1
    VISIBLE = 2


VISIBILITY_NAMES: dict[str, Visibility] = {v.name.lower(): v for v in Visibility}

COCO_KEYPOINTS: tuple[str, ...] = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)  # fmt: skip

# COCO's own skeleton (1-based, as in the COCO annotation files and the guide's dataset spec).
COCO_SKELETON: tuple[tuple[int, int], ...] = (
    (16, 14), (14, 12), (17, 15), (15, 13), (12, 13), (6, 12), (7, 13), (6, 7),
    (6, 8), (7, 9), (8, 10), (9, 11), (2, 3), (1, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, 7),
)  # fmt: skip

# Joints derived from others: name -> the two joints whose midpoint it is.
DERIVED_JOINTS: dict[str, tuple[str, str]] = {"neck": ("left_shoulder", "right_shoulder")}

def _mirror_name(name: str) -> str:
    for a, b in (("left_", "right_"), ("right_", "left_")):
        if name.startswith(a):
            return b + name[len(a):]
    return name


@dataclass(frozen=True)
class Skeleton:
    """A model skeleton: ordered joints and limbs (pairs of joint indices, 0-based)."""

    joints: tuple[str, ...]
    limbs: tuple[tuple[int, int], ...]

    @property
    def num_joints(self) -> int:
        return len(self.joints)

    @property
    def heat_channels(self) -> int:
        """One heatmap per joint plus the background channel."""
        return self.num_joints + 1

    @property
    def paf_channels(self) -> int:
        """An (x, y) vector field per limb."""
        return 2 * len(self.limbs)

    @property
    def flip_index(self) -> np.ndarray:
        """For a horizontally mirrored image: joint i takes the label of joint flip_index[i]."""
        return np.array([self.joints.index(_mirror_name(j)) for j in self.joints], dtype=np.int64)

    def limb_names(self) -> list[tuple[str, str]]:
        return [(self.joints[a], self.joints[b]) for a, b in self.limbs]

    def to_config(self) -> dict:
        """The pose-config JSON form (1-based skeleton, as in the TLT pose config files)."""
        return {
            "num_joints": self.num_joints,
            "keypoints": list(self.joints),
            "skeleton": [[a + 1, b + 1] for a, b in self.limbs],
            "skeleton_edge_names": [list(p) for p in self.limb_names()],
            "derived_joints": {k: list(v) for k, v in DERIVED_JOINTS.items() if k in self.joints},
        }


class PoseConfigError(DataError, ValueError):
    """A pose config file that cannot be read or does not describe the supported skeleton."""


POSE_CONFIG_RESOURCE = "bpnet_18joints.json"  # package data: bpnet/resources/, the same file as specs/


def parse_pose_config(data: object, source: str) -> Skeleton:
    """A skeleton from pose-config JSON data in either accepted form.

    TAO's form (the file the guide's ``pose_config_path`` names) wraps the skeleton in
    ``categories`` and is read from the category named ``person``, as TAO's dataloader does; the
    project's earlier form has ``num_joints``/``keypoints``/``skeleton`` at the top level. In
    both, ``skeleton`` is 1-based and its order is the PAF channel order (limb k = channels
    2k, 2k+1); ``skeleton_edge_names``, when present, must name the same joints.
    """
    if not isinstance(data, dict):
        raise PoseConfigError(f"{source}: a pose config must be a JSON object")
    if "categories" in data:
        categories = data["categories"] if isinstance(data["categories"], list) else []
        people = [c for c in categories if isinstance(c, dict) and c.get("name") == "person"]
        if not people:
            raise PoseConfigError(f"{source}: categories has no entry with name 'person'")
        data = people[0]
    joints = data.get("keypoints")
    if not isinstance(joints, list) or not all(isinstance(j, str) for j in joints):
        raise PoseConfigError(f"{source}: keypoints must be a list of joint names")
    if data.get("num_joints") != len(joints):
        raise PoseConfigError(f"{source}: num_joints {data.get('num_joints')} != {len(joints)} keypoints")
    try:
        limbs = tuple((int(a) - 1, int(b) - 1) for a, b in data.get("skeleton", ()))
    except (TypeError, ValueError) as exc:
        raise PoseConfigError(f"{source}: skeleton must be a list of [a, b] pairs: {exc}") from exc
    for k, (a, b) in enumerate(limbs):
        if not (0 <= a < len(joints) and 0 <= b < len(joints)) or a == b:
            raise PoseConfigError(f"{source}: skeleton[{k}] = [{a + 1}, {b + 1}] is not a pair of 1-based "
                                  f"keypoint indices in 1..{len(joints)}")
    skeleton = Skeleton(joints=tuple(joints), limbs=limbs)
    names = data.get("skeleton_edge_names")
    if names is not None:
        expected = [list(p) for p in skeleton.limb_names()]
        for k, (got, want) in enumerate(zip(names, expected, strict=False)):
            if list(got) != want:
                raise PoseConfigError(f"{source}: skeleton_edge_names[{k}] = {list(got)} but skeleton[{k}] is {want}")
        if len(names) != len(expected):
            raise PoseConfigError(f"{source}: {len(names)} skeleton_edge_names for {len(expected)} skeleton edges")
    return skeleton


def _read_json(path: str | Path) -> object:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PoseConfigError(f"{path}: cannot read pose config: {exc}") from exc


def _default_skeleton() -> Skeleton:
    resource = resources.files("bpnet") / "resources" / POSE_CONFIG_RESOURCE
    return parse_pose_config(json.loads(resource.read_text()), f"bpnet/resources/{POSE_CONFIG_RESOURCE}")


# TAO's 18-joint skeleton, joint and limb (= PAF channel) order as in TAO's bpnet_18joints.json, so
# that an exported model is a drop-in for TAO's deployment configs (DeepStream bodypose2d).
BPNET_SKELETON = _default_skeleton()


def load_pose_config(path: str | Path) -> Skeleton:
    """Load a pose config JSON (TAO's or the project's form) and check it is the default skeleton.

    Labels and the decoder are generic over the skeleton, but the model's channel counts, the
    inference and evaluation steps and exported models assume the default one (the guide: only the
    default skeleton is supported), so another skeleton, including the default joints in another
    limb order (another PAF channel order), is refused with the first difference.
    """
    skeleton = parse_pose_config(_read_json(path), str(path))
    if skeleton == BPNET_SKELETON:
        return skeleton
    if skeleton.joints != BPNET_SKELETON.joints:
        detail = f"keypoints {list(skeleton.joints)}, expected {list(BPNET_SKELETON.joints)}"
    elif len(skeleton.limbs) != len(BPNET_SKELETON.limbs):
        detail = f"{len(skeleton.limbs)} limbs, expected {len(BPNET_SKELETON.limbs)}"
    else:
        k = next(i for i, (a, b) in enumerate(zip(skeleton.limbs, BPNET_SKELETON.limbs, strict=True)) if a != b)
        detail = (f"skeleton[{k}] (PAF channels {2 * k}, {2 * k + 1}) is {list(skeleton.limb_names()[k])}, "
                  f"expected {list(BPNET_SKELETON.limb_names()[k])}")
    raise PoseConfigError(f"{path}: only the default 18-joint skeleton (TAO's bpnet_18joints.json) is supported: "
                          f"{detail}")


def dataset_to_model_keypoints(
    keypoints: np.ndarray, dataset_names: Sequence[str], skeleton: Skeleton = BPNET_SKELETON
) -> np.ndarray:
    """Map (N, K_dataset, 3) keypoints with internal visibility flags to (N, J_model, 3).

    Joints are matched by name. A derived joint (the neck) is the midpoint of its two sources
    and is labeled only when both are; its flag is the weaker of the two. (The published code
    derived the neck toward (0, 0) when a shoulder was missing; here it is marked not labeled.)
    """
    keypoints = np.asarray(keypoints, dtype=np.float32).reshape(-1, len(dataset_names), 3)
    out = np.zeros((keypoints.shape[0], skeleton.num_joints, 3), dtype=np.float32)
    index = {name: i for i, name in enumerate(dataset_names)}
    for j, name in enumerate(skeleton.joints):
        if name in index:
            out[:, j] = keypoints[:, index[name]]
        elif name in DERIVED_JOINTS and all(n in index for n in DERIVED_JOINTS[name]):
            a, b = (keypoints[:, index[n]] for n in DERIVED_JOINTS[name])
            both = (a[:, 2] > Visibility.NOT_LABELED) & (b[:, 2] > Visibility.NOT_LABELED)
            out[:, j, :2] = np.where(both[:, None], (a[:, :2] + b[:, :2]) / 2.0, 0.0)
            out[:, j, 2] = np.where(both, np.minimum(a[:, 2], b[:, 2]), Visibility.NOT_LABELED)
        else:
            sources = f" from {' and '.join(DERIVED_JOINTS[name])}" if name in DERIVED_JOINTS else ""
            raise PoseConfigError(f"the dataset's keypoints {list(dataset_names)[:20]} have no '{name}' and it "
                                  f"cannot be derived{sources}: name every joint of the model's skeleton")
    return out


def model_to_dataset_keypoints(keypoints: np.ndarray, dataset_names: Sequence[str],
                               skeleton: Skeleton = BPNET_SKELETON) -> np.ndarray:
    """(J_model, 3) -> (K_dataset, 3) by joint name; derived joints (the neck) are dropped."""
    index = {name: i for i, name in enumerate(skeleton.joints)}
    return np.asarray(keypoints)[[index[name] for name in dataset_names]]
