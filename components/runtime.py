"""What the components do when they run: KFP artifact folders and parameters <-> ``bpnet.steps``.

A component body is one call into this module, which (1) lays spec text passed as a pipeline
parameter over the artifact folders it was handed (binding the spec's data/model paths to them),
(2) calls the step function (``bpnet.steps``) the ``bpnet`` command line calls too, and (3)
returns the step's typed result as the figures that become artifact metadata. There is no ML
logic here. A failing step logs its user-facing message (and the traceback when it is a bug), so
the pod log says what went wrong.

Artifact layouts (the contract between steps) are ``bpnet.layout``'s: a Dataset artifact per split
(``raw/``, ``dataset_spec.json``, ``records/``), a Model artifact is a ``train`` results folder,
evaluation / inference results are the ``evaluate`` / ``inference`` results folders.
"""

from __future__ import annotations

import functools
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import yaml
from pydantic import BaseModel

from bpnet.artifacts import atomic_write_text, read_manifest
from bpnet.deploy.export import CalibrationData
from bpnet.errors import BpnetError, UsageError
from bpnet.layout import (
    ANNOTATED_DIR,
    CALIBRATION_CACHE,
    CALIBRATION_TENSORFILE,
    DATASET_SPEC,
    ENGINE_SUFFIX,
    EXPORT_SETTINGS_FILE,
    EXPORTED_FILE,
    EXPORTED_MODE,
    MODEL_FILE,
    POSE_CONFIG_FILE,
    RAW_DIR,
    RECORDS_DIR,
    SDK_CALIBRATION_CACHE,
    SDK_EXPORTED_FILE,
    TRAIN_SPEC_FILE,
    engine_sources,
)
from bpnet.overrides import resolve, set_values
from bpnet.release import RELEASE_INT8_VERDICT, RELEASE_UNPRUNED
from bpnet.settings import (
    CalibrationSettings,
    ConvertSettings,
    DeploySettings,
    EngineSettings,
    EvaluateSettings,
    ExportSettings,
    InferenceSettings,
    PruneSettings,
    Server,
    TrainSettings,
    build,
)
from bpnet.specs import DatasetSpec, InferenceSpec, TrainSpec, default_path_context, load_spec
from bpnet.steps.build_engine import build_engine as steps_build_engine
from bpnet.steps.calibrate import calibrate as steps_calibrate
from bpnet.steps.calibrate import fit_calibration as steps_fit_calibration
from bpnet.steps.dataset_convert import dataset_convert as steps_convert
from bpnet.steps.evaluate import evaluate as steps_evaluate
from bpnet.steps.export import export as steps_export
from bpnet.steps.inference import inference as steps_inference
from bpnet.steps.prune import prune as steps_prune
from bpnet.steps.publish import publish as steps_publish
from bpnet.steps.train import train as steps_train

log = logging.getLogger("bpnet.components")
P = ParamSpec("P")
R = TypeVar("R")

SPLITS = {"train": ("train", "train_data"), "val": ("test", "test_data")}  # prefix -> (mode, spec section)


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


