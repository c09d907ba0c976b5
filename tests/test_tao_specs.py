"""TAO's own bpnet files (vendored unmodified in tests/data/tao/) load, and each experiment spec trains.

The training case changes only what cannot stay as TAO wrote it on this machine: the data paths
(TAO's point at NVIDIA's file servers; here the session's tiny dataset), the input size (256x256
-> 64x64 with target_shape 8x8, so the full model runs in seconds on a CPU), the width
(``width_multiplier`` 0.125, a project extension), ``pretrained_weights`` (TAO's VGG19 file is not
here) and ``num_epoch``/``checkpoint_n_epoch`` (one epoch). The pose config path is remapped with
the loader's path map, not edited. Everything else, the model class, ``add_final_c128_conv``, the
schedule and the focal-loss section included, is TAO's.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from bpnet.cli import main as cli_main
from bpnet.model.io import architecture_of, load_model
from bpnet.model.optimizer import ExponentialDecay, SoftstartAnnealing, make_schedule
from bpnet.specs import DatasetSpec, InferenceSpec, PathContext, TrainSpec, load_spec
from bpnet.specs.train import ExponentialDecaySchedule, LearningRateSchedule
from bpnet.train import train
from tests.conftest import REPO

TAO = REPO / "tests" / "data" / "tao"
EXPERIMENT_SPECS = ("experiment_spec.yaml", "experiment_spec_coco.yaml", "experiment_spec_coco_4gpus.yaml",
                    "experiment_spec_coco_8gpus.yaml")
# TAO's specs name files by their place in TAO's source tree.
TAO_PATHS = PathContext(root=TAO, path_map=(
    ("nvidia_tao_tf1/cv/bpnet/dataloaders/pose_configurations", str(TAO)),
    ("nvidia_tao_tf1/cv/bpnet/dataio/dataset_specs", str(TAO)),
    ("nvidia_tao_tf1/cv/bpnet/experiment_specs", str(TAO)),
))
EXPECTED = {  # what each file says: class, stages, schedule, regularization
    "experiment_spec.yaml": ("BpNetLiteModel", 3, LearningRateSchedule, "l1"),
    "experiment_spec_coco.yaml": ("BpNetModel", 3, ExponentialDecaySchedule, "l2"),
    "experiment_spec_coco_4gpus.yaml": ("BpNetLiteModel", 3, LearningRateSchedule, "l1"),
    "experiment_spec_coco_8gpus.yaml": ("BpNetLiteModel", 2, LearningRateSchedule, "l1"),
}


@pytest.mark.parametrize("name", EXPERIMENT_SPECS)
def test_each_experiment_spec_loads_unmodified(name):
    spec = load_spec(TAO / name, TrainSpec, TAO_PATHS)
    class_name, stages, schedule, regularization = EXPECTED[name]
    assert (spec.model.class_name, spec.model.stages, spec.model.regularization_type) == (
        class_name, stages, regularization)
    assert isinstance(spec.optimizer.learning_rate_schedule, schedule)
    assert spec.model.backbone_attributes.add_final_c128_conv is False
    focal = spec.loss.focal_loss_params
    assert (focal.use_focal_loss, focal.alpha, focal.beta, focal.bkg_thresh, focal.gamma) == (
        False, 0.1, 0.02, 0.01, 1.0)
    assert spec.loss.focal is None  # present but off in every TAO spec
    assert spec.dataloader.pose_config.pose_config_path == str(TAO / "bpnet_18joints.json")
    assert spec.dataloader.dataset_config.dataset_specs["coco"] == str(TAO / "coco_spec.json")


def test_the_coco_spec_schedule_is_taos():
    schedule = load_spec(TAO / "experiment_spec_coco.yaml", TrainSpec, TAO_PATHS).optimizer.learning_rate_schedule
    assert (schedule.learning_rate, schedule.decay_epochs, schedule.decay_rate, schedule.min_learning_rate,
            schedule.staircase, schedule.decay_steps) == (2e-5, 17, 0.333, 8.18938e-08, True, None)


def test_infer_default_loads_and_names_the_coco_train_spec():
    spec = load_spec(TAO / "infer_default.yaml", InferenceSpec, TAO_PATHS)
    assert spec.train_spec == str(TAO / "experiment_spec_coco.yaml")
    assert list(spec.input_shape) == [256, 256] and spec.keep_aspect_ratio_mode == "adjust_network_input"
    assert spec.heatmap_threshold == 0.1 and spec.paf_threshold == 0.05 and list(spec.scales) == [0.5, 1.0, 1.5, 2.0]
    assert load_spec(spec.train_spec, TrainSpec, TAO_PATHS).model.class_name == "BpNetModel"


def test_coco_dataset_spec_loads():
    spec = load_spec(TAO / "coco_spec.json", DatasetSpec, TAO_PATHS)
    assert spec.dataset == "coco" and spec.duplicate_data_with_each_person_as_center is True
    assert spec.data_filtering_params.min_acceptable_kpts == 5


def tiny_copy(name: str, dest: Path, synth_dir: Path, records: Path, **changes) -> Path:
    """TAO's spec with only the overrides the module docstring lists (plus ``changes``, dotted keys)."""
    data = yaml.safe_load((TAO / name).read_text())
    overrides = {
        "num_epoch": 1, "checkpoint_n_epoch": 1, "pretrained_weights": None,
        "dataloader.image_config.image_dims.height": 64, "dataloader.image_config.image_dims.width": 64,
        "dataloader.pose_config.target_shape": [8, 8],
        "dataloader.dataset_config.root_data_path": str(synth_dir),
        "dataloader.dataset_config.train_records_folder_path": str(records),
        "dataloader.dataset_config.train_records_path": ["train-fold-000-of-001"],
        "dataloader.dataset_config.val_records_folder_path": None,
        "dataloader.dataset_config.val_records_path": [],
        "dataloader.dataset_config.dataset_specs": {"coco": str(synth_dir / "coco_spec.json")},
        "model.width_multiplier": 0.125,
        **changes,
    }
    for dotted, value in overrides.items():
        node = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    dest.write_text(yaml.safe_dump(data))
    return dest


