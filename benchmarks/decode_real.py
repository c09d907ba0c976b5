"""The decoder on real crowds: COCO ground truth -> label maps -> decode -> COCO AP, and ms/image.

The 30 real COCO images' annotations (tests/data/coco_real/, up to 11 people per image, people
with one shoulder unlabelled) are rendered with the project's label generator (the guide's m1
label settings) at the geometry the inference preprocessing gives each image
(``keep_aspect_ratio_mode: adjust_network_input``, input height 368 as in the guide, 128 as in the
demo), decoded back and scored with pycocotools. This measures what decoding loses on perfect
maps; people with 1-2 labelled keypoints cannot come back (``min_parts`` is 3), a floor.
Decoding time is everything after the network, as CPU time on one core, best of the repetitions
(robust to other load on the machine). Goals: AP >= 0.85 at 368, >= 0.70 at 128, <= 3 ms/image.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import time
from pathlib import Path

import numpy as np

from bpnet.data import labels
from bpnet.evaluate import to_coco_keypoints
from bpnet.infer.decode import DecodeParams, decode
from bpnet.infer.network_input import plan
from bpnet.pose import BPNET_SKELETON, COCO_KEYPOINTS, dataset_to_model_keypoints
from bpnet.specs.train import MODEL_STRIDE as STRIDE

ANNOTATIONS = Path(__file__).resolve().parents[1] / "tests/data/coco_real/person_keypoints_train2017.json"
SIGMA, PAF_BAND, PAF_SIGMA = 7.0, 1.0 * STRIDE, 0.03 * STRIDE  # the guide's label_processor_config


def rendered_maps(doc: dict, image: dict, size: int, noise: np.random.Generator | None = None):
    """(plan, heatmaps, pafs) of one image's ground truth, as the network would see it at ``size``
    (with ``noise``: a little uniform heatmap and gaussian PAF noise, so peaks are not perfect)."""
    p = plan(image["height"], image["width"], (size, size), "adjust_network_input")
    anns = [a for a in doc["annotations"] if a["image_id"] == image["id"] and not a["iscrowd"] and a["num_keypoints"]]
    kps = dataset_to_model_keypoints(np.array([a["keypoints"] for a in anns], np.float32).reshape(-1, 17, 3),
                                     COCO_KEYPOINTS)
    kps[..., :2] = p.to_network(kps[..., :2])
    h, w = p.net_h // STRIDE, p.net_w // STRIDE
    heat = labels.heatmaps(kps, h, w, STRIDE, SIGMA)
    paf = labels.pafs(kps, BPNET_SKELETON, h, w, STRIDE, PAF_BAND, PAF_SIGMA)
    if noise is not None:
        heat = heat + noise.uniform(0, 0.03, heat.shape)
        paf = paf + noise.normal(0, 0.02, paf.shape)
    return p, heat.astype(np.float32), paf.astype(np.float32)


def round_trip(doc: dict, size: int, params: DecodeParams | None = None, image_ids: list[int] | None = None,
               noise: np.random.Generator | None = None, reps: int = 1) -> tuple[np.ndarray, float]:
    """(COCOeval keypoint stats, mean decode CPU ms/image, best of ``reps``) of rendered-and-decoded
    ground truth."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    params = params or DecodeParams()
    images = [im for im in doc["images"] if image_ids is None or im["id"] in image_ids]
    results, seconds = [], 0.0
    for image in images:
        p, heat, paf = rendered_maps(doc, image, size, noise)
        best = np.inf
        for _ in range(reps):
            t0 = time.process_time()
            people = decode(heat, paf, params, p.net_h)
            best = min(best, time.process_time() - t0)
        seconds += best
        for person in people:
            found = person.keypoints[:, 2] > 0
            person.keypoints[found, :2] = p.to_image(person.keypoints[found, :2])
            results.append({"image_id": image["id"], "category_id": 1, "score": person.score,
                            "keypoints": to_coco_keypoints(person.keypoints)})
    gt = COCO()
    gt.dataset = doc
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        if not results:
            return np.zeros(10), 1e3 * seconds / max(len(images), 1)
        evaluator = COCOeval(gt, gt.loadRes(results), "keypoints")
        evaluator.params.imgIds = [im["id"] for im in images]
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats, 1e3 * seconds / len(images)


def main(reps: int = 5) -> None:
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    doc = json.loads(ANNOTATIONS.read_text())
    people = sum(1 for a in doc["annotations"] if not a["iscrowd"] and a["num_keypoints"])
    for size, goal in ((368, 0.85), (128, 0.70)):
        stats, ms = round_trip(doc, size, reps=reps)  # best of reps: least disturbed by other load
        print(f"decode real COCO ({len(doc['images'])} images, {people} labelled people) at input height {size}: "
              f"AP {stats[0]:.3f} AP50 {stats[1]:.3f} AP75 {stats[2]:.3f} (goal AP {goal:.2f}), "
              f"{ms:.2f} ms/image (goal 3 ms: {ms / 3.0:.2f}x)")


if __name__ == "__main__":
    main()
