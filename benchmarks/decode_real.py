"""The decoder on real crowds: COCO ground truth -> label maps -> decode -> COCO AP, and ms/image.

The 30 real COCO images' annotations (tests/data/coco_real/, up to 11 people per image, people
with one shoulder unlabelled) are rendered with the project's label generator (the guide's m1
label settings) at the geometry the inference preprocessing gives each image
(``keep_aspect_ratio_mode: adjust_network_input``, input height 368 as in the guide, 128 as in the
demo), decoded back and scored with pycocotools. This measures what decoding loses on perfect
maps; people with 1-2 labelled keypoints cannot come back (``min_parts`` is 3), a floor.
Decoding time is everything after the network, as CPU time on one core: the median over the
repetitions of the mean per image, and the best (each image's fastest repetition; the least
disturbed by other load on the machine). Goals: AP >= 0.85 at 368, >= 0.70 at 128, <= 3 ms/image.
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
               noise: np.random.Generator | None = None, reps: int = 1) -> tuple[np.ndarray, float, float]:
    """(COCOeval keypoint stats, median and best decode CPU ms/image over ``reps``) of
    rendered-and-decoded ground truth."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    params = params or DecodeParams()
    images = [im for im in doc["images"] if image_ids is None or im["id"] in image_ids]
    results, seconds = [], np.zeros((reps, len(images)))
    for i, image in enumerate(images):
        p, heat, paf = rendered_maps(doc, image, size, noise)
        for r in range(reps):
            t0 = time.process_time()
            people = decode(heat, paf, params, p.net_h)
            seconds[r, i] = time.process_time() - t0
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
            return np.zeros(10), *_ms(seconds)
        evaluator = COCOeval(gt, gt.loadRes(results), "keypoints")
        evaluator.params.imgIds = [im["id"] for im in images]
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats, *_ms(seconds)


def _ms(seconds: np.ndarray) -> tuple[float, float]:
    """(median over repetitions of the mean per image, sum of each image's best / images) in ms."""
    if not seconds.size:
        return 0.0, 0.0
    return 1e3 * float(np.median(seconds.mean(axis=1))), 1e3 * float(seconds.min(axis=0).mean())


def main(reps: int = 11) -> None:
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    doc = json.loads(ANNOTATIONS.read_text())
    people = sum(1 for a in doc["annotations"] if not a["iscrowd"] and a["num_keypoints"])
    for size, goal in ((368, 0.85), (128, 0.70)):
        stats, median, best = round_trip(doc, size, reps=reps)
        print(f"decode real COCO ({len(doc['images'])} images, {people} labelled people) at input height {size}: "
              f"AP {stats[0]:.3f} AP50 {stats[1]:.3f} AP75 {stats[2]:.3f} (goal AP {goal:.2f}), "
              f"{median:.2f} ms/image median, {best:.2f} best (goal 3 ms: {median / 3.0:.2f}x)")


if __name__ == "__main__":
    main()
