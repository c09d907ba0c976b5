"""A run's parameters from a run spec: the step specs inlined as text, the data version.

Every step spec is loaded and validated here first, so a bad spec stops ``make run`` or
``make pipeline-run`` before anything runs or is uploaded. Inlining (rather than passing paths)
makes a run self-describing: the Kubeflow UI shows, and lets a user edit, the exact specs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from bpnet.overrides import RunOverrides
from bpnet.specs import DatasetSpec, InferenceSpec, TrainSpec, default_path_context, load_spec
from bpnet.specs.loader import SpecError, problem
from components.runtime import SPEC_PARAMETERS, resolve_specs
from pipelines.run_spec import RunSpec


def load_run_spec(path: str | Path) -> RunSpec:
    return load_spec(path, RunSpec)


def pipeline_arguments(spec: RunSpec, overrides: BaseModel | None = None) -> dict[str, Any]:
    """Validated step specs as text plus the data and prune settings and the typed run parameters
    (``overrides``, a ``RunOverrides``; unset by default): the pipeline's parameters.

    ``data_version`` is the spec's ``dataset.version``; empty means "fingerprint the data when the
    run starts" (the pipeline's first step), which is what scheduled runs rely on. The overrides
    are laid over the specs here as the pipeline's first step does, so a bad value stops the
    command before anything is uploaded or run.
    """
    overrides = overrides if overrides is not None else RunOverrides()
    specs = spec.specs

    def check(path: str, model: type) -> Any:
        return load_spec(path, model, default_path_context(path, path_map=spec.path_map))

    check(specs.dataset, DatasetSpec)
    train = check(specs.train, TrainSpec)
    check(specs.retrain, TrainSpec)
    check(specs.inference, InferenceSpec)
    pose_path = Path(specs.pose_config or train.dataloader.pose_config.pose_config_path)
    if not pose_path.is_file():
        where = "specs.pose_config" if specs.pose_config else f"{specs.train}: dataloader.pose_config.pose_config_path"
        raise SpecError([f"spec error: {where}: {pose_path} — "
                         "an existing file (it is inlined into the run; map absolute prefixes with path_map)"])
    arguments = {
        "dataset_uri": spec.dataset.uri,
        "data_version": spec.dataset.version,
        "dataset_spec": Path(specs.dataset).read_text(),
        "train_spec": Path(specs.train).read_text(),
        "pose_config": pose_path.read_text(),
        "retrain_spec": Path(specs.retrain).read_text(),
        "inference_spec": Path(specs.inference).read_text(),
        "prune_settings": spec.prune.model_dump_json(),
        "export_settings": spec.export.model_dump_json(),
        "generate_masks": spec.dataset.generate_masks,
        "num_shards": spec.dataset.num_shards,
        "report_images": spec.report_images,
        **overrides.model_dump(),
    }
    # the step's function without its pod-log wrapper: here the command reports the SpecError itself
    names = [t["name"] for targets in spec.engines.by_pool().values() for t in targets]
    resolve_specs.__wrapped__({name: arguments[name] for name in SPEC_PARAMETERS}, overrides, spec.release.min_ap,
                              names)
    return arguments


def parse_overrides(assignments: list[str]) -> BaseModel:
    """``NAME=VALUE`` items (``--set``) as RunOverrides; a bad name or value is a SpecError naming it."""
    values: dict[str, str] = {}
    for item in assignments:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise SpecError([f"--set {item}: expected NAME=VALUE, NAME one of {', '.join(RunOverrides.model_fields)}"])
        name, value = name.strip(), value.strip()
        if name in values:
            raise SpecError([f"--set {item}: {name} is set twice ({name}={values[name]} first); give it once"])
        values[name] = value
        if unclear := _unclear(name, value):
            raise SpecError([f"--set {item}: {unclear}"])
    try:
        return RunOverrides(**values)
    except ValidationError as exc:
        raise SpecError(["--set {}={} — {}".format(*problem(RunOverrides, e)) for e in exc.errors()]) from None


def _unclear(name: str, value: str) -> str | None:
    """What would be read otherwise than meant: ``5_0`` (Python reads 50), a list of engine targets
    that names none (``,``)."""
    field = RunOverrides.model_fields.get(name)
    if field is not None and field.annotation in (int, float) and "_" in value:
        return f"{value!r} — expected a plain number: '_' is not a digit separator here"
    if name == "engine_targets" and value and not value.replace(",", "").strip():
        return f"{value!r} — names no target; leave it empty to build all of them"
    return None
