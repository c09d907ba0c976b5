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

Any skeleton: ``--annotations FILE --pose_config FILE`` renders another COCO-format file (its
``categories[0]`` keypoints, mapped onto the pose config's joints by name; every category as one
class) through that skeleton's labels and scores it with its ``oks_sigmas`` (goal AP >= 0.95 at
368 on the real samples of tests/data/keypoint_samples/: CrowdPose, OneHand10K, AP-10K).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
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
from bpnet.pose import BPNET_SKELETON, Skeleton, dataset_to_model_keypoints, load_pose_config
from bpnet.specs.train import MODEL_STRIDE as STRIDE

ANNOTATIONS = Path(__file__).resolve().parents[1] / "tests/data/coco_real/person_keypoints_train2017.json"
SIGMA, PAF_BAND, PAF_SIGMA = 7.0, 1.0 * STRIDE, 0.03 * STRIDE  # the guide's label_processor_config


def keypoint_names(doc: dict) -> list[str]:
    """The dataset's keypoint names: its first category's."""
    return list(doc["categories"][0]["keypoints"])


def rendered_maps(doc: dict, image: dict, size: int, noise: np.random.Generator | None = None,
                  skeleton: Skeleton = BPNET_SKELETON):
    """(plan, heatmaps, pafs) of one image's ground truth, as the network would see it at ``size``
    (with ``noise``: a little uniform heatmap and gaussian PAF noise, so peaks are not perfect)."""
    p = plan(image["height"], image["width"], (size, size), "adjust_network_input")
    names = keypoint_names(doc)
    anns = [a for a in doc["annotations"] if a["image_id"] == image["id"] and not a.get("iscrowd")
            and a.get("num_keypoints", 1)]
    kps = np.array([a["keypoints"] for a in anns], np.float32).reshape(-1, len(names), 3)
    kps = dataset_to_model_keypoints(kps, names, skeleton)
    kps[..., :2] = p.to_network(kps[..., :2])
    h, w = p.net_h // STRIDE, p.net_w // STRIDE
    heat = labels.heatmaps(kps, h, w, STRIDE, SIGMA)
    paf = labels.pafs(kps, skeleton, h, w, STRIDE, PAF_BAND, PAF_SIGMA)
    if noise is not None:
        heat = heat + noise.uniform(0, 0.03, heat.shape)
        paf = paf + noise.normal(0, 0.02, paf.shape)
    return p, heat.astype(np.float32), paf.astype(np.float32)


def one_class(doc: dict) -> dict:
    """A copy of ``doc`` with every annotation under the first category's id (AP-10K's species are
    one class here, as in ``bpnet evaluate``) and an ``area`` where it has none (CrowdPose: the
    bbox's, as dataset_convert takes it)."""
    doc = copy.deepcopy(doc)
    category = doc["categories"][0]["id"]
    for ann in doc["annotations"]:
        ann["category_id"] = category
        ann.setdefault("area", float(ann["bbox"][2] * ann["bbox"][3]))
        ann.setdefault("num_keypoints", int(sum(v > 0 for v in ann["keypoints"][2::3])))
    return doc


def round_trip(doc: dict, size: int, params: DecodeParams | None = None, image_ids: list[int] | None = None,
               noise: np.random.Generator | None = None, reps: int = 1,
               skeleton: Skeleton = BPNET_SKELETON) -> tuple[np.ndarray, float, float]:
    """(COCOeval keypoint stats, median and best decode CPU ms/image over ``reps``) of
    rendered-and-decoded ground truth, scored with ``skeleton``'s OKS sigmas."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    params = params or DecodeParams()
    doc = one_class(doc)
    names, category = keypoint_names(doc), doc["categories"][0]["id"]
    images = [im for im in doc["images"] if image_ids is None or im["id"] in image_ids]
    results, seconds = [], np.zeros((reps, len(images)))
    for i, image in enumerate(images):
        p, heat, paf = rendered_maps(doc, image, size, noise, skeleton)
        for r in range(reps):
            t0 = time.process_time()
            people = decode(heat, paf, params, p.net_h, skeleton)
            seconds[r, i] = time.process_time() - t0
        for person in people:
            found = person.keypoints[:, 2] > 0
            person.keypoints[found, :2] = p.to_image(person.keypoints[found, :2])
            results.append({"image_id": image["id"], "category_id": category, "score": person.score,
                            "keypoints": to_coco_keypoints(person.keypoints, names, skeleton)})
    gt = COCO()
    gt.dataset = doc
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        if not results:
            return np.zeros(10), *_ms(seconds)
        evaluator = COCOeval(gt, gt.loadRes(results), "keypoints")
        evaluator.params.imgIds = [im["id"] for im in images]
        evaluator.params.catIds = [category]
        evaluator.params.kpt_oks_sigmas = skeleton.sigmas_for(names)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats, *_ms(seconds)


def _ms(seconds: np.ndarray) -> tuple[float, float]:
    """(median over repetitions of the mean per image, sum of each image's best / images) in ms."""
    if not seconds.size:
        return 0.0, 0.0
    return 1e3 * float(np.median(seconds.mean(axis=1))), 1e3 * float(seconds.min(axis=0).mean())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--annotations", type=Path, default=ANNOTATIONS, help="COCO-format keypoint annotations "
                        "(default: the 30 real COCO images of tests/data/coco_real/)")
    parser.add_argument("--pose_config", type=Path, default=None, help="the pose config its keypoints map onto "
                        "(default: the default 18-joint skeleton)")
    parser.add_argument("--reps", type=int, default=11, help="decode repetitions per image (timing)")
    args = parser.parse_args(argv)
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    doc = json.loads(args.annotations.read_text())
    skeleton = load_pose_config(args.pose_config) if args.pose_config else BPNET_SKELETON
    people = sum(1 for a in one_class(doc)["annotations"] if not a.get("iscrowd") and a["num_keypoints"])
    goals = ((368, 0.85), (128, 0.70)) if args.annotations == ANNOTATIONS else ((368, 0.95), (128, None))
    name = "real COCO" if args.annotations == ANNOTATIONS else f"{args.annotations.name} ('{skeleton.name}', " \
        f"{skeleton.num_joints} joints)"
    for size, goal in goals:
        stats, median, best = round_trip(doc, size, reps=args.reps, skeleton=skeleton)
        goal_text = f"goal AP {goal:.2f}" if goal else "no AP goal"
        print(f"decode {name} ({len(doc['images'])} images, {people} labelled people) at input height {size}: "
              f"AP {stats[0]:.3f} AP50 {stats[1]:.3f} AP75 {stats[2]:.3f} ({goal_text}), "
              f"{median:.2f} ms/image median, {best:.2f} best (goal 3 ms: {median / 3.0:.2f}x)")


if __name__ == "__main__":
    main()
