"""The skeleton: joints, limbs, flip pairs and the dataset -> model keypoint mapping.

This is the one place that knows the BodyPoseNet 18-joint layout (COCO's 17 keypoints plus a
neck derived from the shoulders). Everything else (labels, augmentation, decoding, the pose
config JSON shipped in ``specs/``) is checked against or derived from it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

import numpy as np


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

BPNET_JOINTS: tuple[str, ...] = (
    "nose", "neck", "right_shoulder", "right_elbow", "right_wrist",
    "left_shoulder", "left_elbow", "left_wrist", "right_hip", "right_knee", "right_ankle",
    "left_hip", "left_knee", "left_ankle", "right_eye", "left_eye", "right_ear", "left_ear",
)  # fmt: skip

BPNET_LIMBS: tuple[tuple[str, str], ...] = (
    ("neck", "right_shoulder"), ("neck", "left_shoulder"),
    ("right_shoulder", "right_elbow"), ("right_elbow", "right_wrist"),
    ("left_shoulder", "left_elbow"), ("left_elbow", "left_wrist"),
    ("neck", "right_hip"), ("right_hip", "right_knee"), ("right_knee", "right_ankle"),
    ("neck", "left_hip"), ("left_hip", "left_knee"), ("left_knee", "left_ankle"),
    ("neck", "nose"), ("nose", "right_eye"), ("right_eye", "right_ear"),
    ("nose", "left_eye"), ("left_eye", "left_ear"),
    ("right_shoulder", "right_ear"), ("left_shoulder", "left_ear"),
)  # fmt: skip


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


BPNET_SKELETON = Skeleton(
    joints=BPNET_JOINTS,
    limbs=tuple((BPNET_JOINTS.index(a), BPNET_JOINTS.index(b)) for a, b in BPNET_LIMBS),
)


class PoseConfigError(ValueError):
    """A pose config file that does not describe the supported skeleton."""


def load_pose_config(path: str | Path) -> Skeleton:
    """Load a pose config JSON and check it is the supported 18-joint skeleton.

    The guide states only the default skeleton is supported; we say so precisely rather than
    silently training on a layout the decoder cannot assemble.
    """
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise PoseConfigError(f"{path}: cannot read pose config: {exc}") from exc
    joints = tuple(data.get("keypoints", ()))
    if data.get("num_joints") != len(joints):
        raise PoseConfigError(f"{path}: num_joints {data.get('num_joints')} != {len(joints)} keypoints")
    try:
        limbs = tuple((int(a) - 1, int(b) - 1) for a, b in data.get("skeleton", ()))
    except (TypeError, ValueError) as exc:
        raise PoseConfigError(f"{path}: skeleton must be a list of [a, b] pairs: {exc}") from exc
    skeleton = Skeleton(joints=joints, limbs=limbs)
    if skeleton != BPNET_SKELETON:
        raise PoseConfigError(
            f"{path}: only the default 18-joint skeleton is supported "
            f"(keypoints {list(BPNET_JOINTS)} with the 19 limbs of specs/bpnet_18joints.json)"
        )
    return skeleton


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
        elif name in DERIVED_JOINTS:
            a, b = (keypoints[:, index[n]] for n in DERIVED_JOINTS[name])
            both = (a[:, 2] > Visibility.NOT_LABELED) & (b[:, 2] > Visibility.NOT_LABELED)
            out[:, j, :2] = np.where(both[:, None], (a[:, :2] + b[:, :2]) / 2.0, 0.0)
            out[:, j, 2] = np.where(both, np.minimum(a[:, 2], b[:, 2]), Visibility.NOT_LABELED)
        else:
            raise PoseConfigError(f"dataset has no keypoint '{name}' and it cannot be derived")
    return out


def model_to_dataset_keypoints(keypoints: np.ndarray, dataset_names: Sequence[str],
                               skeleton: Skeleton = BPNET_SKELETON) -> np.ndarray:
    """(J_model, 3) -> (K_dataset, 3) by joint name; derived joints (the neck) are dropped."""
    index = {name: i for i, name in enumerate(skeleton.joints)}
    return np.asarray(keypoints)[[index[name] for name in dataset_names]]
