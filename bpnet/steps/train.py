"""train: train (or retrain, or resume) a BodyPoseNet model into a results folder."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from bpnet.layout import TRAIN_SUMMARY_FILE
from bpnet.lock import exclusive
from bpnet.settings import TrainSettings
from bpnet.specs import TrainSpec
from bpnet.steps._common import model_key, output_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Trained:
    results_dir: Path
    model: Path
    summary_file: Path
    epochs: int
    steps: int
    parameters: int
    gflops_per_image: float
    images_per_second: float | None
    first_loss: float | None
    last_loss: float | None


@dataclass(frozen=True)
class LabelSamples:
    files: tuple[Path, ...]


def train(spec: TrainSpec, results_dir: str | Path, key: str | None, settings: TrainSettings) -> Trained:
    """Train as the spec says; re-running into the same folder resumes from its latest checkpoint."""
    key = model_key(key)
    results = output_dir("results_dir", results_dir)
    from bpnet import train as trainer

    with exclusive(results, "bpnet train"):
        try:
            r = trainer.train(spec, results, key, gpus=settings.gpus, gpu_index=settings.gpu_index)
        except BaseException:
            _remove_partial_checkpoints(results)
            raise
    return Trained(results, Path(r.model_path), results / TRAIN_SUMMARY_FILE, r.epochs, r.steps, r.parameters,
                   r.gflops_per_image, r.images_per_second, r.first_loss, r.last_loss)


def _remove_partial_checkpoints(results: Path) -> None:
    """TensorFlow writes a checkpoint into ``ckpt-N_temp`` and renames it when complete: one left
    by a failed write (a full disk, Ctrl-C) is removed (resuming never reads it)."""
    import shutil

    for partial in (results / "checkpoints").glob("*_temp*"):
        log.warning("removing the partial checkpoint %s", partial)
        if partial.is_dir():
            shutil.rmtree(partial, ignore_errors=True)
        else:
            partial.unlink(missing_ok=True)


def dump_samples(spec: TrainSpec, results_dir: str | Path, settings: TrainSettings) -> LabelSamples:
    """``settings.dump_samples`` training samples with their labels drawn on them (no training)."""
    from bpnet.data.label_viz import dump_samples as draw

    results = output_dir("results_dir", results_dir)
    with exclusive(results, "bpnet train --dump_samples"):
        return LabelSamples(tuple(draw(spec, results, settings.dump_samples)))
