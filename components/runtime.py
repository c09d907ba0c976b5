"""What the components do when they run: KFP artifact folders and parameters <-> ``bpnet`` runs.

A component body is one call into this module, which (1) lays spec text passed as a pipeline
parameter over the artifact folders it was handed (binding the spec's data/model paths to them),
(2) runs the ``bpnet`` command line on them, exactly as a user would, and (3) returns the figures
that become artifact metadata. There is no ML logic here: a step does what ``bpnet <sub_task>``
does, so the CLI, ``make run`` and a Kubeflow run cannot drift apart.

Artifact layouts (the contract between steps):

- Dataset: ``raw/`` (the fetched dataset, masks added by conversion), ``dataset_spec.json`` (the
  dataset spec with ``root_directory_path: raw``), ``records/{train,val}-fold-NNN-of-NNN`` with
  their ``-manifest.json``.
- Model: the ``bpnet train`` results folder (``bpnet_model.tlt``, ``train_spec.resolved.yaml``,
  ``train_summary.json``, checkpoints, events).
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
SPLITS = {"train": "train", "val": "test"}  # record prefix -> dataset_convert mode


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
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="bpnet-step-"))
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


def dataset_convert(dataset_uri: str, dataset_spec: str, out_dir: str | Path, generate_masks: bool = True,
                    num_shards: int = 1) -> dict[str, Any]:
    """Fetch the raw dataset (s3:// prefix or folder) into ``out_dir/raw`` and convert both splits."""
    from bpnet.storage import fetch_tree

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    spec = _parse(dataset_spec, "dataset_spec")
    log.info("fetching %s", dataset_uri)
    files = fetch_tree(dataset_uri, out / RAW_DIR)
    spec["root_directory_path"] = RAW_DIR  # relative to dataset_spec.json: the artifact moves between pods
    spec_path = out / DATASET_SPEC
    spec_path.write_text(json.dumps(spec, indent=2) + "\n")
    masks = ["--generate_masks"] if generate_masks else []
    for prefix, mode in SPLITS.items():
        run_bpnet("dataset_convert", "-d", str(spec_path), "-o", str(out / RECORDS_DIR / prefix), "-m", mode,
                  "--num_shards", str(num_shards), *masks)
    train, val = (record_summary(out, p) for p in SPLITS)
    return {"source": dataset_uri, "files": files, "train_samples": train["samples_written"],
            "train_images": train["images_written"], "val_samples": val["samples_written"],
            "val_images": val["images_written"]}


def bind_train_spec(train_spec: str, pose_config: str, dataset_dir: str | Path, work: Path) -> Path:
    """The train spec with its data paths pointed into the Dataset artifact (and the inlined pose
    config, if given, written beside it); every other field is the user's."""
    data = _parse(train_spec, "train_spec")
    dataset = Path(dataset_dir)
    loader = data.setdefault("dataloader", {})
    config = loader.setdefault("dataset_config", {})
    records = str(dataset / RECORDS_DIR)
    config.update(root_data_path=str(dataset / RAW_DIR), train_records_folder_path=records,
                  val_records_folder_path=records,
                  train_records_path=record_summary(dataset, "train")["shards"],
                  val_records_path=record_summary(dataset, "val")["shards"])
    config["dataset_specs"] = {name: str(dataset / DATASET_SPEC) for name in (config.get("dataset_specs") or
                                                                              {"coco": None})}
    if pose_config.strip():
        pose_path = work / "pose_config.json"
        pose_path.write_text(pose_config)
        loader.setdefault("pose_config", {})["pose_config_path"] = str(pose_path)
    return _write_yaml(data, work / "train_spec.yaml")


def train(dataset_dir: str | Path, train_spec: str, pose_config: str, model_dir: str | Path,
          gpus: int = 1) -> dict[str, Any]:
    """``bpnet train`` into the Model artifact folder; returns the training summary."""
    model = Path(model_dir)
    with workdir() as work:
        spec = bind_train_spec(train_spec, pose_config, dataset_dir, work)
        run_bpnet("train", "-e", str(spec), "-r", str(model), "--gpus", str(max(1, gpus)))
    summary = json.loads((model / "train_summary.json").read_text())
    keep = ("epochs", "steps", "parameters", "gflops_per_image", "images_per_second", "first_loss", "last_loss")
    return {k: summary[k] for k in keep if summary.get(k) is not None}


def bind_inference_spec(inference_spec: str, model_dir: str | Path, work: Path) -> Path:
    """The inference spec with ``model_path`` and ``train_spec`` taken from the Model artifact."""
    data = _parse(inference_spec, "inference_spec")
    data.update(model_path=str(Path(model_dir) / MODEL_FILE), train_spec=str(Path(model_dir) / TRAIN_SPEC_FILE))
    return _write_yaml(data, work / "infer_spec.yaml")


def _annotated(results: Path, limit: int) -> list[Path]:
    return sorted((results / "images_annotated").glob("*.jpg"))[:limit]


def evaluate(dataset_dir: str | Path, model_dir: str | Path, inference_spec: str, results_dir: str | Path,
             report_path: str | Path, report_images: int = 4) -> dict[str, Any]:
    """``bpnet evaluate`` on the Dataset's val split; writes an HTML report; returns the metrics."""
    from bpnet.report import html_report

    results = Path(results_dir)
    with workdir() as work:
        spec = bind_inference_spec(inference_spec, model_dir, work)
        run_bpnet("evaluate", "-i", str(spec), "-d", str(Path(dataset_dir) / DATASET_SPEC), "-r", str(results),
                  "--num_visualizations", str(report_images))
    metrics = json.loads((results / "metrics.json").read_text())
    scores = {k: v for k, v in metrics.items() if isinstance(v, float)}
    Path(report_path).write_text(html_report(
        "BodyPoseNet evaluation", {"COCO keypoints (person), val split": scores,
                                   "Counts": {"images": metrics["images"], "detections": metrics["detections"]}},
        _annotated(results, report_images)))
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