@contextmanager
def workdir(parent: Path | None = None) -> Iterator[Path]:
    """A scratch folder, removed afterwards (in ``parent`` when given, else the system's temp)."""
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="bpnet-step-", dir=parent))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _parse(text: str, what: str) -> dict[str, Any]:
    """A spec parameter (YAML or JSON text) as a mapping. JSON is tried first: PyYAML reads a JSON
    number such as 2e-05 as a string (YAML 1.1 floats need a dot)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise UsageError(f"not valid YAML/JSON ({exc})", field=f"{what} parameter") from None
    if not isinstance(data, dict):
        raise UsageError(f"expected a mapping of spec fields, got {type(data).__name__}", field=f"{what} parameter")
    return data


def _write_yaml(data: dict[str, Any], dest: Path) -> Path:
    atomic_write_text(dest, yaml.safe_dump(data, sort_keys=False))
    return dest


def record_summary(dataset_dir: str | Path, prefix: str) -> dict[str, Any]:
    """The dataset_convert summary of one record set of a Dataset artifact (shard names, samples
    written ...), from its manifest: what a later pod, which has only the artifact, reads."""
    from bpnet.data.convert import output_paths

    manifest, _ = output_paths(Path(dataset_dir) / RECORDS_DIR / prefix)
    return read_manifest(manifest)["metadata"]["summary"]


def data_version(dataset_uri: str, requested: str) -> str:
    from bpnet.storage import open_store

    version = requested.strip() or f"fp-{open_store(dataset_uri).fingerprint()}"
    log.info("data version of %s: %s", dataset_uri, version)
    return version


def _split_paths(spec: dict[str, Any], key: str) -> list[str]:
    split = spec.get(key) or {}
    return [split[k] for k in ("images_root_dir_path", "mask_root_dir_path", "annotation_root_dir_path")
            if split.get(k)]


SPEC_PARAMETERS = {"train_spec": "train", "retrain_spec": "retrain", "inference_spec": "inference",
                   "prune_settings": "prune", "export_settings": "export"}
"""The pipeline parameters holding whole specs, and their roles in ``bpnet.overrides``."""


@logs_failure
def resolve_specs(texts: dict[str, str], overrides: BaseModel, min_ap: float, targets: dict[str, list[dict]]
                  ) -> tuple[dict[str, str], float, dict[str, list[dict]]]:
    """The spec parameters (``SPEC_PARAMETERS``: YAML/JSON text) with the typed run parameters laid
    over them (``bpnet.overrides``), the gate's minimum and the engine targets to build by pool.
    A spec no override lands in is passed on as written; an overridden one as one-line JSON."""
    parsed = {role: _parse(texts[name], name) for name, role in SPEC_PARAMETERS.items()}
    resolved = resolve(parsed, overrides, min_ap, [t["target"] for pool in targets.values() for t in pool])
    for name, value in set_values(overrides).items():
        log.info("run parameter %s = %s (overrides the spec)", name, value)
    out = {name: json.dumps(resolved.specs[role]) if role in resolved.changed else texts[name]
           for name, role in SPEC_PARAMETERS.items()}
    chosen = {pool: [t for t in pool_targets if t["target"] in resolved.targets]
              for pool, pool_targets in targets.items()}
    return out, resolved.min_ap, chosen


@logs_failure
def dataset_convert(dataset_uri: str, dataset_spec: str, train_dir: str | Path, val_dir: str | Path,
                    generate_masks: bool, num_shards: int) -> dict[str, Any]:
    """Fetch the raw dataset (s3:// prefix or folder), convert both splits, and split the result
    into two Dataset artifacts, so that evaluation pods download the val split only."""
    from bpnet.storage import open_store

    spec = _parse(dataset_spec, "dataset_spec")
    outs = {prefix: Path(d) for prefix, d in zip(SPLITS, (train_dir, val_dir), strict=True)}
    with workdir(Path(train_dir).parent) as work:  # beside the outputs: same filesystem, not uploaded
        log.info("fetching %s", dataset_uri)
        files = open_store(dataset_uri).mirror(work / RAW_DIR)
        spec["root_directory_path"] = RAW_DIR  # relative to dataset_spec.json: artifacts move between pods
        atomic_write_text(work / DATASET_SPEC, json.dumps(spec, indent=2) + "\n")
        dataset = load_spec(work / DATASET_SPEC, DatasetSpec, default_path_context(work / DATASET_SPEC,
                                                                                   check_inputs=True))
        converted = {}
        for prefix, (mode, _) in SPLITS.items():
            settings = build(ConvertSettings, mode=mode, generate_masks=generate_masks, num_shards=num_shards)
            converted[prefix] = steps_convert(dataset, work / RECORDS_DIR / prefix, settings)
            for line in converted[prefix].summary.lines():
                log.info("%s: %s", prefix, line)
        shared = set(_split_paths(spec, "train_data")) & set(_split_paths(spec, "test_data"))
        for prefix, (_, key) in SPLITS.items():
            out = outs[prefix]
            (out / RECORDS_DIR).mkdir(parents=True, exist_ok=True)
            shutil.copy2(work / DATASET_SPEC, out / DATASET_SPEC)
            for record in (work / RECORDS_DIR).glob(f"{prefix}-*"):
                shutil.move(record, out / RECORDS_DIR / record.name)
            for relative in _split_paths(spec, key):
                src, dest = work / RAW_DIR / relative, out / RAW_DIR / relative
                if not src.exists():
                    continue
                dest.parent.mkdir(parents=True, exist_ok=True)
                if relative not in shared:
                    shutil.move(src, dest)
                elif src.is_dir():
                    shutil.copytree(src, dest)
                else:
                    shutil.copy2(src, dest)
    train, val = (converted[p] for p in SPLITS)
    return {"source": dataset_uri, "files": files, "train_samples": train.samples, "train_images": train.images,
            "val_samples": val.samples, "val_images": val.images}


def bind_train_spec(train_spec: str, pose_config: str, dataset_dir: str | Path, model_dir: str | Path,
                    work: Path, pretrained: str | Path | None = None, val_dir: str | Path | None = None) -> Path:
    """The train spec with its data paths pointed into the train Dataset artifact; the inlined pose
    config (if given) is written into the Model folder, so the model's resolved spec stays valid.
    ``pretrained`` (retraining) sets ``pretrained_weights`` to that model file with
    ``load_graph: true``. ``val_dir`` (the val Dataset artifact) names the dataset spec whose test
    split the learning curve scores (bpnet.curves); the trainer reads nothing else through
    ``dataset_specs``. Every other field is the user's."""
    data = _parse(train_spec, "train_spec")
    dataset = Path(dataset_dir).absolute()  # the spec is read from another folder
    loader = data.setdefault("dataloader", {})
    config = loader.setdefault("dataset_config", {})
    config.update(root_data_path=str(dataset / RAW_DIR), train_records_folder_path=str(dataset / RECORDS_DIR),
                  train_records_path=record_summary(dataset, "train")["shards"],
                  val_records_folder_path=None, val_records_path=[])  # validation is not run while training
    spec_dir = Path(val_dir).absolute() if val_dir is not None else dataset
    config["dataset_specs"] = {name: str(spec_dir / DATASET_SPEC) for name in (config.get("dataset_specs") or
                                                                               {"coco": None})}
    if pose_config.strip():
        pose_path = Path(model_dir).absolute() / POSE_CONFIG_FILE
        pose_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(pose_path, pose_config)
        loader.setdefault("pose_config", {})["pose_config_path"] = str(pose_path)
    if pretrained is not None:
        data.update(pretrained_weights=str(Path(pretrained).absolute()), load_graph=True)
    return _write_yaml(data, work / "train_spec.yaml")


@logs_failure
def train(dataset_dir: str | Path, train_spec: str, pose_config: str, model_dir: str | Path,
          gpus: int, pretrained_dir: str | Path | None = None, warm_start: str = "",
          val_dir: str | Path | None = None) -> dict[str, Any]:
    """``bpnet train`` into the Model artifact folder. With ``pretrained_dir`` (a pruned Model
    artifact) it is the retrain: graph and weights come from that model. With ``warm_start`` (a
    release root) training starts from the latest release's unpruned model (so repeated scheduled
    runs do not prune an already pruned graph again), if there is a release yet. ``val_dir`` (the
    val Dataset artifact) gives the learning curve its AP points. ``gpus`` is the pod's GPU request
    (the run spec's ``steps.train.gpus`` / ``steps.retrain.gpus``); a pod with none (0) trains on one
    device, the CPU."""
    from bpnet.release import fetch_latest_file, read_latest

    model = Path(model_dir)
    pretrained = Path(pretrained_dir) / MODEL_FILE if pretrained_dir is not None else None
    started_from = {}
    with workdir() as work:
        if warm_start and read_latest(warm_start) is None:
            log.info("warm start: no release under %s yet; training from the spec", warm_start)
        elif warm_start:
            pointer = fetch_latest_file(warm_start, RELEASE_UNPRUNED, work / MODEL_FILE)
            pretrained, started_from = work / MODEL_FILE, {"warm_start": pointer["release"]}
            log.info("warm start from release %s (AP %s)", pointer["release"], pointer["metrics"].get("AP"))
        spec_file = bind_train_spec(train_spec, pose_config, dataset_dir, model, work, pretrained, val_dir)
        spec = load_spec(spec_file, TrainSpec, default_path_context(spec_file, check_inputs=True))
        trained = steps_train(spec, model, None, build(TrainSettings, gpus=max(1, gpus)))
    keep = ("epochs", "steps", "parameters", "gflops_per_image", "images_per_second", "first_loss", "last_loss")
    return {**{k: getattr(trained, k) for k in keep if getattr(trained, k) is not None}, **started_from}


@logs_failure
def train_on_workers(job: str, run_id: str, task_name: str, model_dir: str | Path, model_uri: str,
                     train_uri: str, val_uri: str, train_spec: str, pose_config: str, gpus: int,
                     pretrained_uri: str = "", warm_start: str = "") -> dict[str, Any]:
    """The train/retrain step on several workers: launch the job ``job`` (a JobTemplate's JSON)
    describes, named after this run and task; the workers read the artifacts by URI and the chief
    writes under ``<model_uri>.workers/``; its model folder ends up in ``model_dir``."""
    from components.distributed import JobTemplate, WorkerTask, launch

    task = WorkerTask(train_data=train_uri, val_data=val_uri, train_spec=train_spec, pose_config=pose_config,
                      output=f"{model_uri}.workers", gpus=gpus, pretrained=pretrained_uri, warm_start=warm_start)
    return launch(JobTemplate.from_json(job), task, run_id, task_name, model_dir)


@logs_failure
def prune(model_dir: str | Path, prune_settings: str, inference_spec: str, out_dir: str | Path) -> dict[str, Any]:
    """Prune the Model artifact into ``out_dir`` (FLOPs counted at the inference spec's input
    shape); the source's resolved train spec and pose config come along, as the pruned model was
    trained with them. Returns parameters and FLOPs before and after."""
    model, out = Path(model_dir), Path(out_dir)
    settings = build(PruneSettings, **_parse(prune_settings, "prune_settings"))
    shape = build(ExportSettings, **{k: v for k, v in _parse(inference_spec, "inference_spec").items()
                                     if k == "input_shape"}).input_shape
    out.mkdir(parents=True, exist_ok=True)
    pruned = steps_prune(model / MODEL_FILE, out / MODEL_FILE, None, settings, shape)
    _copy_spec_files(model, out)
    p, f = pruned.parameters, pruned.flops
    return {"parameters": p["after"], "parameters_before": p["before"], "parameters_kept": p["kept"],
            "gflops": round(f["after"] / 1e9, 4), "gflops_before": round(f["before"] / 1e9, 4),
            "flops_input_shape": "x".join(map(str, shape))}


def _copy_spec_files(src: Path, dest: Path, *names: str) -> None:
    for name in (TRAIN_SPEC_FILE, POSE_CONFIG_FILE, *names):
        if (src / name).is_file():
            shutil.copy2(src / name, dest / name)


def _deploy_settings(text: str) -> DeploySettings:
    return build(DeploySettings, **_parse(text, "export_settings"))


def _norm(model_dir: Path):
    """The normalization the model was trained with (its resolved train spec's)."""
    spec_file = model_dir / TRAIN_SPEC_FILE
    return load_spec(spec_file, TrainSpec, default_path_context(spec_file)).dataloader.normalization_params


@logs_failure
def export(model_dir: str | Path, export_settings: str, out_dir: str | Path) -> dict[str, Any]:
    """Export (fp32 ONNX, encrypted) the Model artifact at the settings' input shape, and its
    SDK-compatible variant (what DeepStream engines are built from); the step writes
    ``export.json`` beside them (how the exported model is fed: its input shape, padded)."""
    model, out = Path(model_dir), Path(out_dir)
    settings = _deploy_settings(export_settings)
    out.mkdir(parents=True, exist_ok=True)
    exported = steps_export(model / MODEL_FILE, out / EXPORTED_FILE, None, settings, _norm(model))
    steps_export(model / MODEL_FILE, out / SDK_EXPORTED_FILE, None, settings, _norm(model), sdk_compatible=True)
    _copy_spec_files(model, out)
    return {"input_shape": "x".join(map(str, exported.input_shape)), "precision": exported.info.precision,
            "bytes": exported.bytes}


@logs_failure
def calibrate(exported_dir: str | Path, dataset_dir: str | Path, export_settings: str,
              out_dir: str | Path) -> dict[str, Any]:
    """Calibrate an exported model on the train split's images: tensorfile, TensorRT calibration
    cache, the ONNX Runtime QDQ INT8 model (``bpnet_model.etlt`` of ``out_dir``) and the cache
    fitted to the SDK-compatible export (``calibration.sdk.bin``, for DeepStream engines)."""
    exported, out = Path(exported_dir), Path(out_dir)
    settings = _deploy_settings(export_settings)
    dataset = load_spec(Path(dataset_dir) / DATASET_SPEC, DatasetSpec)
    out.mkdir(parents=True, exist_ok=True)
    calibration = CalibrationSettings(**settings.model_dump(include=set(CalibrationSettings.model_fields)))
    data = CalibrationData(str(dataset.under_root(dataset.train_data.images_root_dir_path)),
                           str(out / CALIBRATION_TENSORFILE), str(out / CALIBRATION_CACHE), calibration)
    calibrated = steps_calibrate(exported / EXPORTED_FILE, out / EXPORTED_FILE, None, data, _norm(exported))
    fitted = steps_fit_calibration(exported / EXPORTED_FILE, exported / SDK_EXPORTED_FILE, calibrated.cache,
                                   out / SDK_CALIBRATION_CACHE, None)
    _copy_spec_files(exported, out, EXPORT_SETTINGS_FILE)
    return {"precision": "int8", "calibrated_tensors": calibrated.tensors, "cal_method": calibrated.method,
            "cal_images": calibrated.images, "sdk_cache_tensors": fitted.tensors}


def bind_inference_spec(inference_spec: str, model_dir: str | Path, work: Path) -> Path:
    """The inference spec with ``model_path`` and ``train_spec`` taken from the Model artifact. For
    an exported model, its input shape and the padding mode it was exported for replace the spec's
    (an exported model fixes its input size; the spec's other fields apply unchanged)."""
    data = _parse(inference_spec, "inference_spec")
    model = Path(model_dir).absolute()  # the spec is read from another folder
    data.update(model_path=str(model / MODEL_FILE), train_spec=str(model / TRAIN_SPEC_FILE))
    if (model / EXPORTED_FILE).is_file():
        data.update(model_path=str(model / EXPORTED_FILE), multi_scale_inference=False, output_stage_to_use=None,
                    **json.loads((model / EXPORT_SETTINGS_FILE).read_text()))
    return _write_yaml(data, work / "infer_spec.yaml")


def at_export_mode(inference_spec: str, export_settings: str) -> str:
    """The inference spec with the exported models' input size and padding mode (JSON text)."""
    data = _parse(inference_spec, "inference_spec")
    data.update(input_shape=list(_deploy_settings(export_settings).input_shape),
                keep_aspect_ratio_mode=EXPORTED_MODE, multi_scale_inference=False)
    return json.dumps(data)


def _annotated(results: Path, limit: int) -> list[Path]:
    return sorted((results / ANNOTATED_DIR).glob("*.jpg"))[:limit]


def _load_inference_spec(spec_file: Path):
    paths = default_path_context(spec_file)
    return load_spec(spec_file, InferenceSpec, paths), paths


@logs_failure
def evaluate(dataset_dir: str | Path, model_dir: str | Path, inference_spec: str, results_dir: str | Path,
             report_path: str | Path, report_images: int, label: str = "") -> dict[str, Any]:
    """Evaluate on the Dataset's val split; writes an HTML report; returns the metrics."""
    from bpnet.curves import CURVE_PNG
    from bpnet.report import html_report

    results = Path(results_dir)
    dataset_file = Path(dataset_dir) / DATASET_SPEC
    dataset = load_spec(dataset_file, DatasetSpec, default_path_context(dataset_file, check_inputs=True))
    with workdir() as work:
        spec, paths = _load_inference_spec(bind_inference_spec(inference_spec, model_dir, work))
        evaluation = steps_evaluate(spec, dataset, None, None, results,
                                    build(EvaluateSettings, num_visualizations=report_images), paths)
    metrics = evaluation.metrics
    title = f"BodyPoseNet evaluation — {label} model" if label else "BodyPoseNet evaluation"
    tables = {"COCO keypoints (person), val split": evaluation.scores,
              "Counts": {"images": metrics["images"], "detections": metrics["detections"]}}
    curve = Path(model_dir) / CURVE_PNG  # a trained or retrained model's learning curve (bpnet.curves)
    charts = {"Learning curve (training)": curve} if curve.is_file() else {}
    atomic_write_text(report_path, html_report(title, tables, _annotated(results, report_images), charts=charts))
    return metrics


@logs_failure
def inference(dataset_dir: str | Path, model_dir: str | Path, inference_spec: str, results_dir: str | Path,
              report_path: str | Path, report_images: int) -> dict[str, Any]:
    """Inference with drawings on the Dataset's val images; writes an HTML gallery."""
    from bpnet.report import html_report

    results = Path(results_dir)
    dataset = load_spec(Path(dataset_dir) / DATASET_SPEC, DatasetSpec)
    with workdir() as work:
        spec, paths = _load_inference_spec(bind_inference_spec(inference_spec, model_dir, work))
        detected = steps_inference(spec, dataset.under_root(dataset.test_data.images_root_dir_path), None, None,
                                   results, build(InferenceSettings, input_type="dir", dump_visualizations=True),
                                   paths=paths)
    counts = {"images": detected.images, "people": detected.people, "unreadable": detected.unreadable}
    atomic_write_text(report_path, html_report("BodyPoseNet inference", {"Detections": counts},
                                               _annotated(results, report_images)))
    return counts


@logs_failure
def build_engine(exported_dir: str | Path, int8_dir: str | Path, name: str, precision: str, max_batch_size: int,
                 workspace_bytes: int, dla_core: int, out_dir: str | Path, serves: Server = "triton") -> dict[str, Any]:
    """A TensorRT engine on this pod's GPU (or Jetson): ``<out_dir>/<name>.engine``, from the export
    and INT8 cache that what ``serves`` it reads (``bpnet.layout.engine_sources``); ``dla_core`` < 0
    means none. The step writes the build record beside it (versions, node, what it serves: the
    release sorts engines by it)."""
    exported, int8, out = Path(exported_dir), Path(int8_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = build(EngineSettings, data_type=precision, max_batch_size=max_batch_size,
                     max_workspace_size=workspace_bytes, dla_core=dla_core if dla_core >= 0 else None)
    model, cache = engine_sources(serves, precision)
    built = steps_build_engine(exported / model, out / f"{name}{ENGINE_SUFFIX}", None, settings,
                               str(int8 / cache) if cache else None)
    return {"target": name, "precision": built.precision, "serves": built.serves, "bytes": built.bytes}


@logs_failure
def publish(release_root: str, trained_dir: str | Path, retrained_dir: str | Path, exported_dir: str | Path,
            int8_dir: str | Path, evaluations: dict[str, dict], data: dict[str, Any], settings: dict[str, Any],
            engine_dirs: list[str | Path] = (), inference_spec: str = "{}", serving: dict[str, Any] | None = None,
            int8_gate: str = RELEASE_INT8_VERDICT, min_ap: float = 0.0) -> dict[str, Any]:
    """Publish the release of these Model artifacts (``bpnet.steps.publish``): the decoder settings
    of the inference spec (its paths were the pipeline's) and the serving options go with it;
    ``int8_gate`` is the INT8 gate's verdict. Returns the ``latest`` pointer (with ``promoted``)."""
    from bpnet.release import ReleaseInputs, ServingOptions

    decoder = InferenceSpec.model_validate({k: v for k, v in _parse(inference_spec, "inference_spec").items()
                                            if k not in ("model_path", "train_spec")})
    inputs = ReleaseInputs(Path(trained_dir), Path(retrained_dir), Path(exported_dir), Path(int8_dir),
                           tuple(Path(d) for d in engine_dirs))
    released = steps_publish(release_root, inputs, evaluations, data, settings, decoder,
                             ServingOptions(**(serving or {})), int8_gate, min_ap)
    return released.pointer
