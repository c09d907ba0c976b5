"""Step folders as the next step's input: specs bound to them, the raw data split between them, what
a step copies along.

A pipeline hands folders from step to step (``bpnet.layout``: a Dataset folder per split, a Model
folder, an exported Model folder). What a step needs from a folder it was handed, other than the
file itself, is decided here, so the KFP adapters (``components.runtime``) only map artifacts to
these calls and a folder laid out by the CLI reads the same way.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from bpnet.artifacts import (
    MANIFEST_NAME,
    atomic_write_text,
    build_manifest,
    read_manifest,
    verify_files,
    write_manifest,
)
from bpnet.layout import (
    CALIBRATION_CACHE,
    CALIBRATION_IMAGES_DIR,
    CALIBRATION_TENSORFILE,
    DATASET_SPEC,
    EXPORT_SETTINGS_FILE,
    EXPORTED_FILE,
    MODEL_FILE,
    POSE_CONFIG_FILE,
    RAW_DIR,
    RECORDS_DIR,
    SDK_CALIBRATION_CACHE,
    SDK_EXPORTED_FILE,
    TRAIN_SPEC_FILE,
)
from bpnet.settings import CalibrationSettings, ConvertSettings, ExportCalibrationSettings
from bpnet.specs import DatasetSpec, InferenceSpec, TrainSpec, default_path_context, load_spec

log = logging.getLogger(__name__)

SPLITS = {"train": ("train", "train_data"), "val": ("test", "test_data")}
"""A Dataset folder per split: its record prefix -> (the convert mode, the dataset spec's section)."""


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


def load_bound(data: dict[str, Any], model: type, dest: Path, check_inputs: bool = False):
    """A bound spec: ``data`` written as the spec file ``dest`` (JSON or YAML, by its suffix) and
    loaded from there (so it is checked like any spec file, and paths resolve beside it)."""
    text = json.dumps(data, indent=2) + "\n" if dest.suffix == ".json" else yaml.safe_dump(data, sort_keys=False)
    atomic_write_text(dest, text)
    return load_spec(dest, model, default_path_context(dest, check_inputs=check_inputs))


def record_summary(dataset_dir: str | Path, prefix: str) -> dict[str, Any]:
    """The dataset_convert summary of one record set of a Dataset folder (shard names, samples
    written ...), from its manifest: what a later step, which has only the folder, reads."""
    from bpnet.data.convert import output_paths

    manifest, _ = output_paths(Path(dataset_dir) / RECORDS_DIR / prefix)
    return read_manifest(manifest)["metadata"]["summary"]


def _split_paths(spec: dict[str, Any], key: str) -> list[str]:
    split = spec.get(key) or {}
    return [split[k] for k in ("images_root_dir_path", "mask_root_dir_path", "annotation_root_dir_path")
            if split.get(k)]


def convert_to_split_folders(dataset_uri: str, spec: dict[str, Any], folders: dict[str, Path],
                             settings: ConvertSettings) -> dict[str, Any]:
    """Fetch the raw dataset (s3:// prefix or folder), convert both splits (``settings``' mode is
    each split's), and leave each split in its own Dataset folder (``folders``, by ``SPLITS``
    prefix: ``raw/`` with that split's files only, ``dataset_spec.json`` rooted at it,
    ``records/``), so that a step reading the val split fetches nothing else."""
    from bpnet.steps.dataset_convert import dataset_convert
    from bpnet.storage import open_store

    spec = {**spec, "root_directory_path": RAW_DIR}  # relative to dataset_spec.json: folders move between pods
    with workdir(next(iter(folders.values())).parent) as work:  # beside the outputs: same filesystem
        log.info("fetching %s", dataset_uri)
        files = open_store(dataset_uri).mirror(work / RAW_DIR)
        dataset = load_bound(spec, DatasetSpec, work / DATASET_SPEC, check_inputs=True)
        converted = {}
        for prefix, (mode, _) in SPLITS.items():
            converted[prefix] = dataset_convert(dataset, work / RECORDS_DIR / prefix,
                                                settings.model_copy(update={"mode": mode}))
            for line in converted[prefix].summary.lines():
                log.info("%s: %s", prefix, line)
        shared = set(_split_paths(spec, "train_data")) & set(_split_paths(spec, "test_data"))
        for prefix, (_, key) in SPLITS.items():
            _fill_split_folder(work, folders[prefix], prefix, _split_paths(spec, key), shared)
    train, val = (converted[p] for p in SPLITS)
    return {"source": dataset_uri, "files": files, "train_samples": train.samples, "train_images": train.images,
            "val_samples": val.samples, "val_images": val.images}


def _fill_split_folder(work: Path, out: Path, prefix: str, relatives: list[str], shared: set[str]) -> None:
    """The split's records and raw files moved from ``work`` into ``out`` (files both splits use
    are copied)."""
    (out / RECORDS_DIR).mkdir(parents=True, exist_ok=True)
    shutil.copy2(work / DATASET_SPEC, out / DATASET_SPEC)
    for record in (work / RECORDS_DIR).glob(f"{prefix}-*"):
        shutil.move(record, out / RECORDS_DIR / record.name)
    for relative in relatives:
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


def bind_train_spec(spec: dict[str, Any], pose_config: str, dataset_dir: str | Path, model_dir: str | Path,
                    pretrained: str | Path | None = None, val_dir: str | Path | None = None) -> dict[str, Any]:
    """The train spec with its data paths pointed into the train Dataset folder; the inlined pose
    config (if given) is written into the Model folder, so the model's resolved spec stays valid.
    ``pretrained`` (retraining, warm starts) sets ``pretrained_weights`` to that model file with
    ``load_graph: true``. ``val_dir`` (the val Dataset folder) names the dataset spec whose test
    split the learning curve scores (bpnet.curves); the trainer reads nothing else through
    ``dataset_specs``. Every other field is the user's."""
    data = json.loads(json.dumps(spec))  # a copy: the caller's mapping stays as given
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
    return data


def bind_inference_spec(spec: dict[str, Any], model_dir: str | Path) -> dict[str, Any]:
    """The inference spec with ``model_path`` and ``train_spec`` taken from a Model folder (its
    exported model when it holds one). How an exported model is fed is its export.json's
    (``bpnet.steps._predictor``), as for the CLI."""
    model = Path(model_dir).absolute()  # the spec is read from another folder
    exported = model / EXPORTED_FILE
    return {**spec, "model_path": str(exported if exported.is_file() else model / MODEL_FILE),
            "train_spec": str(model / TRAIN_SPEC_FILE)}


def train_spec_for(spec: dict[str, Any], pose_config: str, dataset_dir: str | Path, model_dir: str | Path,
                   work: Path, pretrained_dir: str | Path | None = None, warm_start: str = "",
                   val_dir: str | Path | None = None, own_shards: bool = False) -> tuple[TrainSpec, str | None]:
    """The train spec of a training into ``model_dir``, bound to its folders (``bind_train_spec``)
    and starting from the pruned Model folder ``pretrained_dir`` (the retrain), else from the
    latest release under the release root ``warm_start`` if there is one yet
    (``bpnet.release.warm_start``), else from the spec. Returns it and the release it starts from.
    ``own_shards``: the Dataset folder holds only this worker's shards (``bpnet.data.partition``),
    so the spec's inputs are not checked to exist here; the trainer checks the shards it reads
    against the manifest."""
    from bpnet.release import warm_start as fetch_warm_start

    pretrained = Path(pretrained_dir) / MODEL_FILE if pretrained_dir is not None else None
    release = fetch_warm_start(warm_start, work / MODEL_FILE) if warm_start else None
    if release:
        pretrained = work / MODEL_FILE
    bound = bind_train_spec(spec, pose_config, dataset_dir, model_dir, pretrained, val_dir)
    return load_bound(bound, TrainSpec, work / "train_spec.yaml", check_inputs=not own_shards), release


def inference_spec_for(spec: dict[str, Any], model_dir: str | Path, work: Path) -> InferenceSpec:
    """The inference spec of an evaluation or inference of the model in ``model_dir``, bound to it."""
    return load_bound(bind_inference_spec(spec, model_dir), InferenceSpec, work / "infer_spec.yaml")


def copy_spec_files(src: Path, dest: Path, *names: str) -> None:
    """The resolved train spec and pose config (and ``names``) of a Model folder into the next one:
    a pruned, exported or calibrated model was trained with them."""
    for name in (TRAIN_SPEC_FILE, POSE_CONFIG_FILE, *names):
        if (src / name).is_file():
            shutil.copy2(src / name, dest / name)


def export_folder(model_dir: Path, out: Path, settings: ExportCalibrationSettings):
    """The exported Model folder of a Model folder: the standard export (fp32 ONNX, encrypted;
    the step writes ``export.json`` beside it), the SDK-compatible one (what DeepStream engines are
    built from) and the resolved spec files. Returns the standard export's result."""
    from bpnet.steps.export import export

    out.mkdir(parents=True, exist_ok=True)
    norm = normalization(model_dir)
    exported = export(model_dir / MODEL_FILE, out / EXPORTED_FILE, None, settings, norm)
    export(model_dir / MODEL_FILE, out / SDK_EXPORTED_FILE, None, settings, norm, sdk_compatible=True)
    copy_spec_files(model_dir, out)
    return exported


def split_images_path(spec: dict[str, Any], prefix: str = "train") -> str:
    """The image folder of a split (``SPLITS`` prefix) relative to the raw dataset's root: where
    the images are under the dataset URI dataset_convert fetches. The spec is checked as
    dataset_convert checks it (inputs aside: they are not fetched)."""
    _, key = SPLITS[prefix]
    with workdir() as work:
        dataset = load_bound({**spec, "root_directory_path": RAW_DIR}, DatasetSpec, work / DATASET_SPEC)
    return getattr(dataset, key).images_root_dir_path


def fill_calibration_folder(names: Iterable[str], count: int, fetch: Callable[[str], Path], out: Path,
                            where: str) -> list[str]:
    """The calibration-image folder (``bpnet.layout``: ``images/`` + manifest): the ``count``
    images of ``names`` (an image folder's file names) that calibration takes from that folder
    (``bpnet.deploy.calibration.calibration_set``), each got with ``fetch`` (a local path to move
    into ``out``: the caller's download or copy); the manifest comes last. Returns their names."""
    from bpnet.deploy.calibration import calibration_set

    images = out / CALIBRATION_IMAGES_DIR
    (out / MANIFEST_NAME).unlink(missing_ok=True)  # unfinished until the manifest is written again
    shutil.rmtree(images, ignore_errors=True)
    images.mkdir(parents=True)
    taken = []
    for path, _ in calibration_set(names, count, fetch, where):
        shutil.move(path, images / path.name)
        taken.append(path.name)
    write_manifest(out / MANIFEST_NAME, build_manifest(out, [f"{CALIBRATION_IMAGES_DIR}/{n}" for n in taken],
                                                       metadata={"source": where, "images": taken}))
    log.info("calibration images: %d from %s", len(taken), where)
    return taken


def calibration_images_dir(folder: Path) -> Path:
    """The images of a calibration-image folder, once its manifest vouches for them."""
    verify_files(folder, read_manifest(folder / MANIFEST_NAME))
    return folder / CALIBRATION_IMAGES_DIR


def calibrate_folder(exported_dir: Path, image_dir: Path, out: Path, settings: ExportCalibrationSettings):
    """The INT8 Model folder of an exported Model folder, calibrated on the images of
    ``image_dir`` (the pipeline's calibration-image folder, ``calibration_images_dir``):
    tensorfile, TensorRT calibration cache, the ONNX Runtime QDQ INT8 model, the cache fitted to
    the SDK-compatible export (for DeepStream engines) and export.json. Returns the calibration's
    and the fitting's results."""
    from bpnet.deploy.export import CalibrationData
    from bpnet.steps.calibrate import calibrate, fit_calibration

    out.mkdir(parents=True, exist_ok=True)
    calibration = CalibrationSettings(**settings.model_dump(include=set(CalibrationSettings.model_fields)))
    data = CalibrationData(str(image_dir), str(out / CALIBRATION_TENSORFILE), str(out / CALIBRATION_CACHE),
                           calibration)
    calibrated = calibrate(exported_dir / EXPORTED_FILE, out / EXPORTED_FILE, None, data,
                           normalization(exported_dir))
    fitted = fit_calibration(exported_dir / EXPORTED_FILE, exported_dir / SDK_EXPORTED_FILE, calibrated.cache,
                             out / SDK_CALIBRATION_CACHE, None)
    copy_spec_files(exported_dir, out, EXPORT_SETTINGS_FILE)
    return calibrated, fitted


def normalization(model_dir: Path):
    """The normalization the model in a Model folder was trained with (its resolved train spec's)."""
    spec_file = model_dir / TRAIN_SPEC_FILE
    return load_spec(spec_file, TrainSpec, default_path_context(spec_file)).dataloader.normalization_params
