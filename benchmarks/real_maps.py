"""What a trained model's maps say about real photos it was trained on, beyond AP.

AP needs every part right at once; these figures (from each photo's maps, predicted once:
``labelled_photos``) say which part is wrong when it is low.
Shared by ``overfit_real.py`` (printed) and tests/test_real_training.py (asserted):

- ``joint_distances``: how far (photo pixels) each labelled joint is from the nearest heatmap
  peak of that joint: are the joints found, and how precisely (the OKS of a 350 px tall person
  needs the face points within about 10 px);
- ``paf_response``: the PAF the model predicts along each labelled limb, against its label, per
  sign of the label's component: are the limbs there for the decoder to join, whichever way they
  point (TAO's focal L2 leaves the negative components unlearned: docs/real_training.md);
- ``training_view_ap``: AP on the picture the training warp makes of each photo (its augmentation
  with no random draw) against AP on inference's resize of it: a network that memorised the
  training warp's pixel grid scores high on the first and low on the second (section 7).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from bpnet.data import augment
from bpnet.evaluate import coco_metrics, detect, ground_truth, to_coco_keypoints
from bpnet.infer.decode import DecodeParams, decode, find_peaks
from bpnet.infer.network_input import InputPlan, to_network_input
from bpnet.infer.predict import Predictor
from bpnet.pose import Skeleton, dataset_to_model_keypoints
from bpnet.preprocess import read_image
from bpnet.specs import DatasetSpec, TrainSpec

ANNOTATIONS = "annotations/person_keypoints_train2017.json"  # real_subset's COCO layout
LIMB_POINTS = 9  # samples along a limb, its ends left out (a joint's own PAF is ambiguous)
STRONG = 0.5  # a label component counts for its sign when its magnitude exceeds this


@dataclass(frozen=True)
class LabelledPhoto:
    """One photo's predicted maps (computed once: every figure reads them) and its labels."""

    heat: np.ndarray  # stride-8 heatmaps, network-input grid
    paf: np.ndarray
    plan: InputPlan  # photo <-> network input
    people: list[np.ndarray]  # each labelled person's keypoints (photo pixels), the model's joint order


def labelled_photos(root: Path, predictor: Predictor) -> dict[int, LabelledPhoto]:
    """Per image id of the COCO folder ``root``: the model's maps of the photo and its labels."""
    doc = json.loads((root / ANNOTATIONS).read_text())
    names = doc["categories"][0]["keypoints"]
    people: dict[int, list[np.ndarray]] = {im["id"]: [] for im in doc["images"]}
    for ann in doc["annotations"]:
        if ann.get("num_keypoints") and ann["image_id"] in people:
            kps = np.array(ann["keypoints"], np.float32).reshape(1, -1, 3)
            people[ann["image_id"]].append(dataset_to_model_keypoints(kps, names, predictor.skeleton)[0])
    return {im["id"]: LabelledPhoto(*predictor.maps(read_image(root / "train2017" / im["file_name"])),
                                    people[im["id"]]) for im in doc["images"]}


def joint_distances(photo: LabelledPhoto, heatmap_threshold: float) -> np.ndarray:
    """Per labelled joint: photo pixels to the nearest heatmap peak of that joint (inf: none)."""
    peaks = find_peaks(photo.heat, DecodeParams(heatmap_threshold=heatmap_threshold))
    located = photo.plan.to_image(peaks.located)
    distances = []
    for label in photo.people:
        for joint in np.flatnonzero(label[:, 2] > 0):
            mine = located[peaks.joint == joint]
            distances.append(np.hypot(*(mine - label[joint, :2]).T).min() if len(mine) else np.inf)
    return np.array(distances)


def paf_response(photo: LabelledPhoto, skeleton: Skeleton) -> list[tuple[float, float]]:
    """(label component, mean predicted component) along every labelled limb, x and y, sampled on
    the 8x upsampled PAFs in network-input coordinates (the grid the decoder scores limbs on)."""
    fine = cv2.resize(photo.paf, None, fx=8, fy=8, interpolation=cv2.INTER_CUBIC)
    pairs = []
    for label in photo.people:
        net = photo.plan.to_network(label[:, :2])
        for limb, (a, b) in enumerate(skeleton.limbs):
            if label[a, 2] <= 0 or label[b, 2] <= 0:
                continue
            direction = net[b] - net[a]
            length = float(np.hypot(*direction))
            if length < 2:
                continue
            points = net[a] + np.linspace(0.1, 0.9, LIMB_POINTS)[:, None] * direction
            cols = np.clip(np.round(points[:, 0]).astype(int), 0, fine.shape[1] - 1)
            rows = np.clip(np.round(points[:, 1]).astype(int), 0, fine.shape[0] - 1)
            predicted = fine[rows, cols][:, [2 * limb, 2 * limb + 1]].mean(axis=0)
            pairs += [(direction[0] / length, float(predicted[0])), (direction[1] / length, float(predicted[1]))]
    return pairs


def learned_by_sign(pairs: list[tuple[float, float]]) -> dict[str, float]:
    """Mean predicted/label ratio of the strong components, split by the label's sign (1: learned)."""
    out = {}
    for sign, name in ((1, "positive"), (-1, "negative")):
        ratios = [p / lab for lab, p in pairs if sign * lab > STRONG]
        out[name] = float(np.mean(ratios)) if ratios else float("nan")
    return out


def training_view_ap(predictor: Predictor, train_spec: TrainSpec, dataset: DatasetSpec) -> dict[str, float]:
    """AP of the photos seen as inference sees them (``inference``: ``bpnet evaluate``'s detection)
    and as the training warp makes them with no random draw (``training``: ``cv2.warpAffine`` of
    the augmentation's transform, keypoints mapped back through its inverse). The warp reads the
    full-size photo: the loader's reduced JPEG decode only applies to samples at scale <= 0.5,
    which the whole-photo geometry of a 640x480 photo (0.53) is not."""
    gt = ground_truth(dataset, predictor.skeleton)
    folder = dataset.under_root(dataset.test_data.images_root_dir_path)
    category, names = dataset.person_category.id, dataset.keypoint_names
    aug = train_spec.dataloader.augmentation_config
    dims = train_spec.dataloader.image_config.image_dims
    as_is = InputPlan(dims.height, dims.width, dims.height, dims.width, dims.height, dims.width)
    warped_found = []
    for image in gt["images"]:
        rgb = read_image(folder / image["file_name"])
        m, _ = augment.transform(aug.spatial_aug_params, aug.spatial_augmentation_mode, dims.height, dims.width,
                                 rgb.shape[0], rgb.shape[1], None, None)
        warped = cv2.warpAffine(rgb, m[:2], (dims.width, dims.height), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        heats, pafs = predictor.backend.predict(
            to_network_input(warped, as_is, predictor.norm.image_scale, predictor.norm.image_offset)[None])
        for person in decode(heats[predictor.stage][0], pafs[predictor.stage][0], predictor.params, dims.height,
                             predictor.skeleton):
            seen = person.keypoints[:, 2] > 0
            person.keypoints[seen, :2] = augment.apply_to_points(np.linalg.inv(m), person.keypoints[seen, :2])
            warped_found.append({"image_id": image["id"], "category_id": category, "score": person.score,
                                 "keypoints": to_coco_keypoints(person.keypoints, names, predictor.skeleton)})
    views = {"inference": detect(predictor, gt, folder, category, names)[0], "training": warped_found}
    sigmas = predictor.skeleton.sigmas_for(names)
    return {view: coco_metrics(gt, found, category, sigmas)[0]["AP"] for view, found in views.items()}
