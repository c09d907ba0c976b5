"""What the components do when they run: KFP artifact folders and parameters <-> ``bpnet`` runs.

A component body is one call into this module, which (1) lays spec text passed as a pipeline
parameter over the artifact folders it was handed (binding the spec's data/model paths to them),
(2) runs the ``bpnet`` command line on them, exactly as a user would, and (3) returns the figures
that become artifact metadata. There is no ML logic here: a step does what ``bpnet <sub_task>``
does, so the CLI, ``make run`` and a Kubeflow run cannot drift apart.

Artifact layouts (the contract between steps):

- Dataset, one per split (train, val): ``raw/`` (that split's images, masks and annotation file
  from the fetched dataset; masks added by conversion), ``dataset_spec.json`` (the dataset spec
  with ``root_directory_path: raw``), ``records/<train|val>-fold-NNN-of-NNN`` with the
  ``-manifest.json``.
- Model: the ``bpnet train`` results folder (``bpnet_model.tlt``, ``train_spec.resolved.yaml``,
  ``pose_config.json``, ``train_summary.json``, checkpoints, events).
- Evaluation / inference results: the ``bpnet evaluate`` / ``bpnet inference`` results folders.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger("bpnet.components")

DATASET_SPEC = "dataset_spec.json"
RAW_DIR = "raw"
RECORDS_DIR = "records"
MODEL_FILE = "bpnet_model.tlt"
TRAIN_SPEC_FILE = "train_spec.resolved.yaml"
POSE_CONFIG_FILE = "pose_config.json"
EXPORTED_FILE = "bpnet_model.etlt"
EXPORT_SETTINGS_FILE = "export.json"  # how an exported model is fed: input_shape, keep_aspect_ratio_mode
EXPORTED_MODE = "pad_image_input"  # an exported model fixes its input size: images are fitted and padded
SPLITS = {"train": ("train", "train_data"), "val": ("test", "test_data")}  # prefix -> (mode, spec section)


class StepFailed(RuntimeError):
    """A bpnet command failed; its own log lines (above) say why."""


def run_bpnet(*args: str) -> None:
    """Run ``bpnet <args>`` in this process; a non-zero exit fails the step."""
    from bpnet.cli import main

    log.info("bpnet %s", " ".join(args))
    code = main(list(args))
    if code != 0:
        raise StepFailed(f"bpnet {args[0]} exited with code {code} (see its log above)")


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
            raise ValueError(f"{what} parameter: not valid YAML/JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{what} parameter: expected a mapping of spec fields, got {type(data).__name__}")
    return data


def _write_yaml(data: dict[str, Any], dest: Path) -> Path:
    dest.write_text(yaml.safe_dump(data, sort_keys=False))
    return dest


def record_summary(dataset_dir: str | Path, prefix: str) -> dict[str, Any]:
    """The dataset_convert summary of one record set (shard names, samples written ...)."""
    manifest = Path(dataset_dir) / RECORDS_DIR / f"{prefix}-manifest.json"
    return json.loads(manifest.read_text())["metadata"]["summary"]


def data_version(dataset_uri: str, requested: str) -> str:
    from bpnet.storage import open_store

    version = requested.strip() or f"fp-{open_store(dataset_uri).fingerprint()}"
    log.info("data version of %s: %s", dataset_uri, version)
    return version


def _split_paths(spec: dict[str, Any], key: str) -> list[str]:
    split = spec.get(key) or {}
    return [split[k] for k in ("images_root_dir_path", "mask_root_dir_path", "annotation_root_dir_path")
            if split.get(k)]


def dataset_convert(dataset_uri: str, dataset_spec: str, train_dir: str | Path, val_dir: str | Path,
                    generate_masks: bool = True, num_shards: int = 1) -> dict[str, Any]:
    """Fetch the raw dataset (s3:// prefix or folder), convert both splits, and split the result
    into two Dataset artifacts, so that evaluation pods download the val split only."""
    from bpnet.storage import open_store

    spec = _parse(dataset_spec, "dataset_spec")
    outs = {prefix: Path(d) for prefix, d in zip(SPLITS, (train_dir, val_dir), strict=True)}
    with workdir(Path(train_dir).parent) as work:  # beside the outputs: same filesystem, not uploaded
        log.info("fetching %s", dataset_uri)
        files = open_store(dataset_uri).mirror(work / RAW_DIR)
        spec["root_directory_path"] = RAW_DIR  # relative to dataset_spec.json: artifacts move between pods
        (work / DATASET_SPEC).write_text(json.dumps(spec, indent=2) + "\n")
        masks = ["--generate_masks"] if generate_masks else []
        for prefix, (mode, _) in SPLITS.items():
            run_bpnet("dataset_convert", "-d", str(work / DATASET_SPEC), "-o", str(work / RECORDS_DIR / prefix),
                      "-m", mode, "--num_shards", str(num_shards), *masks)
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
    train, val = (record_summary(outs[p], p) for p in SPLITS)
    return {"source": dataset_uri, "files": files, "train_samples": train["samples_written"],
            "train_images": train["images_written"], "val_samples": val["samples_written"],
            "val_images": val["images_written"]}


def bind_train_spec(train_spec: str, pose_config: str, dataset_dir: str | Path, model_dir: str | Path,
                    work: Path, pretrained: str | Path | None = None) -> Path:
    """The train spec with its data paths pointed into the train Dataset artifact; the inlined pose
    config (if given) is written into the Model folder, so the model's resolved spec stays valid.
    ``pretrained`` (retraining) sets ``pretrained_weights`` to that model file with
    ``load_graph: true``. Every other field is the user's."""
    data = _parse(train_spec, "train_spec")
    dataset = Path(dataset_dir).absolute()  # the spec is read from another folder
    loader = data.setdefault("dataloader", {})
    config = loader.setdefault("dataset_config", {})
    config.update(root_data_path=str(dataset / RAW_DIR), train_records_folder_path=str(dataset / RECORDS_DIR),
                  train_records_path=record_summary(dataset, "train")["shards"],
                  val_records_folder_path=None, val_records_path=[])  # validation is not run while training
    config["dataset_specs"] = {name: str(dataset / DATASET_SPEC) for name in (config.get("dataset_specs") or
                                                                              {"coco": None})}
    if pose_config.strip():
        pose_path = Path(model_dir).absolute() / POSE_CONFIG_FILE
        pose_path.parent.mkdir(parents=True, exist_ok=True)
        pose_path.write_text(pose_config)
        loader.setdefault("pose_config", {})["pose_config_path"] = str(pose_path)
    if pretrained is not None:
        data.update(pretrained_weights=str(Path(pretrained).absolute()), load_graph=True)
    return _write_yaml(data, work / "train_spec.yaml")


def train(dataset_dir: str | Path, train_spec: str, pose_config: str, model_dir: str | Path,
          gpus: int = 1, pretrained_dir: str | Path | None = None, warm_start: str = "") -> dict[str, Any]:
    """``bpnet train`` into the Model artifact folder. With ``pretrained_dir`` (a pruned Model
    artifact) it is the retrain: graph and weights come from that model. With ``warm_start`` (a
    release root) training starts from the latest release's unpruned model (so repeated scheduled
    runs do not prune an already pruned graph again), if there is a release yet."""
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
        spec = bind_train_spec(train_spec, pose_config, dataset_dir, model, work, pretrained)
        run_bpnet("train", "-e", str(spec), "-r", str(model), "--gpus", str(max(1, gpus)))
    summary = json.loads((model / "train_summary.json").read_text())
    keep = ("epochs", "steps", "parameters", "gflops_per_image", "images_per_second", "first_loss", "last_loss")
    return {**{k: summary[k] for k in keep if summary.get(k) is not None}, **started_from}


PRUNE_FLAGS = {"normalizer": "-n", "equalization_criterion": "-eq", "pruning_granularity": "-pg",
               "pruning_threshold": "-pth", "min_num_filters": "-nf"}


def prune(model_dir: str | Path, prune_settings: str, inference_spec: str, out_dir: str | Path) -> dict[str, Any]:
    """``bpnet prune`` of the Model artifact into ``out_dir`` (FLOPs counted at the inference spec's
    input shape); the source's resolved train spec and pose config come along, as the pruned model
    was trained with them. Returns parameters and FLOPs before and after."""
    model, out = Path(model_dir), Path(out_dir)
    settings = _parse(prune_settings, "prune_settings")
    unknown = sorted(set(settings) - set(PRUNE_FLAGS) - {"excluded_layers"})
    if unknown:
        raise ValueError(f"prune_settings parameter: unknown keys {unknown}; valid: "
                         f"{', '.join([*PRUNE_FLAGS, 'excluded_layers'])}")
    flags = [str(v) for key, flag in PRUNE_FLAGS.items() if key in settings for v in (flag, settings[key])]
    if settings.get("excluded_layers"):
        flags += ["-el", *settings["excluded_layers"]]
    height, width = _parse(inference_spec, "inference_spec").get("input_shape") or (368, 368)
    out.mkdir(parents=True, exist_ok=True)
    run_bpnet("prune", "-m", str(model / MODEL_FILE), "-o", str(out / MODEL_FILE), "--input_shape",
              f"{height},{width}", *flags)
    for name in (TRAIN_SPEC_FILE, POSE_CONFIG_FILE):
        if (model / name).is_file():
            shutil.copy2(model / name, out / name)
    report = json.loads((out / f"{MODEL_FILE}.json").read_text())
    p, f = report["parameters"], report["flops"]
    return {"parameters": p["after"], "parameters_before": p["before"], "parameters_kept": p["kept"],
            "gflops": round(f["after"] / 1e9, 4), "gflops_before": round(f["before"] / 1e9, 4),
            "flops_input_shape": f"{height}x{width}"}


def _copy_spec_files(src: Path, dest: Path, *names: str) -> None:
    for name in (TRAIN_SPEC_FILE, POSE_CONFIG_FILE, *names):
        if (src / name).is_file():
            shutil.copy2(src / name, dest / name)


def export(model_dir: str | Path, export_settings: str, out_dir: str | Path) -> dict[str, Any]:
    """``bpnet export`` (fp32 ONNX, encrypted) of the Model artifact at the settings' input shape."""
    model, out = Path(model_dir), Path(out_dir)
    settings = _parse(export_settings, "export_settings")
    height, width = settings["input_shape"]
    out.mkdir(parents=True, exist_ok=True)
    run_bpnet("export", "-m", str(model / MODEL_FILE), "-o", str(out / EXPORTED_FILE), "-e",
              str(model / TRAIN_SPEC_FILE), "-d", f"{height},{width},3", "-t", "tfonnx")
    _copy_spec_files(model, out)
    (out / EXPORT_SETTINGS_FILE).write_text(json.dumps({"input_shape": [height, width],
                                                        "keep_aspect_ratio_mode": EXPORTED_MODE}) + "\n")
    return {"input_shape": f"{height}x{width}", "precision": "fp32", "bytes": (out / EXPORTED_FILE).stat().st_size}


def calibrate(exported_dir: str | Path, dataset_dir: str | Path, export_settings: str,
              out_dir: str | Path) -> dict[str, Any]:
    """``bpnet calibrate`` of an exported model on the train split's images: tensorfile, TensorRT
    calibration cache and the ONNX Runtime QDQ INT8 model (``bpnet_model.etlt`` of ``out_dir``)."""
    from bpnet.deploy.calibration import read_trt_cache
    from bpnet.specs import DatasetSpec, load_spec

    exported, out = Path(exported_dir), Path(out_dir)
    settings = _parse(export_settings, "export_settings")
    dataset = load_spec(Path(dataset_dir) / DATASET_SPEC, DatasetSpec)
    out.mkdir(parents=True, exist_ok=True)
    run_bpnet("calibrate", "-m", str(exported / EXPORTED_FILE), "-o", str(out / EXPORTED_FILE), "-e",
              str(exported / TRAIN_SPEC_FILE), "--cal_image_dir",
              str(dataset.under_root(dataset.train_data.images_root_dir_path)),
              "--cal_data_file", str(out / "calibration.tensorfile.npy"), "--cal_cache_file",
              str(out / "calibration.bin"), "--batches", str(settings.get("cal_batches", 10)),
              "--batch_size", str(settings.get("cal_batch_size", 1)),
              "--cal_method", str(settings.get("cal_method", "entropy")))
    _copy_spec_files(exported, out, EXPORT_SETTINGS_FILE)
    _, scales = read_trt_cache(out / "calibration.bin")
    return {"precision": "int8", "calibrated_tensors": len(scales), "cal_method": settings.get("cal_method", "entropy"),
            "cal_images": settings.get("cal_batches", 10) * settings.get("cal_batch_size", 1)}


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
    data.update(input_shape=list(_parse(export_settings, "export_settings")["input_shape"]),
                keep_aspect_ratio_mode=EXPORTED_MODE, multi_scale_inference=False)
    return json.dumps(data)


def _annotated(results: Path, limit: int) -> list[Path]:
    return sorted((results / "images_annotated").glob("*.jpg"))[:limit]


def evaluate(dataset_dir: str | Path, model_dir: str | Path, inference_spec: str, results_dir: str | Path,
             report_path: str | Path, report_images: int = 4, label: str = "") -> dict[str, Any]:
    """``bpnet evaluate`` on the Dataset's val split; writes an HTML report; returns the metrics."""
    from bpnet.curves import CURVE_PNG
    from bpnet.report import html_report

    results = Path(results_dir)
    with workdir() as work:
        spec = bind_inference_spec(inference_spec, model_dir, work)
        run_bpnet("evaluate", "-i", str(spec), "-d", str(Path(dataset_dir) / DATASET_SPEC), "-r", str(results),
                  "--num_visualizations", str(report_images))
    metrics = json.loads((results / "metrics.json").read_text())
    scores = {k: v for k, v in metrics.items() if isinstance(v, float)}
    title = f"BodyPoseNet evaluation — {label} model" if label else "BodyPoseNet evaluation"
    tables = {"COCO keypoints (person), val split": scores,
              "Counts": {"images": metrics["images"], "detections": metrics["detections"]}}
    curve = Path(model_dir) / CURVE_PNG  # a trained or retrained model's learning curve (bpnet.curves)
    charts = {"Learning curve (training)": curve} if curve.is_file() else {}
    Path(report_path).write_text(html_report(title, tables, _annotated(results, report_images), charts=charts))
    return metrics


def inference(dataset_dir: str | Path, model_dir: str | Path, inference_spec: str, results_dir: str | Path,
              report_path: str | Path, report_images: int = 4) -> dict[str, Any]:
    """``bpnet inference`` with drawings on the Dataset's val images; writes an HTML gallery."""
    from bpnet.report import html_report
    from bpnet.specs import DatasetSpec, load_spec

    results = Path(results_dir)
    dataset = load_spec(Path(dataset_dir) / DATASET_SPEC, DatasetSpec)
    with workdir() as work:
        spec = bind_inference_spec(inference_spec, model_dir, work)
        run_bpnet("inference", "-i", str(spec), "--input_type", "dir", "-r", str(results), "--dump_visualizations",
                  "--input", str(dataset.under_root(dataset.test_data.images_root_dir_path)))
    doc = json.loads((results / "detection.json").read_text())
    counts = {"images": len(doc["images"]), "people": sum(len(i["people"]) for i in doc["images"]),
              "unreadable": len(doc["errors"])}
    Path(report_path).write_text(html_report("BodyPoseNet inference", {"Detections": counts},
                                             _annotated(results, report_images)))
    return counts


def build_engine(exported_dir: str | Path, int8_dir: str | Path, name: str, precision: str, max_batch_size: int,
                 workspace_bytes: int, dla_core: int, out_dir: str | Path) -> dict[str, Any]:
    """``bpnet build_engine`` on this pod's GPU (or Jetson): ``<out_dir>/<name>.engine``. INT8 uses
    the calibration cache of the calibrate step; ``dla_core`` < 0 means none."""
    exported, int8, out = Path(exported_dir), Path(int8_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    args = ["build_engine", str(exported / EXPORTED_FILE), "-e", str(out / f"{name}.engine"), "-t", precision,
            "-m", str(max_batch_size), "-w", str(workspace_bytes)]
    if precision == "int8":
        args += ["-c", str(int8 / "calibration.bin")]
    if dla_core >= 0:
        args += ["-u", str(dla_core)]
    run_bpnet(*args)
    from bpnet.deploy.platform import ENGINE_INFO_SUFFIX, current_platform

    record = {"target": name, "precision": precision, "max_batch_size": max_batch_size,
              "platform": current_platform()}  # what check_runtime.py compares on the target
    (out / f"{name}{ENGINE_INFO_SUFFIX}").write_text(json.dumps(record, indent=2) + "\n")
    return {"target": name, "precision": precision, "bytes": (out / f"{name}.engine").stat().st_size}


RELEASE_MODEL = "model/bpnet_model.tlt"
RELEASE_UNPRUNED = "model/unpruned/bpnet_model.tlt"  # what warm starts train from (the graph before pruning)


def promotion_gate(ap: float, min_ap: float, release_root: str) -> str:
    """"promote" if ``ap`` reaches ``min_ap`` and the latest release's AP, else "hold: <why>"."""
    from bpnet.release import promotion_decision, read_latest

    promote, reason = promotion_decision(ap, min_ap, read_latest(release_root))
    log.info("promotion gate: %s", reason)
    return "promote" if promote else f"hold: {reason}"


def int8_gate(fp32_ap: float, int8_ap: float, max_drop: float, gpu_targets: list[dict], jetson_targets: list[dict]
              ) -> tuple[str, list[dict], list[dict]]:
    """("release int8" | "hold: <why>", the GPU and Jetson engine targets to build): INT8 targets
    are dropped unless INT8 AP >= fp32 AP - ``max_drop``."""
    from bpnet.release import int8_decision

    ok, why = int8_decision(fp32_ap, int8_ap, max_drop)
    log.info("INT8 gate: %s", why)
    keep = [[t for t in targets if ok or t["precision"] != "int8"] for targets in (gpu_targets, jetson_targets)]
    return ("release int8" if ok else f"hold: {why}", *keep)


def _model_card(release_id: str, data: dict[str, Any], settings: dict[str, Any], evaluations: dict[str, dict],
                sizes: dict[str, Any], int8_note: str, deploy: dict[str, Any]) -> str:
    lines = [f"# BodyPoseNet release {release_id}", "", "## Data", ""]
    lines += [f"- {k}: {v}" for k, v in data.items()]
    lines += ["", "## Settings", ""] + [f"- {k}: `{json.dumps(v)}`" for k, v in settings.items()]
    lines += ["", "## Metrics (COCO keypoints, person, val split)", "", "| model | AP | AP50 | AP75 | APm | APl | AR |",
              "|---|---|---|---|---|---|---|"]
    for name, m in evaluations.items():
        lines.append(f"| {name} | " + " | ".join(f"{m.get(k, float('nan')):.4f}" for k in
                                                 ("AP", "AP50", "AP75", "AP_medium", "AP_large", "AR")) + " |")
    lines += ["", "## INT8", "", int8_note, "", "## Engines", ""]
    engines = deploy["engines"]
    if engines:
        lines += ["| target | precision | max batch | TensorRT | CUDA | JetPack (L4T) | arch | built on |",
                  "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {t} | {e['precision']} | {e['max_batch_size']} | {e.get('tensorrt')} | {e.get('cuda')} | "
                  f"{e.get('jetpack')} ({e.get('l4t')}) | {e.get('arch')} | {e.get('node')} |"
                  for t, e in sorted(engines.items())]
        lines += ["", "An engine runs only with the TensorRT (and JetPack) version above: "
                  "`python3 check_runtime.py <release> [target]` on the target refuses a mismatch."]
    else:
        lines.append("none built (engines.enabled is false, or no TensorRT where this ran)")
    served = deploy["served"]
    lines += ["", "## Serving", ""]
    if served.get("note"):
        lines.append(f"- not servable as released: {served['note']}")
    else:
        lines += [f"- Triton ensembles (image in, people out): {', '.join(served['ensembles'])}",
                  f"- Triton network models: {', '.join(served['networks'])}",
                  "- DeepStream: deepstream/README.md; KServe: kserve/inferenceservice.yaml"]
    lines += ["", "## Sizes", ""] + [f"- {k}: {v}" for k, v in sizes.items()]
    return "\n".join(lines) + "\n"


INT8_FILES = ("onnx/bpnet_model.int8.etlt", "calibration/calibration.bin", "calibration/calibration.tensorfile.npy")


def publish(release_root: str, trained_dir: str | Path, retrained_dir: str | Path, exported_dir: str | Path,
            int8_dir: str | Path, evaluations: dict[str, dict], data: dict[str, Any], settings: dict[str, Any],
            engine_dirs: list[str | Path] = (), inference_spec: str = "{}", serving: dict[str, Any] | None = None,
            int8_gate: str = "release int8", min_ap: float = 0.0) -> dict[str, Any]:
    """Assemble the release folder (models, calibration, metrics, resolved specs, serving configs,
    model card) and publish it with ``bpnet.release``; ``latest`` moves only once the release is
    complete, and only if the promotion rule still holds then. ``int8_gate`` is the INT8 gate's
    verdict ("release int8" or "hold: <why>"): on hold, no INT8 file is released."""
    import hashlib
    import os

    from bpnet.model.exported import read_exported
    from bpnet.release import EngineBuild, ServingOptions, new_release_id, publish_release, write_serving
    from bpnet.specs.inference import InferenceSpec
    from bpnet.specs.train import NormalizationParams

    retrained, exported, int8 = Path(retrained_dir), Path(exported_dir), Path(int8_dir)
    int8_ok = not int8_gate.startswith("hold")
    files = {RELEASE_MODEL: retrained / MODEL_FILE, RELEASE_UNPRUNED: Path(trained_dir) / MODEL_FILE,
             "model/" + TRAIN_SPEC_FILE: retrained / TRAIN_SPEC_FILE,
             "model/" + POSE_CONFIG_FILE: retrained / POSE_CONFIG_FILE,
             "onnx/bpnet_model.etlt": exported / EXPORTED_FILE, "onnx/bpnet_model.int8.etlt": int8 / EXPORTED_FILE,
             "onnx/" + EXPORT_SETTINGS_FILE: exported / EXPORT_SETTINGS_FILE,
             "calibration/calibration.bin": int8 / "calibration.bin",
             "calibration/calibration.tensorfile.npy": int8 / "calibration.tensorfile.npy"}
    if not int8_ok:
        files = {rel: src for rel, src in files.items() if rel not in INT8_FILES}
    engines = [EngineBuild.from_file(e) for d in engine_dirs for e in sorted(Path(d).glob("*.engine"))]
    engines = [e for e in engines if int8_ok or e.precision != "int8"]
    for engine in engines:
        files[f"engines/{engine.path.name}"] = engine.path
    missing = sorted(rel for rel, src in files.items() if not src.is_file() and rel != "model/" + POSE_CONFIG_FILE)
    if missing:
        raise FileNotFoundError(f"the release would be incomplete: missing {missing}")
    onnx_bytes, _ = read_exported(exported / EXPORTED_FILE, os.environ.get("BPNET_MODEL_KEY"))
    decoder = {k: v for k, v in _parse(inference_spec, "inference_spec").items()
               if k not in ("model_path", "train_spec")}  # the decoder settings; the paths were the pipeline's
    train_spec = yaml.safe_load((retrained / TRAIN_SPEC_FILE).read_text()) or {}
    norm = NormalizationParams.model_validate((train_spec.get("dataloader") or {}).get("normalization_params") or {})
    digest = hashlib.sha256((retrained / MODEL_FILE).read_bytes()).hexdigest()
    release_id = new_release_id(digest)
    int8_note = int8_gate if not int8_ok else f"released ({int8_gate})"
    with workdir() as work:
        root = work / release_id
        for relative, src in files.items():
            if src.is_file():
                (root / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, root / relative)
        deploy = write_serving(root, f"{release_root.rstrip('/')}/{release_id}", release_id, onnx_bytes, engines,
                               InferenceSpec.model_validate(decoder), norm,
                               "calibration/calibration.bin" if int8_ok else None, ServingOptions(**(serving or {})))
        (root / "metrics.json").write_text(json.dumps(evaluations, indent=2) + "\n")
        sizes = {"parameters": evaluations.get("retrained", {}).get("parameters", "-"),
                 **{f"{rel} bytes": (root / rel).stat().st_size for rel in sorted(files) if (root / rel).is_file()}}
        (root / "MODEL_CARD.md").write_text(_model_card(release_id, data, settings, evaluations, sizes, int8_note,
                                                        deploy))
        return publish_release(root, release_root, release_id, evaluations.get("retrained", {}), min_ap,
                               metadata={"evaluations": evaluations, "int8": int8_note, **deploy})
