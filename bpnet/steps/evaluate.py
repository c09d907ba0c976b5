"""evaluate: COCO keypoint AP/AR of a model on a dataset spec's test_data."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from bpnet.errors import DataError
from bpnet.layout import METRICS_FILE
from bpnet.lock import exclusive
from bpnet.settings import EvaluateSettings
from bpnet.specs import DatasetSpec, InferenceSpec, PathContext
from bpnet.steps._common import output_dir
from bpnet.steps._predictor import open_predictor

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Evaluation:
    results_dir: Path
    metrics_file: Path
    metrics: dict  # metrics.json: the COCO figures, images, detections, errors

    @property
    def scores(self) -> dict[str, float]:
        return {k: v for k, v in self.metrics.items() if isinstance(v, float)}

    @property
    def ap(self) -> float:
        return float(self.metrics["AP"])


def evaluate(spec: InferenceSpec, dataset: DatasetSpec, model: str | Path | None, key: str | None,
             results_dir: str | Path, settings: EvaluateSettings, paths: PathContext | None = None) -> Evaluation:
    """Score the model on ``dataset``'s test split into ``results_dir``; unreadable images are a
    DataError once the metrics of the rest are written."""
    from bpnet import evaluate as coco

    with exclusive(output_dir("results_dir", results_dir), "bpnet evaluate"):
        predictor = open_predictor(spec, model, key, results_dir, paths)
        metrics = coco.evaluate(predictor, dataset, results_dir, settings.num_visualizations)
    result = Evaluation(Path(results_dir), Path(results_dir) / METRICS_FILE, metrics)
    log.info("AP %.4f AP50 %.4f AP75 %.4f APm %.4f APl %.4f AR %.4f -> %s", metrics["AP"], metrics["AP50"],
             metrics["AP75"], metrics["AP_medium"], metrics["AP_large"], metrics["AR"], result.metrics_file)
    if metrics["errors"]:
        raise DataError(f"{len(metrics['errors'])} image(s) could not be read (listed in {result.metrics_file})")
    return result
