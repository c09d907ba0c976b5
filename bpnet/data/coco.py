"""Read a COCO person-keypoints file and validate it against the dataset spec.

Every problem is collected with the ids it concerns (image id, annotation id), so a bad dataset
is reported in one pass instead of one crash at a time. Keypoint visibility flags are mapped
from the dataset's convention to BodyPoseNet's (``bpnet.pose.Visibility``) here, once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bpnet.artifacts import ArtifactError, safe_relpath
from bpnet.pose import VISIBILITY_NAMES, Visibility
from bpnet.specs.dataset import CategoryConfig, VisibilityFlagsConfig

# A bbox may overhang the image by this many pixels (rounding in annotation tools) before it is
# reported as outside the image.
BBOX_TOLERANCE_PX = 1.0


@dataclass(frozen=True)
class InputProblem:
    """Something wrong with the input data, located by its ids."""

    message: str
    image_id: int | None = None
    annotation_id: int | None = None

    def __str__(self) -> str:
        where = []
        if self.image_id is not None:
            where.append(f"image {self.image_id}")
        if self.annotation_id is not None:
            where.append(f"annotation {self.annotation_id}")
        return f"{' '.join(where) or 'dataset'}: {self.message}"


@dataclass
class Person:
    """One person annotation with keypoints in BodyPoseNet's visibility convention."""

    annotation_id: int
    keypoints: np.ndarray  # (K, 3): x, y, Visibility; coordinates zeroed where not labeled
    bbox: tuple[float, float, float, float]  # x, y, w, h
    area: float
    iscrowd: bool
    segmentation: Any

    @property
    def num_labeled(self) -> int:
        return int(np.count_nonzero(self.keypoints[:, 2] != Visibility.NOT_LABELED))

    @property
    def center(self) -> tuple[float, float]:
        x, y, w, h = self.bbox
        return x + w / 2.0, y + h / 2.0


@dataclass
class ImageEntry:
    image_id: int
    file_name: str
    height: int
    width: int
    persons: list[Person] = field(default_factory=list)  # crowd regions included (iscrowd=True)


@dataclass
class CocoData:
    images: list[ImageEntry]
    problems: list[InputProblem]

    @property
    def bad_image_ids(self) -> set[int]:
        return {p.image_id for p in self.problems if p.image_id is not None}


def visibility_lookup(flags: VisibilityFlagsConfig) -> dict[int, Visibility]:
    """Dataset flag value -> BodyPoseNet visibility."""
    return {value: VISIBILITY_NAMES[flags.mapping[name]] for name, value in flags.value.items()}


def load_coco(annotation_file: str | Path, category: CategoryConfig, flags: VisibilityFlagsConfig) -> CocoData:
    """Parse and validate ``annotation_file``; problems are returned, not raised."""
    path = Path(annotation_file)
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        return CocoData([], [InputProblem(f"cannot read annotation file {path}: {exc}")])
    problems: list[InputProblem] = []
    images: dict[int, ImageEntry] = {}
    for img in raw.get("images", []):
        entry = _parse_image(img, problems)
        if entry is not None:
            images[entry.image_id] = entry
    lookup = visibility_lookup(flags)
    known_categories = {c.get("id") for c in raw.get("categories", [])} | {category.id}
    for ann in raw.get("annotations", []):
        person = _parse_annotation(ann, images, category, lookup, known_categories, problems)
        if person is not None:
            images[ann["image_id"]].persons.append(person)
    return CocoData(list(images.values()), problems)


def _parse_image(img: dict, problems: list[InputProblem]) -> ImageEntry | None:
    image_id = img.get("id")
    if not isinstance(image_id, int):
        problems.append(InputProblem(f"image entry without an integer id: {str(img)[:80]}"))
        return None
    try:
        height, width = int(img["height"]), int(img["width"])
        file_name = str(img["file_name"])
    except (KeyError, TypeError, ValueError) as exc:
        problems.append(InputProblem(f"image entry lacks a valid {exc}", image_id=image_id))
        return None
    if height <= 0 or width <= 0:
        problems.append(InputProblem(f"image size {width}x{height} is not positive", image_id=image_id))
    try:
        file_name = safe_relpath(file_name)  # masks are written by this name: it must stay inside its folder
    except ArtifactError as exc:
        problems.append(InputProblem(f"file_name: {exc}", image_id=image_id))
    return ImageEntry(image_id, file_name, height, width)


def _parse_annotation(ann: dict, images: dict[int, ImageEntry], category: CategoryConfig,
                      lookup: dict[int, Visibility], known_categories: set, problems: list[InputProblem],
                      ) -> Person | None:
    ann_id, image_id = ann.get("id"), ann.get("image_id")
    if image_id not in images:
        problems.append(InputProblem(f"refers to unknown image id {image_id}", annotation_id=ann_id))
        return None
    cat = ann.get("category_id")
    if cat not in known_categories:
        problems.append(InputProblem(f"refers to unknown category id {cat}", image_id, ann_id))
        return None
    if cat != category.id:
        return None  # another known category (not the person category): not ours to convert
    image = images[image_id]
    iscrowd = bool(ann.get("iscrowd", 0))
    keypoints = _parse_keypoints(ann, category.num_joints, lookup, iscrowd, image_id, ann_id, problems)
    if keypoints is None:
        return None
    bbox = ann.get("bbox")
    if not (isinstance(bbox, list | tuple) and len(bbox) == 4 and all(isinstance(v, int | float) for v in bbox)):
        problems.append(InputProblem(f"bbox {bbox} is not [x, y, w, h]", image_id, ann_id))
        return None
    x, y, w, h = (float(v) for v in bbox)
    tol = BBOX_TOLERANCE_PX
    if w < 0 or h < 0 or x < -tol or y < -tol or x + w > image.width + tol or y + h > image.height + tol:
        problems.append(InputProblem(
            f"bbox {bbox} lies outside the {image.width}x{image.height} image", image_id, ann_id))
        return None
    return Person(ann_id, keypoints, (x, y, w, h), float(ann.get("area", w * h)), iscrowd,
                  ann.get("segmentation") or [])


def _parse_keypoints(ann: dict, num_joints: int, lookup: dict[int, Visibility], iscrowd: bool,
                     image_id: int, ann_id: int, problems: list[InputProblem]) -> np.ndarray | None:
    values = ann.get("keypoints")
    if values is None and iscrowd:
        return np.zeros((num_joints, 3), dtype=np.float32)
    if not isinstance(values, list) or len(values) != 3 * num_joints:
        count = len(values) if isinstance(values, list) else "no"
        problems.append(InputProblem(
            f"keypoints has {count} values, expected {3 * num_joints} ({num_joints} joints x 3)", image_id, ann_id))
        return None
    kps = np.asarray(values, dtype=np.float32).reshape(num_joints, 3)
    flags = kps[:, 2].astype(np.int64)
    unknown = sorted({int(f) for f in flags if int(f) not in lookup})
    if unknown:
        problems.append(InputProblem(
            f"visibility flags {unknown} are not in the spec's visibility_flags.value", image_id, ann_id))
        return None
    kps[:, 2] = [lookup[int(f)] for f in flags]
    kps[kps[:, 2] == Visibility.NOT_LABELED, :2] = 0.0
    return kps
