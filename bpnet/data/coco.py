"""Read a COCO person-keypoints file and validate it against the dataset spec.

Every problem is collected with the ids it concerns (image id, annotation id), so a bad dataset
is reported in one pass instead of one crash at a time. Keypoint visibility flags are mapped
from the dataset's convention to BodyPoseNet's (``bpnet.pose.Visibility``) here, once.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bpnet.artifacts import ArtifactError, safe_relpath
from bpnet.pose import VISIBILITY_NAMES, Visibility
from bpnet.preprocess import MIN_IMAGE_SIDE
from bpnet.specs.dataset import CategoryConfig, VisibilityFlagsConfig

# A bbox may overhang the image by this many pixels (rounding in annotation tools) before it is
# reported as outside the image.
BBOX_TOLERANCE_PX = 1.0
MAX_IMAGE_SIDE = 65535  # JPEG's limit; an annotated size beyond it is an error, not a mask to allocate


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


def load_coco(annotation_file: str | Path, category: CategoryConfig, flags: VisibilityFlagsConfig,
              category_ids: set[int] | None = None) -> CocoData:
    """Parse and validate ``annotation_file``; problems are returned, not raised.

    Structure (a top-level object; ``images`` and ``annotations`` lists of objects), types
    (integers where COCO has integers, finite numbers, no strings or booleans for numbers),
    uniqueness of image and annotation ids and the values themselves are checked, each problem
    with the ids (or the list index) it concerns. An image with any problem is reported as such,
    so ``--skip_invalid`` drops it whole rather than keeping some of its people."""
    path = Path(annotation_file)
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        return CocoData([], [InputProblem(f"cannot read annotation file {path}: {exc}")])
    if not isinstance(raw, dict):
        return CocoData([], [InputProblem(
            f"annotation file {path}: the top level is {_kind(raw)}, expected an object with 'images' "
            "and 'annotations' lists")])
    problems: list[InputProblem] = []
    entries = {key: raw.get(key, [] if key == "categories" else None)
               for key in ("images", "annotations", "categories")}
    for key, value in entries.items():
        if not isinstance(value, list):
            problems.append(InputProblem(f"annotation file {path}: '{key}' is {_kind(value)}, expected a list"))
    if problems:
        return CocoData([], problems)
    images: dict[int, ImageEntry] = {}
    for index, img in enumerate(entries["images"]):
        entry = _parse_image(index, img, problems)
        if entry is None:
            continue
        if entry.image_id in images:
            problems.append(InputProblem(f"images[{index}] repeats the image id of an earlier entry "
                                         f"({images[entry.image_id].file_name!r} and {entry.file_name!r})",
                                         image_id=entry.image_id))
            continue
        images[entry.image_id] = entry
    lookup = visibility_lookup(flags)
    ours = category_ids or {category.id}  # converted together as one class (bpnet.specs.dataset)
    known_categories = {c.get("id") for c in entries["categories"] if isinstance(c, dict)} | ours
    problems += _keypoint_names_differ(path, entries["categories"], category)
    if problems:
        return CocoData([], problems)
    seen: dict[int, int | None] = {}  # annotation id -> its image id
    for index, ann in enumerate(entries["annotations"]):
        if not isinstance(ann, dict):
            problems.append(InputProblem(f"annotations[{index}] is {_kind(ann)}, expected an object"))
            continue
        ann_id, image_id = ann.get("id"), ann.get("image_id")
        known = image_id if _is_int(image_id) and image_id in images else None
        if not _is_int(ann_id):
            problems.append(InputProblem(f"annotations[{index}]: id {_show(ann_id)} is not an integer", known))
            continue
        if ann_id in seen:
            problems.append(InputProblem("annotation id is used twice"
                                         + (f" (also on image {seen[ann_id]})" if seen[ann_id] is not None else ""),
                                         known, ann_id))
            if seen[ann_id] is not None:
                problems.append(InputProblem("annotation id is used twice", seen[ann_id], ann_id))
            continue
        seen[ann_id] = known
        person = _parse_annotation(ann, ann_id, images, category, ours, lookup, known_categories, problems)
        if person is not None:
            images[image_id].persons.append(person)
    return CocoData(list(images.values()), problems)


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def _show(value: Any) -> str:
    text = json.dumps(value) if _jsonable(value) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    """A finite JSON number (booleans, strings, NaN, infinities and overflowing integers are not)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def _parse_image(index: int, img: Any, problems: list[InputProblem]) -> ImageEntry | None:
    if not isinstance(img, dict):
        problems.append(InputProblem(f"images[{index}] is {_kind(img)}, expected an object"))
        return None
    image_id = img.get("id")
    if not _is_int(image_id):
        problems.append(InputProblem(f"images[{index}]: id {_show(image_id)} is not an integer"))
        return None
    height, width, file_name = img.get("height"), img.get("width"), img.get("file_name")
    bad = [f"{key} {_show(value)} is not an integer in [{MIN_IMAGE_SIDE}, {MAX_IMAGE_SIDE}]"
           for key, value in (("width", width), ("height", height))
           if not (_is_int(value) and MIN_IMAGE_SIDE <= value <= MAX_IMAGE_SIDE)]
    if not isinstance(file_name, str) or not file_name:
        bad.append(f"file_name {_show(file_name)} is not a non-empty string")
    if bad:
        problems.append(InputProblem("; ".join(bad), image_id=image_id))
        return None
    try:
        file_name = safe_relpath(file_name)  # masks are written by this name: it must stay inside its folder
    except ArtifactError as exc:
        problems.append(InputProblem(f"file_name: {exc}", image_id=image_id))
    return ImageEntry(image_id, file_name, height, width)


