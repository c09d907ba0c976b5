"""inference: detect people in images; detection.json (+ drawings) in a results folder."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from bpnet.errors import DataError
from bpnet.layout import DETECTIONS_FILE
from bpnet.lock import exclusive
from bpnet.settings import InferenceSettings
from bpnet.specs import InferenceSpec, PathContext
from bpnet.steps._common import output_dir
from bpnet.steps._predictor import open_predictor

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Detections:
    results_dir: Path
    detections_file: Path
    images: int
    people: int
    unreadable: int


def inference(spec: InferenceSpec, source: str | Path, model: str | Path | None, key: str | None,
              results_dir: str | Path, settings: InferenceSettings, image_root: str | Path | None = None,
              paths: PathContext | None = None) -> Detections:
    """Run on ``source`` (an image, a folder or a COCO-style JSON, as ``settings.input_type``
    says); unreadable images are a DataError once detection.json lists them under 'errors'."""
    from bpnet.infer.run import list_inputs, run_inference

    with exclusive(output_dir("results_dir", results_dir), "bpnet inference"):
        predictor = open_predictor(spec, model, key, results_dir, paths)
        report = run_inference(predictor, list_inputs(settings.input_type, source, image_root), results_dir,
                               settings.dump_visualizations)
    result = Detections(Path(results_dir), Path(results_dir) / DETECTIONS_FILE, report.images, report.people,
                        len(report.errors))
    log.info("%d images, %d people -> %s", result.images, result.people, result.detections_file)
    if report.errors:
        raise DataError(f"{len(report.errors)} image(s) could not be read (listed in {result.detections_file} "
                        "under 'errors')")
    return result
