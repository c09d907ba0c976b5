"""A few real COCO images as a dataset of their own, converted, with an overfit train spec.

Shared by ``overfit_real.py`` (the AP benchmark), ``real_diagnosis.py`` (the figures of
docs/real_training.md) and the slow tests of tests/test_real_training.py, so all three measure
the same thing. The images come from a folder in COCO layout (``train2017/`` and
``annotations/person_keypoints_train2017.json``): the repository's tests/data/real_people (the
four 640x480 photos of ``MEMORISE_IDS``) or the 30 photos of ../shared/data/coco-mini-train
(beside the checkout; ``$BPNET_COCO_MINI`` names another folder).
Both splits of the dataset spec are the same images: the benchmark scores the images it trained on.

The overfit recipe (``overfit_spec``) is the demo's (BpNetLiteModel, 2 stages, Adam, from
scratch) with the changes docs/real_training.md measures the need for:

- ``geometry`` (``GEOMETRIES``): ``whole``, the picture inference makes of a 640x480 image (256 x
  344, ``keep_aspect_ratio_mode: adjust_network_input``; person-centric crops show each person at
  another scale and place), jittered by up to a stride, 10 degrees and 10% of scale: without any
  jitter (``exact``) the network memorises the pixel grid of the training warp, and inference's
  resize, 0.8% wider, samples another (section 7); ``guide``, the same whole picture with the
  guide's sample augmentation magnitudes (flips, 40 degrees, 40 px); ``augmented``, the guide's person-centric crops
  with its rotation, translation and flips, plus zoom (0.5..1.25 of the crop scale, so the
  whole-image scale is among the seen ones);
- no stage-wise LR multipliers (4x on the refinement stage and 2x on the backbone made Adam's
  first updates larger than the weights of the output layers), no L1;
- the plain masked L2 loss of every TAO spec, not TAO's focal L2: its rule counts a negative PAF
  component as background, so the PAFs of limbs pointing left or up are not learned from a zero
  prediction and the decoder cannot join those limbs (docs/real_training.md, section 4).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
REPO_IMAGES = REPO / "tests" / "data" / "real_people"
# The shared data folder beside the checkout (as CI lays it out); $BPNET_COCO_MINI overrides it.
SHARED_IMAGES = Path(os.environ.get("BPNET_COCO_MINI", REPO.parent / "shared" / "data" / "coco-mini-train"))
ANNOTATIONS = "annotations/person_keypoints_train2017.json"
# 640x480 photos with 1, 2, 5 and 1 labelled people, 55 to 356 px tall
MEMORISE_IDS = (85795, 188388, 451944, 531286)
WHOLE_DIMS = (256, 344)  # adjust_network_input of a 640x480 image at input height 256


def coco_root(root: Path | None = None, images: int = len(MEMORISE_IDS)) -> Path:
    """The folder the images come from: ``root``, else the repo's four photos when they are enough,
    else the shared coco-mini-train."""
    for candidate in (root, REPO_IMAGES if images <= len(MEMORISE_IDS) else None, SHARED_IMAGES):
        if candidate is not None and (candidate / ANNOTATIONS).is_file():
            return candidate
    raise FileNotFoundError(f"no COCO folder with {ANNOTATIONS}: give one")


def labelled_ids(source: Path, count: int, skip: tuple[int, ...] = ()) -> list[int]:
    """The first ``count`` images (by id) of ``source`` with a labelled person, ``skip`` first."""
    doc = json.loads((source / ANNOTATIONS).read_text())
    present = {i["id"] for i in doc["images"] if (source / "train2017" / i["file_name"]).is_file()}
    with_people = sorted({a["image_id"] for a in doc["annotations"]
                          if a.get("num_keypoints", 0) > 0 and not a.get("iscrowd")} & present)
    chosen = [i for i in skip if i in with_people] + [i for i in with_people if i not in skip]
    if len(chosen) < count:
        raise ValueError(f"{source}: {len(chosen)} images with labelled people, {count} asked for")
    return chosen[:count]


def make_subset(source: Path, image_ids: list[int] | tuple[int, ...], out: Path, each_person: bool = True) -> Path:
    """A COCO folder under ``out`` with only ``image_ids`` and a dataset spec (both splits = them;
    ``each_person``: a training sample centred on each person, else one per image); returns the
    dataset spec's path."""
    doc = json.loads((source / ANNOTATIONS).read_text())
    keep = set(image_ids)
    sub = dict(doc, images=[i for i in doc["images"] if i["id"] in keep],
               annotations=[a for a in doc["annotations"] if a["image_id"] in keep])
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    (out / "train2017").mkdir(exist_ok=True)
    (out / ANNOTATIONS).write_text(json.dumps(sub))
    for image in sub["images"]:
        shutil.copy(source / "train2017" / image["file_name"], out / "train2017" / image["file_name"])
    spec = json.loads((REPO / "specs" / "coco_spec.json").read_text())
    spec["root_directory_path"] = str(out)
    spec["train_data"]["annotation_root_dir_path"] = ANNOTATIONS
    spec["test_data"] = copy.deepcopy(spec["train_data"])
    spec["duplicate_data_with_each_person_as_center"] = each_person
    path = out / "coco_spec.json"
    path.write_text(json.dumps(spec, indent=1))
    return path


