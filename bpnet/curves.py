"""The learning curve of a training run, so that a user sees learning rather than one number.

Per epoch: the mean training loss. Every ``validation_every_n_epoch`` epochs (every checkpoint
epoch, ``checkpoint_n_epoch``, when the spec leaves it unset; 0: none) and at the last epoch: COCO
keypoint AP of the model as it is, on the first ``VAL_IMAGES`` images of the
dataset spec's test split, at the training input height (``adjust_network_input``, the decoder's
default thresholds). That takes seconds even on a CPU; on so few images it is an estimate of the
trend, not the evaluation step's figure.

The curve is written as TensorBoard scalars (``curve/*``, beside the trainer's per-step losses),
as ``learning_curve.json`` and as ``learning_curve.png`` in the results directory (the pipeline's
evaluation report shows the plot). A resumed run keeps the points of the epochs already done.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from bpnet.artifacts import atomic_write_bytes, atomic_write_text
from bpnet.errors import BpnetError

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

    from bpnet.specs import DatasetSpec
    from bpnet.specs.train import TrainSpec

log = logging.getLogger(__name__)

VAL_IMAGES = 8
CURVE_JSON, CURVE_PNG = "learning_curve.json", "learning_curve.png"


@dataclass
class CurvePoint:
    epoch: int
    step: int
    loss: float  # mean training loss over the epoch
    ap: float | None = None  # on the first VAL_IMAGES val images; None between AP epochs
    ap50: float | None = None
    ap75: float | None = None


class ValScorer:
    """AP of an in-memory model on a few val images (the dataset spec of the train spec)."""

    def __init__(self, train_spec: TrainSpec, dataset_spec: DatasetSpec, max_images: int = VAL_IMAGES):
        from bpnet.evaluate import ground_truth
        from bpnet.specs.inference import InferenceSpec

        self.train_spec, self.dataset_spec = train_spec, dataset_spec
        self.skeleton = train_spec.skeleton
        self.gt = ground_truth(dataset_spec, self.skeleton)
        self.gt["images"] = self.gt["images"][:max_images]
        self.image_dir = dataset_spec.under_root(dataset_spec.test_data.images_root_dir_path)
        dims = train_spec.dataloader.image_config.image_dims
        self.infer = InferenceSpec(input_shape=(dims.height, dims.width), keep_aspect_ratio_mode="adjust_network_input")

    @classmethod
    def from_train_spec(cls, spec: TrainSpec) -> ValScorer | None:
        """None (AP left out of the curve, with a warning) when the spec names no usable test split."""
        from bpnet.specs import DatasetSpec, load_spec

        paths = spec.dataloader.dataset_config.dataset_specs
        path = paths.get("coco") or next(iter(paths.values()))
        try:
            dataset = load_spec(path, DatasetSpec)
            if dataset.test_data is not None:
                return cls(spec, dataset)
            problem: Exception | str = "no test_data"
        except (OSError, ValueError, BpnetError) as exc:  # an unreadable spec or ground truth: no AP, no failure
            problem = exc
        log.warning("learning curve without AP: dataset spec %s: %s", path, problem)
        return None

    def __call__(self, model: keras.Model) -> dict[str, float]:
        from bpnet.evaluate import coco_metrics, detect
        from bpnet.infer.predict import KerasBackend, Predictor

        predictor = Predictor(KerasBackend(model, "the model in training", self.skeleton), self.infer, self.train_spec)
        category, names = self.dataset_spec.person_category.id, self.dataset_spec.keypoint_names
        detections, _ = detect(predictor, self.gt, self.image_dir, category, names)
        metrics, _ = coco_metrics(self.gt, detections, category, self.skeleton.sigmas_for(names),
                                  [i["id"] for i in self.gt["images"]])
        return metrics


def is_ap_epoch(epoch: int, num_epoch: int, checkpoint_n_epoch: int, validation_every_n_epoch: int | None) -> bool:
    """Whether the curve scores AP after ``epoch``. Its AP points are this trainer's validation
    runs, so TAO's ``validation_every_n_epoch`` spaces them. Unset, they follow the checkpoints (a
    point per saved model); 0 leaves only the last epoch's, so that every curve still ends with the
    AP of the model the step outputs."""
    every = checkpoint_n_epoch if validation_every_n_epoch is None else validation_every_n_epoch
    return epoch == num_epoch or (every > 0 and epoch % every == 0)


class LearningCurve:
    def __init__(self, spec: TrainSpec, results_dir: str | Path, start_epoch: int, scorer: ValScorer | None = None):
        self.spec, self.last = spec, spec.num_epoch
        self.results = Path(results_dir)
        self.scorer = scorer
        self.points = [p for p in read_curve(self.results / CURVE_JSON) if p.epoch <= start_epoch]

    def end_epoch(self, model: keras.Model, epoch: int, step: int, mean_loss: float,
                  writer: tf.summary.SummaryWriter) -> CurvePoint:
        """Record one epoch (AP too on AP epochs), log it as scalars and rewrite the files."""
        import tensorflow as tf

        point = CurvePoint(epoch, step, float(mean_loss))
        spec = self.spec
        if self.scorer is not None and is_ap_epoch(epoch, spec.num_epoch, spec.checkpoint_n_epoch,
                                                   spec.validation_every_n_epoch):
            metrics = self.scorer(model)
            point.ap, point.ap50, point.ap75 = metrics["AP"], metrics["AP50"], metrics["AP75"]
            log.info("epoch %d: mean loss %.4g, AP %.3f (AP50 %.3f, AP75 %.3f) on %d val images", epoch,
                     point.loss, point.ap, point.ap50, point.ap75, len(self.scorer.gt["images"]))
        self.points.append(point)
        with writer.as_default(step=step):
            tf.summary.scalar("curve/epoch_loss", point.loss)
            if point.ap is not None:
                tf.summary.scalar("curve/val_AP", point.ap)
                tf.summary.scalar("curve/val_AP50", point.ap50)
                tf.summary.scalar("curve/val_AP75", point.ap75)
        self.write()
        return point

    def write(self) -> None:
        atomic_write_text(self.results / CURVE_JSON, json.dumps([asdict(p) for p in self.points], indent=1) + "\n")
        ok, png = cv2.imencode(".png", plot(self.points, self.last))
        if not ok:
            raise RuntimeError("PNG encoding of the learning curve failed")
        atomic_write_bytes(self.results / CURVE_PNG, png.tobytes())


def read_curve(path: str | Path) -> list[CurvePoint]:
    path = Path(path)
    if not path.is_file():
        return []
    return [CurvePoint(**p) for p in json.loads(path.read_text())]


LOSS_COLOR, AP_COLOR, AP75_COLOR = (180, 90, 20), (40, 40, 200), (20, 150, 230)  # BGR


def plot(points: list[CurvePoint], last_epoch: int, size: tuple[int, int] = (560, 300)) -> np.ndarray:
    """A BGR chart: mean loss per epoch (log scale, left axis) and AP / AP75 (0..1, right axis)."""
    width, height = size
    left, right, top, bottom = 56, 44, 26, 34
    img = np.full((height, width, 3), 255, np.uint8)
    font, small, grey = cv2.FONT_HERSHEY_SIMPLEX, 0.38, (90, 90, 90)
    x0, x1, y0, y1 = left, width - right, top, height - bottom
    cv2.rectangle(img, (x0, y0), (x1, y1), grey, 1)
    epochs = max(last_epoch, max((p.epoch for p in points), default=1), 1)

    def px(epoch: float) -> int:
        return int(round(x0 + (x1 - x0) * epoch / epochs))

    for e in _ticks(epochs):
        cv2.line(img, (px(e), y1), (px(e), y1 + 4), grey, 1)
        cv2.putText(img, str(e), (px(e) - 6, y1 + 16), font, small, grey, 1, cv2.LINE_AA)
    cv2.putText(img, "epoch", ((x0 + x1) // 2 - 18, height - 4), font, small, grey, 1, cv2.LINE_AA)
    for v in (0.0, 0.25, 0.5, 0.75, 1.0):  # right axis: AP
        y = int(round(y1 - (y1 - y0) * v))
        cv2.line(img, (x0, y), (x1, y), (235, 235, 235), 1)
        cv2.putText(img, f"{v:.2f}", (x1 + 4, y + 4), font, small, AP_COLOR, 1, cv2.LINE_AA)
    losses = [p.loss for p in points if p.loss > 0 and math.isfinite(p.loss)]
    if losses:  # left axis: loss, log scale over whole decades
        lo, hi = math.floor(math.log10(min(losses))), math.ceil(math.log10(max(losses)))
        hi = max(hi, lo + 1)

        def py(loss: float) -> int:
            return int(round(y1 - (y1 - y0) * (math.log10(loss) - lo) / (hi - lo)))

        for d in range(lo, hi + 1):
            cv2.putText(img, f"1e{d}", (4, py(10.0**d) + 4), font, small, LOSS_COLOR, 1, cv2.LINE_AA)
        line = np.array([(px(p.epoch), py(p.loss)) for p in points if p.loss > 0 and math.isfinite(p.loss)], np.int32)
        cv2.polylines(img, [line], False, LOSS_COLOR, 2, cv2.LINE_AA)
    for attr, color in (("ap75", AP75_COLOR), ("ap", AP_COLOR)):
        pts = np.array([(px(p.epoch), int(round(y1 - (y1 - y0) * getattr(p, attr)))) for p in points
                        if getattr(p, attr) is not None], np.int32)
        if len(pts):
            cv2.polylines(img, [pts], False, color, 2, cv2.LINE_AA)
            for x, y in pts:
                cv2.circle(img, (int(x), int(y)), 3, color, -1, cv2.LINE_AA)
    legend = (("mean loss", LOSS_COLOR), (f"AP ({VAL_IMAGES} val images)", AP_COLOR), ("AP75", AP75_COLOR))
    x = x0
    for text, color in legend:
        cv2.line(img, (x, 13), (x + 16, 13), color, 2)
        cv2.putText(img, text, (x + 20, 17), font, small + 0.04, color, 1, cv2.LINE_AA)
        x += 30 + 8 * len(text)
    return img


def _ticks(epochs: int) -> list[int]:
    step = next(s for s in (1, 2, 5, 10, 20, 25, 50, 100, 200, 500, 1000, 10**9) if epochs / s <= 10)
    return list(range(0, epochs + 1, step))
