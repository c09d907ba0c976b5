"""The predictor evaluate and inference share: inference spec + its train spec + a model."""

from __future__ import annotations

from pathlib import Path

from bpnet.errors import UsageError
from bpnet.layout import INFERENCE_SPEC_FILE
from bpnet.specs import InferenceSpec, PathContext, TrainSpec, load_spec, write_resolved_spec
from bpnet.steps._common import model_key, output_dir


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
    predictor = Predictor(open_backend(model, model_key(key, required=False)), spec, train_spec)
    write_resolved_spec(spec, results / INFERENCE_SPEC_FILE)
    return predictor