def bpnet(*args: str, **kwargs) -> subprocess.CompletedProcess:
    """Run the CLI (``bpnet <args>``) as a child process, output captured; raises on failure."""
    done = subprocess.run([sys.executable, "-m", "bpnet.cli", *args], capture_output=True, text=True, **kwargs)
    if done.returncode:
        raise RuntimeError(f"bpnet {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done


def convert(dataset_spec: Path, records: Path) -> None:
    """train records (with masks) and test records, as a user would make them."""
    bpnet("dataset_convert", "-d", str(dataset_spec), "-o", str(records / "train"), "-m", "train",
          "--generate_masks")
    bpnet("dataset_convert", "-d", str(dataset_spec), "-o", str(records / "val"), "-m", "test")


NO_DRAWS = {"flip_lr_prob": 0.0, "rotate_deg_max": 0.0, "rotate_deg_min": 0.0, "zoom_prob": 0.0,
            "translate_max_x": 0.0, "translate_min_x": 0.0, "translate_max_y": 0.0, "translate_min_y": 0.0}
GEOMETRIES = {  # name -> (input height and width, augmentation_config): docs/real_training.md, section 7
    # the picture inference makes of a 640x480 image, pixel for pixel the same every step
    "exact": (WHOLE_DIMS, {"spatial_augmentation_mode": "center_aug", "spatial_aug_params": NO_DRAWS}),
    # that picture jittered by a stride, +-10 degrees and +-10% scale: the network must learn the
    # people, not the pixel grid the training warp samples (inference's resize samples another)
    "whole": (WHOLE_DIMS, {"spatial_augmentation_mode": "center_aug", "spatial_aug_params": dict(
        NO_DRAWS, rotate_deg_max=10.0, rotate_deg_min=-10.0, zoom_prob=1.0, zoom_ratio_min=0.9, zoom_ratio_max=1.1,
        translate_max_x=8.0, translate_min_x=-8.0, translate_max_y=8.0, translate_min_y=-8.0)}),
    # the whole picture with the guide's sample augmentation magnitudes: flips, +-40 degrees, +-40 px
    "guide": (WHOLE_DIMS, {"spatial_augmentation_mode": "center_aug", "spatial_aug_params": dict(
        NO_DRAWS, flip_lr_prob=0.5, rotate_deg_max=40.0, rotate_deg_min=-40.0,
        translate_max_x=40.0, translate_min_x=-40.0, translate_max_y=40.0, translate_min_y=-40.0)}),
    # the guide's m1 spatial augmentation (person-centric crops), plus zoom toward the whole-image scale
    "augmented": ((256, 256), {"spatial_augmentation_mode": "person_centric", "spatial_aug_params": {
        "flip_lr_prob": 0.5, "rotate_deg_max": 40.0, "rotate_deg_min": -40.0,
        "zoom_prob": 1.0, "zoom_ratio_min": 0.8, "zoom_ratio_max": 2.0,
        "translate_max_x": 40.0, "translate_min_x": -40.0, "translate_max_y": 40.0, "translate_min_y": -40.0,
        "target_person_scale": 0.6}}),
}


def overfit_spec(dataset_spec: Path, records: Path, out: Path, *, geometry: str = "whole", num_epoch: int = 100,
                 batch_size: int = 4, width: float = 0.5, stages: int = 2, learning_rate: float = 1e-3,
                 stagewise: bool = False, l1: float = 0.0, soft_start: float = 0.05, focal: bool = False,
                 validate_every: int = 0, seed: int = 42, compute_dtype: str = "float32") -> Path:
    """The overfit recipe's train spec (see the module docstring); returns its path."""
    (height, width_px), augmentation = GEOMETRIES[geometry]
    spec = {
        "num_epoch": num_epoch, "checkpoint_n_epoch": num_epoch, "random_seed": seed, "log_every_n_secs": 60,
        "summary_every_n_steps": 0, "infrequent_summary_every_n_steps": 0,
        "validation_every_n_epoch": validate_every, "compute_dtype": compute_dtype,
        "use_stagewise_lr_multipliers": stagewise,
        "dataloader": {
            "batch_size": batch_size, "shuffle_buffer_size": 100,
            "image_config": {"image_dims": {"height": height, "width": width_px}},
            "pose_config": {"target_shape": [height // 8, width_px // 8],
                            "pose_config_path": str(REPO / "specs" / "bpnet_18joints.json")},
            "dataset_config": {"root_data_path": str(dataset_spec.parent), "train_records_folder_path": str(records),
                               "train_records_path": ["train-fold-000-of-001"],
                               "val_records_folder_path": str(records), "val_records_path": ["val-fold-000-of-001"],
                               "dataset_specs": {"coco": str(dataset_spec)}},
            "augmentation_config": augmentation,
        },
        "model": {"__class_name__": "BpNetLiteModel", "stages": stages, "width_multiplier": width,
                  "regularization_type": "l1", "kernel_regularization_factor": l1},
        "optimizer": {"__class_name__": "WeightedAdamOptimizer",
                      "learning_rate_schedule": {"soft_start": soft_start, "annealing": 0.7,
                                                 "base_learning_rate": learning_rate,
                                                 "min_learning_rate": learning_rate / 1000}},
        "loss": {"focal_loss_params": {"use_focal_loss": focal}},
    }
    path = out / "train.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def infer_spec(train_spec: Path, out: Path, height: int = WHOLE_DIMS[0]) -> Path:
    """The inference spec evaluate uses: the whole image at input height ``height``."""
    spec = {"train_spec": str(train_spec), "input_shape": [height, height],
            "keep_aspect_ratio_mode": "adjust_network_input", "output_stage_to_use": None,
            "output_upsampling_factor": [8, 8], "heatmap_threshold": 0.1, "paf_threshold": 0.05}
    path = out / "infer.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path