def _keypoint_names_differ(path: Path, categories: list, category: CategoryConfig) -> list[InputProblem]:
    """The annotation file's own person category must name the keypoints in the spec's order:
    keypoints are stored by position, so another order (left and right swapped) would convert
    into mirrored labels without a word."""
    own = next((c for c in categories if isinstance(c, dict) and c.get("id") == category.id), None)
    names = own.get("keypoints") if own else None
    if names is None or names == list(category.keypoints):
        return []
    if not isinstance(names, list):
        return [InputProblem(f"annotation file {path}: category {category.id}: keypoints is {_kind(names)}, "
                             "expected a list of names")]
    first = next((i for i, (a, b) in enumerate(zip(names, category.keypoints, strict=False)) if a != b),
                 min(len(names), len(category.keypoints)))
    return [InputProblem(f"annotation file {path}: category {category.id} names its keypoints otherwise than the "
                         f"dataset spec (position {first}: {_show(names[first] if first < len(names) else None)} "
                         f"in the file, {_show(category.keypoints[first] if first < len(category.keypoints) else None)}"
                         " in the spec); the spec's categories must list the file's keypoints in its order")]


def _parse_annotation(ann: dict, ann_id: int, images: dict[int, ImageEntry], category: CategoryConfig,
                      ours: set[int], lookup: dict[int, Visibility], known_categories: set,
                      problems: list[InputProblem]) -> Person | None:
    image_id = ann.get("image_id")
    if not _is_int(image_id) or image_id not in images:
        problems.append(InputProblem(f"refers to unknown image id {_show(image_id)}", annotation_id=ann_id))
        return None
    cat = ann.get("category_id")
    if not _is_int(cat) or cat not in known_categories:
        problems.append(InputProblem(f"refers to unknown category id {_show(cat)}", image_id, ann_id))
        return None
    if cat not in ours:
        return None  # another known category (not one the spec lists): not ours to convert
    image = images[image_id]
    iscrowd = ann.get("iscrowd", 0)
    if iscrowd not in (0, 1) or not isinstance(iscrowd, int):  # bool is an int: true/false are accepted
        problems.append(InputProblem(f"iscrowd {_show(iscrowd)} is not 0 or 1", image_id, ann_id))
        return None
    keypoints = _parse_keypoints(ann, category.num_joints, lookup, bool(iscrowd), image, ann_id, problems)
    if keypoints is None:
        return None
    bbox = ann.get("bbox")
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
        problems.append(InputProblem(f"bbox {_show(bbox)} is not [x, y, w, h] of finite numbers", image_id, ann_id))
        return None
    x, y, w, h = (float(v) for v in bbox)
    tol = BBOX_TOLERANCE_PX
    if w < 0 or h < 0 or x < -tol or y < -tol or x + w > image.width + tol or y + h > image.height + tol:
        problems.append(InputProblem(
            f"bbox {_show(bbox)} lies outside the {image.width}x{image.height} image", image_id, ann_id))
        return None
    area = ann.get("area", w * h)
    if not (_is_number(area) and 0 <= area <= image.width * image.height + 1):
        problems.append(InputProblem(f"area {_show(area)} is not a number in [0, image area]", image_id, ann_id))
        return None
    segmentation = ann.get("segmentation") or []
    why = _segmentation_problem(segmentation, image)
    if why:
        problems.append(InputProblem(f"segmentation {why}", image_id, ann_id))
        return None
    return Person(ann_id, keypoints, (x, y, w, h), float(area), bool(iscrowd), segmentation)


