"""A run's parameters from a run spec: the step specs inlined as text, the data version.

Every step spec is loaded and validated here first, so a bad spec stops ``make run`` or
``make pipeline-run`` before anything runs or is uploaded. Inlining (rather than passing paths)
makes a run self-describing: the Kubeflow UI shows, and lets a user edit, the exact specs.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from bpnet.specs import DatasetSpec, InferenceSpec, TrainSpec, default_path_context, load_spec
from bpnet.specs.loader import SpecError
from pipelines.run_spec import RunSpec

log = logging.getLogger(__name__)


def load_run_spec(path: str | Path) -> RunSpec:
    return load_spec(path, RunSpec)


def data_version(spec: RunSpec) -> str:
    """The spec's ``dataset.version``, else a fingerprint of the data's listing (names, sizes, etags),
    else (storage unreachable from here) the current time, which never reuses a cached conversion."""
    if spec.dataset.version:
        return spec.dataset.version
    from bpnet.storage import StorageError, fingerprint

    try:
        return f"fp-{fingerprint(spec.dataset.uri)}"
    except StorageError as exc:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        log.warning("cannot fingerprint %s (%s); data_version=%s, so this run converts afresh",
                    spec.dataset.uri, exc, stamp)
        return f"t-{stamp}"


def pipeline_arguments(spec: RunSpec, version: str | None = None) -> dict[str, Any]:
    """Validated step specs as text plus the data settings: the pipeline's parameters."""
    specs = spec.specs
    ctx = default_path_context(specs.train, path_map=spec.path_map)
    load_spec(specs.dataset, DatasetSpec, default_path_context(specs.dataset, path_map=spec.path_map))
    train = load_spec(specs.train, TrainSpec, ctx)
    load_spec(specs.inference, InferenceSpec, default_path_context(specs.inference, path_map=spec.path_map))
    pose_path = Path(train.dataloader.pose_config.pose_config_path)
    if not pose_path.is_file():
        raise SpecError([f"spec error: {specs.train}: dataloader.pose_config.pose_config_path: {pose_path} — "
                         "an existing file (it is inlined into the run; map absolute prefixes with path_map)"])
    return {
        "dataset_uri": spec.dataset.uri,
        "data_version": version if version is not None else data_version(spec),
        "dataset_spec": Path(specs.dataset).read_text(),
        "train_spec": Path(specs.train).read_text(),
        "pose_config": pose_path.read_text(),
        "inference_spec": Path(specs.inference).read_text(),
        "generate_masks": spec.dataset.generate_masks,
        "num_shards": spec.dataset.num_shards,
        "report_images": spec.report_images,
    }
