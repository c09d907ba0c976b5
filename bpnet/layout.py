"""The file names inside each step's output folder, declared once.

A step's folder is a contract: the CLI writes it, the next step (or pipeline component) reads
it, a release copies from it. Every module that writes or reads one of these names imports it
from here, so a rename cannot leave a reader behind.

- Dataset (pipeline artifact, one per split): ``raw/`` (images, masks, annotations),
  ``dataset_spec.json`` (``root_directory_path: raw``), ``records/<prefix>-fold-NNN-of-NNN`` and
  ``records/<prefix>-manifest.json``.
- Calibration images (pipeline artifact): ``images/`` holding exactly the images INT8 calibration
  takes from the train split (``cal_batches x cal_batch_size``, bpnet.deploy.calibration's rule),
  then ``MANIFEST.json``: calibration reads this small artifact, not the whole train split.
- Model (``train`` results folder, and what prune/export/calibrate write beside their model):
  ``bpnet_model.tlt``, ``architecture.json``, ``train_spec.resolved.yaml``, ``pose_config.json``,
  ``train_summary.json``, learning curve, checkpoints, ``MANIFEST.json`` (bpnet.artifacts).
- Exported model: ``bpnet_model.etlt`` and ``export.json`` (how it is fed: input shape, padding;
  written by the export step beside the exported file, CLI and pipeline alike); in the pipeline
  also ``bpnet_model.sdk.etlt``, the SDK-compatible export DeepStream engines are built from.
- Engine: ``<target>.engine`` and its build record ``<target>.engine.json`` (target, precision,
  max batch size, what serves it, the TensorRT/CUDA/L4T/JetPack versions, CPU architecture and
  node it was built on), written by the build step after the engine; no engine, no record.
- INT8: ``bpnet_model.etlt`` (QDQ), ``calibration.bin``, ``calibration.tensorfile.npy``; in the
  pipeline also ``calibration.sdk.bin``, that cache fitted to the SDK-compatible export.
- Evaluation / inference results: ``metrics.json`` / ``detection.json``,
  ``inference_spec.resolved.yaml``, ``images_annotated/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # names only: the layout imports nothing of the settings at run time
    from bpnet.settings import Precision, Server

MODEL_FILE = "bpnet_model.tlt"
ARCHITECTURE_FILE = "architecture.json"
TRAIN_SPEC_FILE = "train_spec.resolved.yaml"
POSE_CONFIG_FILE = "pose_config.json"
TRAIN_SUMMARY_FILE = "train_summary.json"
LABEL_SAMPLES_DIR = "label_samples"

EXPORTED_FILE = "bpnet_model.etlt"
EXPORT_SETTINGS_FILE = "export.json"
EXPORTED_MODE = "pad_image_input"  # an exported model fixes its input size: images are fitted and padded
CALIBRATION_CACHE = "calibration.bin"
CALIBRATION_TENSORFILE = "calibration.tensorfile.npy"
SDK_EXPORTED_FILE = "bpnet_model.sdk.etlt"
SDK_CALIBRATION_CACHE = "calibration.sdk.bin"

ENGINE_SUFFIX = ".engine"
ENGINE_RECORD_SUFFIX = ".engine.json"  # <target>.engine.json beside <target>.engine

METRICS_FILE = "metrics.json"
DETECTIONS_FILE = "detection.json"
INFERENCE_SPEC_FILE = "inference_spec.resolved.yaml"
ANNOTATED_DIR = "images_annotated"

DATASET_SPEC = "dataset_spec.json"
RAW_DIR = "raw"
RECORDS_DIR = "records"
CALIBRATION_IMAGES_DIR = "images"


def engine_sources(serves: Server, precision: Precision) -> tuple[str, str | None]:
    """(model file in the exported folder, calibration cache in the INT8 folder or None) an engine
    serving ``serves`` is built from: DeepStream's bodypose2d app parses the SDK-compatible model,
    Triton's decoder the standard one; only INT8 engines read a cache."""
    sdk = serves == "deepstream"
    cache = (SDK_CALIBRATION_CACHE if sdk else CALIBRATION_CACHE) if precision == "int8" else None
    return (SDK_EXPORTED_FILE if sdk else EXPORTED_FILE), cache


def engine_target(engine_file: str | Path) -> str:
    """The target an engine file is for: its name without ``.engine``."""
    return Path(engine_file).name.removesuffix(ENGINE_SUFFIX)


def engine_record(engine_file: str | Path) -> Path:
    """The build record beside an engine: ``<target>.engine`` -> ``<target>.engine.json``."""
    return Path(engine_file).with_name(engine_target(engine_file) + ENGINE_RECORD_SUFFIX)


def prune_report(model_file: str | Path) -> Path:
    """The report ``prune`` writes beside the pruned model: ``<model>.json``."""
    return Path(f"{model_file}.json")