# One lite and one full model in the normal suite; the 4- and 8-GPU variants (lite, soft start, like
# experiment_spec.yaml) are `slow`: each run costs 15-40 s of CPU, most of it the first step's tracing.
TRAIN_CASES = ["experiment_spec.yaml", "experiment_spec_coco.yaml",
               *(pytest.param(n, marks=pytest.mark.slow) for n in EXPERIMENT_SPECS[2:])]


@pytest.mark.parametrize("name", TRAIN_CASES)
def test_each_experiment_spec_trains_on_tiny_data(name, synth_dir, converted, tmp_path):
    spec = load_spec(tiny_copy(name, tmp_path / name, synth_dir, converted), TrainSpec, TAO_PATHS)
    class_name, stages, schedule, _ = EXPECTED[name]
    expected_schedule = ExponentialDecay if schedule is ExponentialDecaySchedule else SoftstartAnnealing
    assert isinstance(make_schedule(spec.optimizer.learning_rate_schedule, 100, 10), expected_schedule)
    result = train(spec, tmp_path / "run", key="tao")
    assert result.steps == result.steps_per_epoch >= 1
    assert math.isfinite(result.first_loss) and math.isfinite(result.last_loss)
    arch = architecture_of(load_model(result.model_path, key="tao"))
    assert (arch.class_name, arch.stages, arch.add_final_c128_conv) == (class_name, stages, False)
    assert_infer_default_runs(result.model_path, synth_dir, tmp_path / "infer")


def assert_infer_default_runs(model: Path, synth_dir: Path, out: Path) -> None:
    """TAO's infer_default.yaml, unmodified, drives `bpnet inference` of the model just trained
    (its TAO-tree paths mapped, its model_path overridden by -m as TAO's -m does)."""
    image = sorted((synth_dir / "val2017").glob("*.jpg"))[0]
    args = ["inference", "-i", str(TAO / "infer_default.yaml"), "-m", str(model), "-k", "tao",
            "--input_type", "image", "--input", str(image), "--results_dir", str(out), "--spec_root", str(TAO)]
    for old, new in TAO_PATHS.path_map:
        args += ["--path_map", f"{old}={new}"]
    assert cli_main(args) == 0
    doc = json.loads((out / "detection.json").read_text())
    assert doc["errors"] == [] and [Path(i["image"]).name for i in doc["images"]] == [image.name]
    assert all(len(p["keypoints"]) == 18 for p in doc["images"][0]["people"])


def test_taos_coco_spec_trains_with_the_focal_loss_and_the_c128_conv(synth_dir, converted, tmp_path):
    """The two TAO switches its specs leave off, turned on: both change what is trained."""
    path = tiny_copy("experiment_spec_coco.yaml", tmp_path / "focal.yaml", synth_dir, converted,
                     **{"loss.focal_loss_params.use_focal_loss": True,
                        "model.backbone_attributes.add_final_c128_conv": True})
    spec = load_spec(path, TrainSpec, TAO_PATHS)
    assert spec.loss.focal is not None
    result = train(spec, tmp_path / "run", key="tao")
    assert math.isfinite(result.last_loss)
    model = load_model(result.model_path, key="tao")
    assert architecture_of(model).add_final_c128_conv and model.get_layer("backbone_c128_conv").filters == 16