def _segmentation_problem(seg: Any, image: ImageEntry) -> str | None:
    """Why ``seg`` is not a COCO segmentation of ``image`` (polygons or RLE), or None.

    RLE counts are decoded here: pycocotools reads malformed ones out of bounds instead of failing."""
    if isinstance(seg, list):
        for polygon in seg:
            if not (isinstance(polygon, list) and len(polygon) % 2 == 0 and all(_is_number(v) for v in polygon)):
                return f"polygon {_show(polygon)} is not a list of x, y pairs of finite numbers"
        return None
    if not isinstance(seg, dict):
        return f"{_show(seg)} is neither a list of polygons nor an RLE object"
    if seg.get("size") != [image.height, image.width]:
        return f"RLE size {_show(seg.get('size'))} is not the image's [height, width] [{image.height}, {image.width}]"
    counts = seg.get("counts")
    if isinstance(counts, str):
        counts = _rle_string_counts(counts)
    elif not (isinstance(counts, list) and all(_is_int(c) for c in counts)):
        counts = None
    if counts is None or any(c < 0 for c in counts) or sum(counts) != image.height * image.width:
        return f"RLE counts {_show(seg.get('counts'))} do not cover the {image.width}x{image.height} image"
    return None


def _rle_string_counts(text: str) -> list[int] | None:
    """The run lengths of a compressed COCO RLE string (pycocotools' rleFrString), None if malformed."""
    counts: list[int] = []
    pos = 0
    while pos < len(text):
        value, shift, more = 0, 0, True
        while more:
            if pos >= len(text) or not 48 <= ord(text[pos]) < 48 + 64:
                return None
            c = ord(text[pos]) - 48
            value |= (c & 0x1F) << shift
            more = bool(c & 0x20)
            pos += 1
            shift += 5
            if not more and c & 0x10:
                value |= -1 << shift
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts


def _parse_keypoints(ann: dict, num_joints: int, lookup: dict[int, Visibility], iscrowd: bool,
                     image: ImageEntry, ann_id: int, problems: list[InputProblem]) -> np.ndarray | None:
    image_id = image.image_id
    values = ann.get("keypoints")
    if values is None and iscrowd:
        return np.zeros((num_joints, 3), dtype=np.float32)
    if not isinstance(values, list) or len(values) != 3 * num_joints:
        count = len(values) if isinstance(values, list) else "no"
        problems.append(InputProblem(
            f"keypoints has {count} values, expected {3 * num_joints} ({num_joints} joints x 3)", image_id, ann_id))
        return None
    bad = next((i for i, v in enumerate(values) if not _is_number(v)), None)
    if bad is not None:
        problems.append(InputProblem(f"keypoints[{bad}] {_show(values[bad])} is not a finite number", image_id, ann_id))
        return None
    kps = np.asarray(values, dtype=np.float64).reshape(num_joints, 3)
    unknown = sorted({v for v in kps[:, 2].tolist() if v not in lookup})
    if unknown:
        problems.append(InputProblem(
            f"visibility flags {unknown} are not in the spec's visibility_flags.value", image_id, ann_id))
        return None
    labeled = np.array([lookup[int(f)] != Visibility.NOT_LABELED for f in kps[:, 2]])
    # a labeled joint may lie off the picture, but not by more than the picture's own size
    far = labeled & ((np.abs(kps[:, 0] - image.width / 2) > 1.5 * image.width)
                     | (np.abs(kps[:, 1] - image.height / 2) > 1.5 * image.height))
    if far.any():
        joint = int(np.argmax(far))
        problems.append(InputProblem(f"keypoint {joint} at ({kps[joint, 0]:g}, {kps[joint, 1]:g}) lies far outside "
                                     f"the {image.width}x{image.height} image", image_id, ann_id))
        return None
    kps[:, 2] = [lookup[int(f)] for f in kps[:, 2]]
    kps[~labeled, :2] = 0.0
    return kps.astype(np.float32)
