"""What the components do when they run: KFP artifacts and parameters -> typed ``bpnet`` calls.

A component body is one call into this module, which parses the step's payload once (its settings
model or its spec, as JSON), hands the step the artifact folders (``bpnet.folders`` binds specs to
them and says what a step copies along), calls the step function the ``bpnet`` command calls too
(``bpnet.steps``) and returns the step's typed result as the figures that become artifact
metadata. There is no policy here: a failing step logs its user-facing message (and the traceback
when it is a bug), so the pod log says what went wrong.

Artifact layouts (the contract between steps) are ``bpnet.layout``'s.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from pydantic import BaseModel

from bpnet import folders
from bpnet.artifacts import atomic_write_text
from bpnet.errors import BpnetError
from bpnet.layout import DATASET_SPEC, ENGINE_SUFFIX, MODEL_FILE, engine_sources
from bpnet.overrides import RunOverrides, lay_over, resolve, set_values
from bpnet.release import RELEASE_INT8_VERDICT
from bpnet.settings import (
    ConvertSettings,
    EngineTarget,
    EvaluateSettings,
    ExportCalibrationSettings,
    InferenceSettings,
    PruneSettings,
    ReleaseServing,
    TrainSettings,
    build,
    from_json,
)
from bpnet.specs import DatasetSpec, InferenceSpec, default_path_context, load_spec
from bpnet.specs.loader import spec_mapping

log = logging.getLogger("bpnet.components")
P = ParamSpec("P")
R = TypeVar("R")
M = TypeVar("M", bound=BaseModel)


def logs_failure(step: Callable[P, R]) -> Callable[P, R]:
    """Log why ``step`` failed before KFP marks the pod failed: a BpnetError's message as the user
    reads it, anything else (a bug) with its traceback."""
    @functools.wraps(step)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return step(*args, **kwargs)
        except BpnetError as exc:
            log.error("%s failed: %s", step.__name__, exc)
            raise
        except OSError:
            log.exception("%s failed (an I/O error: storage, disk or a missing file)", step.__name__)
            raise
        except Exception:
            log.exception("%s failed (a bug, not a data or settings problem)", step.__name__)
            raise
    return run


@contextmanager
def timed(metadata: dict[str, Any]) -> Iterator[None]:
    """Record the wall time of the block as ``metadata['seconds']`` (shown in the UI and the summary)."""
    start = time.perf_counter()
    yield
    metadata["seconds"] = round(time.perf_counter() - start, 1)


SPEC_PARAMETERS = {"train_spec": "train", "retrain_spec": "retrain", "inference_spec": "inference",
                   "prune_settings": "prune", "export_settings": "export"}
"""The pipeline parameters holding whole specs, and their roles in ``bpnet.overrides``."""


@logs_failure
def resolve_specs(texts: dict[str, str], overrides: RunOverrides, min_ap: float, targets: list[str]
                  ) -> tuple[str, float, list[str]]:
    """Every spec parameter (``SPEC_PARAMETERS``: YAML/JSON text) checked with the typed run
    parameters laid over it (``bpnet.overrides``), before any work; returns the set parameters as
    the JSON every later step lays over its own spec, the gate's minimum and the names of the
    engine targets to build."""
    parsed = {role: spec_mapping(texts[name], name) for name, role in SPEC_PARAMETERS.items()}
    resolved = resolve(parsed, overrides, min_ap, targets)
    for name, value in set_values(overrides).items():
        log.info("run parameter %s = %s (overrides the spec)", name, value)
    return overrides.model_dump_json(exclude_defaults=True), resolved.min_ap, list(resolved.targets)


def spec_for(role: str, text: str, overrides: str, name: str) -> dict[str, Any]:
    """A step's spec: the spec parameter (its text as the run holds it) with the run parameters
    that land in it (``overrides``: resolve_specs' JSON) laid over (``bpnet.overrides.lay_over``)."""
    return lay_over(role, spec_mapping(text, name), RunOverrides.model_validate_json(overrides))


def settings_for(model: type[M], role: str, text: str, overrides: str, name: str) -> M:
    """A step's settings (``model``) from its settings parameter with the run parameters laid over."""
    return build(model, **spec_for(role, text, overrides, name))


def data_version(dataset_uri: str, requested: str) -> str:
    from bpnet.storage import open_store

    version = requested.strip() or f"fp-{open_store(dataset_uri).fingerprint()}"
    log.info("data version of %s: %s", dataset_uri, version)
    return version


@logs_failure
def dataset_convert(dataset_uri: str, dataset_spec: str, train_dir: str, val_dir: str, generate_masks: bool,
                    num_shards: int) -> dict[str, Any]:
    """Both splits of the raw dataset converted, each into its own Dataset artifact."""
    settings = build(ConvertSettings, generate_masks=generate_masks, num_shards=num_shards)
    return folders.convert_to_split_folders(dataset_uri, spec_mapping(dataset_spec, "dataset_spec"),
                                            {"train": Path(train_dir), "val": Path(val_dir)}, settings)


@logs_failure
def train(dataset_dir: str, train_spec: str, pose_config: str, model_dir: str, gpus: int,
          pretrained_dir: str | None = None, warm_start: str = "", val_dir: str | None = None,
          overrides: str = "{}", role: str = "train", own_shards: bool = False) -> dict[str, Any]:
    """``bpnet train`` into the Model artifact folder, from where ``bpnet.folders.train_spec_for``
    says. ``gpus`` is the pod's GPU request; none (0) trains on the CPU, one device.
    ``own_shards``: a worker of several whose Dataset folder holds only its own shards."""
    from bpnet.steps.train import train as train_step

    with folders.workdir() as work:
        spec, release = folders.train_spec_for(spec_for(role, train_spec, overrides, f"{role}_spec"), pose_config,
                                               dataset_dir, model_dir, work, pretrained_dir, warm_start, val_dir,
                                               own_shards)
        trained = train_step(spec, model_dir, None, TrainSettings(gpus=max(1, gpus)))
    started_from = {"warm_start": release} if release else {}
    keep = ("epochs", "steps", "parameters", "gflops_per_image", "images_per_second", "first_loss", "last_loss")
    return {**{k: getattr(trained, k) for k in keep if getattr(trained, k) is not None}, **started_from}


@logs_failure
def train_on_workers(job: str, run_id: str, task_name: str, model_dir: str | Path, model_uri: str,
                     train_uri: str, val_uri: str, train_spec: str, pose_config: str, gpus: int,
                     pretrained_uri: str = "", warm_start: str = "", overrides: str = "{}",
                     role: str = "train") -> dict[str, Any]:
    """The train/retrain step on several workers: launch the job ``job`` (a JobTemplate's JSON)
    describes, named after this run and task; the workers read the artifacts by URI and the chief
    writes under ``<model_uri>.workers/``; its model folder ends up in ``model_dir``."""
    from components.distributed import JobTemplate, WorkerTask, launch
    from components.worker_data import train_share

    template = JobTemplate.from_json(job)
    train_share(train_uri, 0, template.workers)  # shards that do not divide among the workers: before any job
    task = WorkerTask(train_data=train_uri, val_data=val_uri, train_spec=train_spec, pose_config=pose_config,
                      output=f"{model_uri}.workers", gpus=gpus, pretrained=pretrained_uri, warm_start=warm_start,
                      overrides=overrides, role=role)
    return launch(template, task, run_id, task_name, model_dir)


@logs_failure
def prune(model_dir: str, prune_settings: str, inference_spec: str, out_dir: str,
          overrides: str = "{}") -> dict[str, Any]:
    """Prune the Model artifact into ``out_dir`` (FLOPs counted at the inference spec's input
    shape); returns parameters and FLOPs before and after."""
    from bpnet.steps.prune import prune as prune_step

    model, out = Path(model_dir), Path(out_dir)
    shape = settings_for(InferenceSpec, "inference", inference_spec, overrides, "inference_spec").input_shape
    settings = settings_for(PruneSettings, "prune", prune_settings, overrides, "prune_settings")
    out.mkdir(parents=True, exist_ok=True)
    pruned = prune_step(model / MODEL_FILE, out / MODEL_FILE, None, settings, shape)
    folders.copy_spec_files(model, out)
    p, f = pruned.parameters, pruned.flops
    return {"parameters": p["after"], "parameters_before": p["before"], "parameters_kept": p["kept"],
            "gflops": round(f["after"] / 1e9, 4), "gflops_before": round(f["before"] / 1e9, 4),
            "flops_input_shape": "x".join(map(str, shape))}


@logs_failure
def export(model_dir: str, export_settings: str, out_dir: str, overrides: str = "{}") -> dict[str, Any]:
    """Export the Model artifact, standard and SDK-compatible (``bpnet.folders.export_folder``)."""
    settings = settings_for(ExportCalibrationSettings, "export", export_settings, overrides, "export_settings")
    exported = folders.export_folder(Path(model_dir), Path(out_dir), settings)
    return {"input_shape": "x".join(map(str, exported.input_shape)), "precision": exported.info.precision,
            "bytes": exported.bytes}


@logs_failure
def calibration_data(dataset_uri: str, dataset_spec: str, export_settings: str, out_dir: str,
                     overrides: str = "{}") -> dict[str, Any]:
    """The calibration-image artifact: the ``cal_batches x cal_batch_size`` images calibration
    takes from the train split (``bpnet.folders.fill_calibration_folder``), fetched one by one
    from the raw dataset behind ``dataset_uri`` (the train split's images are those of the raw
    dataset), so neither this step nor calibrate moves the split."""
    from bpnet.storage import open_store

    settings = settings_for(ExportCalibrationSettings, "export", export_settings, overrides, "export_settings")
    where = f"{dataset_uri.rstrip('/')}/{folders.split_images_path(spec_mapping(dataset_spec, 'dataset_spec'))}"
    store = open_store(where)
    names = [name for name, _, _ in store.list_objects() if "/" not in name]  # calibration reads the top level
    out = Path(out_dir)
    with folders.workdir(out.parent) as work:  # beside the output: moved in, not copied

        def download(name: str) -> Path:
            store.download_file(name, work / name)
            return work / name

        taken = folders.fill_calibration_folder(names, settings.images, download, out, where)
    return {"images": len(taken), "bytes": sum(f.stat().st_size for f in out.rglob("*") if f.is_file())}


@logs_failure
def calibrate(exported_dir: str, calibration_dir: str, export_settings: str, out_dir: str,
              overrides: str = "{}") -> dict[str, Any]:
    """Calibrate an exported Model artifact on the calibration-image artifact's images
    (``bpnet.folders.calibrate_folder``)."""
    settings = settings_for(ExportCalibrationSettings, "export", export_settings, overrides, "export_settings")
    images = folders.calibration_images_dir(Path(calibration_dir))
    calibrated, fitted = folders.calibrate_folder(Path(exported_dir), images, Path(out_dir), settings)
    return {"precision": "int8", "calibrated_tensors": calibrated.tensors, "cal_method": calibrated.method,
            "cal_images": calibrated.images, "sdk_cache_tensors": fitted.tensors}


@logs_failure
def evaluate(dataset_dir: str, model_dir: str, inference_spec: str, results_dir: str, report_path: str,
             report_images: int, label: str = "", export_settings: str = "", overrides: str = "{}") -> dict[str, Any]:
    """Evaluate on the Dataset's val split; writes an HTML report; returns the metrics. With
    ``export_settings`` a Keras model is fed as the exported models are (their input size, padded)."""
    from bpnet.report import evaluation_report
    from bpnet.steps._predictor import fed_as_exported
    from bpnet.steps.evaluate import evaluate as evaluate_step

    results = Path(results_dir)
    dataset_file = Path(dataset_dir) / DATASET_SPEC
    dataset = load_spec(dataset_file, DatasetSpec, default_path_context(dataset_file, check_inputs=True))
    with folders.workdir() as work:
        spec = folders.inference_spec_for(spec_for("inference", inference_spec, overrides, "inference_spec"),
                                          model_dir, work)
        if export_settings:
            spec = fed_as_exported(spec, settings_for(ExportCalibrationSettings, "export", export_settings, overrides,
                                                      "export_settings").input_shape)
        evaluation = evaluate_step(spec, dataset, None, None, results,
                                   EvaluateSettings(num_visualizations=report_images))
    atomic_write_text(report_path, evaluation_report(evaluation, label, Path(model_dir), report_images))
    return evaluation.metrics


@logs_failure
def inference(dataset_dir: str, model_dir: str, inference_spec: str, results_dir: str, report_path: str,
              report_images: int, overrides: str = "{}") -> dict[str, Any]:
    """Inference with drawings on the Dataset's val images; writes an HTML gallery."""
    from bpnet.report import inference_report
    from bpnet.steps.inference import inference as inference_step

    results = Path(results_dir)
    dataset = load_spec(Path(dataset_dir) / DATASET_SPEC, DatasetSpec)
    with folders.workdir() as work:
        spec = folders.inference_spec_for(spec_for("inference", inference_spec, overrides, "inference_spec"),
                                          model_dir, work)
        detected = inference_step(spec, dataset.under_root(dataset.test_data.images_root_dir_path), None, None,
                                  results, InferenceSettings(input_type="dir", dump_visualizations=True))
    counts = {"images": detected.images, "people": detected.people, "unreadable": detected.unreadable}
    atomic_write_text(report_path, inference_report(counts, results, report_images))
    return counts


@logs_failure
def build_engine(exported_dir: str, int8_dir: str, target: dict[str, Any], workspace_bytes: int,
                 out_dir: str) -> dict[str, Any]:
    """A TensorRT engine for ``target`` (an EngineTarget) on this pod's GPU (or Jetson):
    ``<out_dir>/<name>.engine`` from the export and INT8 cache its server reads
    (``bpnet.layout.engine_sources``); the step writes the build record beside it."""
    from bpnet.steps.build_engine import build_engine as build_engine_step

    exported, int8, out = Path(exported_dir), Path(int8_dir), Path(out_dir)
    engine = EngineTarget.model_validate(target)
    out.mkdir(parents=True, exist_ok=True)
    model, cache = engine_sources(engine.serves, engine.precision)
    built = build_engine_step(exported / model, out / f"{engine.name}{ENGINE_SUFFIX}", None,
                              engine.settings(workspace_bytes), str(int8 / cache) if cache else None)
    return {"target": engine.name, "precision": built.precision, "serves": built.serves, "bytes": built.bytes}


@logs_failure
def publish(release_root: str, trained_dir: str, retrained_dir: str, exported_dir: str, int8_dir: str,
            evaluations: dict[str, dict], data: dict[str, Any], settings: dict[str, Any],
            engine_dirs: list[str] = (), inference_spec: str = "{}", serving: str = "{}",
            int8_gate: str = RELEASE_INT8_VERDICT, min_ap: float = 0.0, overrides: str = "{}") -> dict[str, Any]:
    """Publish the release of these Model artifacts (``bpnet.steps.publish``): the inference
    spec's decoder settings (its paths were the pipeline's) and the serving options go with it;
    ``int8_gate`` is the INT8 gate's verdict. Returns the ``latest`` pointer (with ``promoted``)."""
    from bpnet.release import ReleaseInputs
    from bpnet.steps.publish import publish as publish_step

    decoder = InferenceSpec.model_validate({k: v for k, v in spec_for("inference", inference_spec, overrides,
                                                                      "inference_spec").items()
                                            if k not in ("model_path", "train_spec")})
    inputs = ReleaseInputs(Path(trained_dir), Path(retrained_dir), Path(exported_dir), Path(int8_dir),
                           tuple(Path(d) for d in engine_dirs))
    released = publish_step(release_root, inputs, evaluations, data, settings, decoder,
                            from_json(ReleaseServing, serving, "serving"), int8_gate, min_ap)
    return released.pointer
