"""``bpnet inference``: images in, ``detection.json`` (and skeleton drawings) out.

detection.json::

    {"format": "bpnet-detections/1",
     "keypoint_names": [the model skeleton's J joint names, heatmap channel order],
     "images": [{"image": "<path as given>", "image_id": <COCO id or null>, "width": W, "height": H,
                 "annotated": "images_annotated/<name>.jpg" (with --dump_visualizations),
                 "people": [{"score": s, "num_parts": n,
                             "keypoints": [[x, y, score], ... J]}]}],
     "errors": [{"image": "<path>", "error": "<why>"}]}

Coordinates are pixels of the original image; a keypoint that was not found is [0, 0, 0].
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from tqdm import tqdm

from bpnet.artifacts import atomic_write_text, staged_dir
from bpnet.errors import DataError
from bpnet.infer.predict import Predictor
from bpnet.infer.visualize import write_drawing
from bpnet.layout import ANNOTATED_DIR, DETECTIONS_FILE
from bpnet.preprocess import IMAGE_SUFFIXES, read_image

log = logging.getLogger(__name__)

FORMAT = "bpnet-detections/1"


@dataclass
class InferenceInput:
    path: Path
    image_id: int | None = None


@dataclass
class InferenceReport:
    images: int = 0
    people: int = 0
    errors: list[dict] = field(default_factory=list)


def list_inputs(kind: Literal["image", "dir", "json"], source: str | Path,
                image_root: str | Path | None = None) -> list[InferenceInput]:
    """The images to run on; ``json`` takes a COCO-style file (its ``images`` list)."""
    source = Path(source)
    if kind == "image":
        return [InferenceInput(source)]
    if kind == "dir":
        if not source.is_dir():
            raise DataError(f"--input {source}: not a directory")
        found = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise DataError(f"--input {source}: no images ({', '.join(IMAGE_SUFFIXES)}) in the directory")
        return [InferenceInput(p) for p in found]
    try:
        doc = json.loads(source.read_text())
        entries = doc["images"] if isinstance(doc, dict) else doc
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"--input {source}: not a COCO-style JSON with an 'images' list ({exc})") from exc
    if not isinstance(entries, list):
        raise DataError(f"--input {source}: 'images' is not a list")
    root = Path(image_root) if image_root else source.parent
    inputs = []
    for index, entry in enumerate(entries):
        name = entry.get("file_name") or entry.get("full_image_path") if isinstance(entry, dict) else entry
        image_id = entry.get("id") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not name:
            raise DataError(f"--input {source}: images[{index}] has no file_name string: {str(entry)[:80]}")
        if image_id is not None and (not isinstance(image_id, int) or isinstance(image_id, bool)):
            raise DataError(f"--input {source}: images[{index}] has a non-integer id {str(image_id)[:40]}")
        path = Path(os.path.normpath(root / name))
        if os.path.commonpath([path, os.path.normpath(root)]) != os.path.normpath(root):
            raise DataError(f"--input {source}: images[{index}] {name!r:.80} lies outside the image root {root} "
                            "(--image_root_path, else the JSON's folder); images are only read under it")
        inputs.append(InferenceInput(path, image_id))
    if not inputs:
        raise DataError(f"--input {source}: the file lists no images")
    return inputs


def run_inference(predictor: Predictor, inputs: list[InferenceInput], results_dir: str | Path,
                  dump_visualizations: bool = False) -> InferenceReport:
    results = Path(results_dir)
    with staged_dir(results / ANNOTATED_DIR) if dump_visualizations else contextlib.nullcontext() as drawings:
        report, images = _detect(predictor, inputs, drawings)
    doc = {"format": FORMAT, "keypoint_names": list(predictor.skeleton.joints), "images": images,
           "errors": report.errors}
    atomic_write_text(results / DETECTIONS_FILE, json.dumps(doc) + "\n")
    return report


def _detect(predictor: Predictor, inputs: list[InferenceInput], drawings: Path | None
            ) -> tuple[InferenceReport, list[dict]]:
    """The report and detection.json's images; each drawn into ``drawings`` unless it is None."""
    report = InferenceReport()
    images = []
    drawn: set[str] = set()
    for index, item in enumerate(tqdm(inputs, desc="inference", unit="img", disable=None)):
        try:
            rgb = read_image(item.path)
        except ValueError as exc:
            log.error("%s", exc)
            report.errors.append({"image": str(item.path), "error": str(exc)})
            continue
        prediction = predictor(rgb)
        report.images += 1
        report.people += len(prediction.people)
        images.append({
            "image": str(item.path), "image_id": item.image_id, "width": rgb.shape[1], "height": rgb.shape[0],
            "people": [{"score": round(p.score, 5), "num_parts": p.num_parts,
                        "keypoints": [[round(float(x), 2), round(float(y), 2), round(float(s), 5)]
                                      for x, y, s in p.keypoints]} for p in prediction.people]})
        if drawings is not None:
            name = item.path.stem if item.path.stem not in drawn else f"{item.path.stem}_{index}"  # a.jpg, a.png
            drawn.add(name)
            images[-1]["annotated"] = f"{ANNOTATED_DIR}/{name}.jpg"
            write_drawing(rgb, prediction.people, drawings / f"{name}.jpg", predictor.skeleton)
    return report, images
