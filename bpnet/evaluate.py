"""``bpnet evaluate``: COCO keypoint AP/AR of a model on the dataset spec's test_data.

Predictions (the joints of the model's skeleton) are converted to the dataset's keypoints by name
(derived joints such as the default's neck are dropped) and scored with pycocotools' keypoint
OKS evaluation, with the skeleton's ``oks_sigmas`` as ``kpt_oks_sigmas`` (COCO's for the default
skeleton). Ground truth visibility flags are first mapped through the dataset spec's
``visibility_flags`` to COCO's 0/1/2; the spec's categories are scored as one class.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm

from bpnet.artifacts import atomic_write_text, staged_dir
from bpnet.data.coco import load_coco, visibility_lookup
from bpnet.errors import DataError
from bpnet.infer.predict import Predictor
from bpnet.infer.visualize import write_drawing
from bpnet.layout import ANNOTATED_DIR, METRICS_FILE
from bpnet.pose import Skeleton, Visibility, model_to_dataset_keypoints
from bpnet.preprocess import read_image
from bpnet.specs.dataset import DatasetSpec

log = logging.getLogger(__name__)

METRIC_NAMES = ("AP", "AP50", "AP75", "AP_medium", "AP_large", "AR", "AR50", "AR75", "AR_medium", "AR_large")


def ground_truth(spec: DatasetSpec, skeleton: Skeleton) -> dict:
    """The test split's COCO document with visibility flags in COCO's convention (0/1/2), every
    annotation of the spec's categories under the first one's id (one class), an ``area`` where
    the file has none (the bbox's, as dataset_convert takes it). ``skeleton`` (the model's) must
    predict every keypoint of the dataset and have its OKS sigmas."""
    category = spec.person_category
    model_to_dataset_keypoints(np.zeros((skeleton.num_joints, 3)), spec.keypoint_names, skeleton)
    skeleton.sigmas_for(spec.keypoint_names)
    path = spec.under_root(spec.test_data.annotation_root_dir_path)
    problems = load_coco(path, category, spec.visibility_flags, spec.category_ids).problems  # dataset_convert's
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise DataError(f"{path}: invalid ground truth: {'; '.join(map(str, problems[:3]))}{more}")
    doc = json.loads(path.read_text())
    if not doc.get("images"):
        raise DataError(f"{path}: the test split has no images; there is nothing to evaluate (an AP over no "
                        "image would read as 0.0)")
    lookup = visibility_lookup(spec.visibility_flags)
    for ann in doc.get("annotations", []):
        if ann.get("category_id") in spec.category_ids:
            ann["category_id"] = category.id
        if "area" not in ann and ann.get("bbox"):
            ann["area"] = float(ann["bbox"][2] * ann["bbox"][3])
        ann.setdefault("num_keypoints", 0)
        kps = ann.get("keypoints")
        if kps:
            flags = [int(lookup.get(int(v), Visibility.NOT_LABELED)) for v in kps[2::3]]
            kps[2::3] = flags
            ann["num_keypoints"] = sum(f > 0 for f in flags)
    return doc


def to_coco_keypoints(keypoints: np.ndarray, dataset_names: list[str], skeleton: Skeleton) -> list[float]:
    """J (x, y, score) -> the dataset's K keypoints as COCO's 3K numbers; found keypoints get
    visibility 1, missing 0."""
    out: list[float] = []
    for x, y, score in model_to_dataset_keypoints(keypoints, dataset_names, skeleton):
        out += [round(float(x), 2), round(float(y), 2), 1] if score > 0 else [0.0, 0.0, 0]
    return out


def detect(predictor: Predictor, gt_doc: dict, image_dir: Path, category_id: int, dataset_names: list[str],
           drawings_dir: Path | None = None, num_visualizations: int = 0,
           max_images: int | None = None) -> tuple[list[dict], list[dict]]:
    """(COCO result entries, unreadable images) for the first ``max_images`` images of ``gt_doc``
    (all when None); the first ``num_visualizations`` are drawn into ``drawings_dir``."""
    detections, errors = [], []
    for k, image in enumerate(tqdm(gt_doc["images"][:max_images], desc="evaluate", unit="img", disable=None)):
        try:
            rgb = read_image(image_dir / image["file_name"])
        except ValueError as exc:
            log.error("image %s: %s", image["id"], exc)
            errors.append({"image_id": image["id"], "error": str(exc)})
            continue
        people = predictor(rgb).people
        if drawings_dir is not None and k < num_visualizations:
            write_drawing(rgb, people, drawings_dir / f"{image['id']}.jpg", predictor.skeleton)
        for person in people:
            detections.append({"image_id": image["id"], "category_id": category_id, "score": person.score,
                               "keypoints": to_coco_keypoints(person.keypoints, dataset_names, predictor.skeleton)})
    return detections, errors


def coco_metrics(gt_doc: dict, detections: list[dict], category_id: int, sigmas: np.ndarray,
                 image_ids: list[int] | None = None) -> tuple[dict[str, float], str]:
    """(METRIC_NAMES -> value, pycocotools' printed summary) with per-keypoint OKS ``sigmas`` (in
    the dataset's keypoint order), over ``image_ids`` only if given."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = COCO()
    gt.dataset = gt_doc
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    stats = np.zeros(len(METRIC_NAMES))
    report = ""
    if detections:
        with contextlib.redirect_stdout(io.StringIO()) as captured:
            evaluator = COCOeval(gt, gt.loadRes(detections), "keypoints")
            evaluator.params.catIds = [category_id]
            evaluator.params.kpt_oks_sigmas = np.asarray(sigmas, np.float64)
            if image_ids is not None:
                evaluator.params.imgIds = list(image_ids)
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        stats, report = evaluator.stats, captured.getvalue()
    return {name: round(float(max(v, 0.0)), 5) for name, v in zip(METRIC_NAMES, stats, strict=True)}, report


def evaluate(predictor: Predictor, spec: DatasetSpec, results_dir: str | Path, num_visualizations: int = 0) -> dict:
    """Score the predictor on ``spec``'s test split; write metrics.json, detections_coco.json and,
    for the first ``num_visualizations`` images, drawings in images_annotated/ (for reports: built
    aside and swapped in whole, so a failure half-way leaves the earlier ones)."""
    results = Path(results_dir)
    skeleton = predictor.skeleton
    gt_doc = ground_truth(spec, skeleton)
    image_dir = spec.under_root(spec.test_data.images_root_dir_path)
    with staged_dir(results / ANNOTATED_DIR) if num_visualizations else contextlib.nullcontext() as drawings:
        detections, errors = detect(predictor, gt_doc, image_dir, spec.person_category.id, spec.keypoint_names,
                                    drawings, num_visualizations)
    atomic_write_text(results / "detections_coco.json", json.dumps(detections) + "\n")
    metrics, report = coco_metrics(gt_doc, detections, spec.person_category.id,
                                   skeleton.sigmas_for(spec.keypoint_names))
    for line in report.strip().splitlines():
        log.info("%s", line)
    metrics.update(images=len(gt_doc["images"]), detections=len(detections), errors=errors)
    atomic_write_text(results / METRICS_FILE, json.dumps(metrics, indent=2) + "\n")
    return metrics
