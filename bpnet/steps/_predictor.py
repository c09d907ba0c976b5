"""The predictor evaluate and inference share: inference spec + its train spec + a model."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from bpnet.errors import ModelError, UsageError
from bpnet.layout import EXPORT_SETTINGS_FILE, EXPORTED_MODE, INFERENCE_SPEC_FILE
from bpnet.specs import InferenceSpec, PathContext, TrainSpec, load_spec, write_resolved_spec
from bpnet.steps._common import model_key, output_dir

log = logging.getLogger(__name__)


def as_exported(spec: InferenceSpec, model: str | Path) -> InferenceSpec:
    """How an exported model is fed is its export's: the input shape and padding mode its
    ``export.json`` records (beside the model file) replace the spec's, at one scale and the stage
    the model carries; every other field is the spec's. Without ``export.json`` the spec applies
    as written (and is checked against the model)."""
    record = Path(model).with_name(EXPORT_SETTINGS_FILE)
    if not record.is_file():
        return spec
    try:
        fed = json.loads(record.read_text())
        update = {"input_shape": tuple(fed["input_shape"]), "keep_aspect_ratio_mode": fed["keep_aspect_ratio_mode"]}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"{record}: not an export record ({exc!r}); export the model again, which writes it") from None
    if any(getattr(spec, k) != v for k, v in update.items()) or spec.multi_scale_inference:
        log.info("exported model: fed as %s records (%s), not as the inference spec says", record,
                 ", ".join(f"{k} {v}" for k, v in update.items()))
    return fed_as_exported(spec, update["input_shape"], update["keep_aspect_ratio_mode"], output_stage_to_use=None)


def fed_as_exported(spec: InferenceSpec, input_shape: tuple[int, int], mode: str | None = EXPORTED_MODE,
                    **other: object) -> InferenceSpec:
    """``spec`` at an export's input mode: its input size and aspect-ratio mode, at one scale (an
    exported model fixes its input size); ``other`` fields replaced too. The pipeline evaluates the
    Keras model so as well, to compare it like with like with the exported ones."""
    return InferenceSpec.model_validate({**spec.model_dump(), "input_shape": tuple(input_shape),
                                         "keep_aspect_ratio_mode": mode, "multi_scale_inference": False, **other})


def open_predictor(spec: InferenceSpec, model: str | Path | None, key: str | None, results_dir: str | Path,
                   paths: PathContext | None = None):
    """A Predictor for ``model`` (else the spec's model_path); the spec's train spec gives the
    normalization (the data it names need not be here). The resolved inference spec is written
    into ``results_dir``, so the results say how they were made."""
    from bpnet.infer.predict import Predictor, open_backend

    train_spec = None
    if spec.train_spec:
        if not Path(spec.train_spec).is_file():
            raise UsageError(f"{spec.train_spec} — not found (fix the path or use --path_map)", field="train_spec")
        train_spec = load_spec(spec.train_spec, TrainSpec, paths)
    results = output_dir("results_dir", results_dir)
    model = model or spec.model_path
    if not model:
        raise UsageError("missing — and the inference spec has no model_path", field="model_filename")
    backend = open_backend(model, model_key(key, required=False))
    if backend.export_info is not None:
        spec = as_exported(spec, model)
    predictor = Predictor(backend, spec, train_spec)
    write_resolved_spec(spec, results / INFERENCE_SPEC_FILE)
    return predictor
