"""One source per setting: the CLI flags, the run spec and the steps take their defaults from the
settings models of bpnet.settings (these tests fail when someone declares a default again)."""

from __future__ import annotations

import argparse
import inspect
from decimal import Decimal
from types import SimpleNamespace
from typing import get_args

import pytest
import yaml

from bpnet import settings
from bpnet.cli import build_parser
from bpnet.errors import SpecError, UsageError
from bpnet.specs.base import DEFAULT_INPUT_SHAPE
from bpnet.specs.inference import InferenceSpec
from pipelines import run_spec

# The guide's CLI defaults (tlt bpnet prune / export), written out once here as the reference.
GUIDE_PRUNE = {"normalizer": "max", "equalization_criterion": "union", "pruning_granularity": 8,
               "pruning_threshold": 0.1, "min_num_filters": 16, "excluded_layers": []}
GUIDE_CALIBRATION = {"cal_batches": 10, "cal_batch_size": 1}


def _actions(sub_task: str) -> dict[str, argparse.Action]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[sub_task]
    return {a.dest: a for a in sub._actions}


def test_the_settings_defaults_are_the_guides():
    assert settings.PruneSettings().model_dump() == GUIDE_PRUNE
    calibration = settings.CalibrationSettings()
    assert {k: getattr(calibration, k) for k in GUIDE_CALIBRATION} == GUIDE_CALIBRATION
    assert calibration.cal_method == "entropy"
    assert settings.ExportSettings().input_shape == (368, 368)


@pytest.mark.parametrize("sub_task, model", [("prune", settings.PruneSettings),
                                              ("dataset_convert", settings.ConvertSettings),
                                              ("export", settings.CalibrationSettings),
                                              ("calibrate", settings.CalibrationSettings),
                                              ("build_engine", settings.EngineSettings),
                                              ("train", settings.TrainSettings),
                                              ("evaluate", settings.EvaluateSettings),
                                              ("synth", settings.SynthSettings)])
def test_cli_flags_take_default_and_choices_from_the_settings_model(sub_task, model):
    actions = _actions(sub_task)
    for name, field in model.model_fields.items():
        action = actions[name]
        assert action.default == field.get_default(call_default_factory=True), (sub_task, name)
        choices = get_args(field.annotation)
        if action.choices is not None:
            assert tuple(action.choices) == choices, (sub_task, name)


def test_export_and_prune_flags_keep_their_tlt_names():
    prune = _actions("prune")
    assert prune["pruning_threshold"].option_strings == ["-pth", "--pruning_threshold"]
    assert prune["pruning_granularity"].option_strings == ["-pg", "--pruning_granularity"]
    assert _actions("export")["cal_batches"].option_strings == ["--batches"]
    assert _actions("build_engine")["max_workspace_size"].option_strings == ["-w", "--max_workspace_size"]


def _refusal(model, **values) -> str:
    """The message a settings model refuses ``values`` with (bpnet.settings.build's UsageError)."""
    with pytest.raises(UsageError) as caught:
        settings.build(model, **values)
    return str(caught.value).split(": ", 1)[1]


def _run_spec_refusal(tmp_path, section: str, field: str, value) -> str:
    """The message loading a run spec with ``section.field: value`` stops with (its value and expectation)."""
    from pipelines.arguments import load_run_spec
    from tests.conftest import cluster_spec

    with pytest.raises(SpecError) as caught:
        load_run_spec(cluster_spec(tmp_path, **{section: {field: value}}))
    [line] = [line for line in str(caught.value).splitlines() if f"{section}.{field}" in line]
    return line.split(f"{section}.{field}: ", 1)[1]


@pytest.mark.parametrize("section, field, model, value", [
    ("prune", "pruning_threshold", settings.PruneSettings, 1.5),
    ("export", "cal_batches", settings.ExportCalibrationSettings, 0),
    ("export", "input_shape", settings.ExportCalibrationSettings, [130, 128]),
    ("dataset", "num_shards", settings.ConvertSettings, 0),
])
def test_the_run_spec_refuses_what_the_library_refuses_with_its_message(tmp_path, section, field, model, value):
    assert _run_spec_refusal(tmp_path, section, field, value) == _refusal(model, **{field: value})


def test_the_run_spec_defaults_are_the_library_defaults():
    spec = run_spec.RunSpec(images={"gpu": "x", "jetson": "y"}, dataset={"uri": "s3://d/p"}, release={"root": "s3://r/p"},
                            specs={k: "x" for k in ("dataset", "train", "retrain", "inference")})
    assert spec.prune == settings.PruneSettings() and spec.export == settings.ExportCalibrationSettings()
    assert spec.engines.workspace_bytes == settings.EngineSettings().max_workspace_size
    assert spec.release.min_ap == settings.PromotionSettings().min_ap
    assert (spec.dataset.num_shards, spec.dataset.generate_masks) == (settings.ConvertSettings().num_shards, True)
    serving = spec.serving_options()  # what the release writes its serving files from
    assert serving == settings.ReleaseServing(**settings.ServingSettings().model_dump())
    assert (serving.plain_onnx, serving.accelerator_type) == (False, settings.NVIDIA_GPU)


def test_an_engine_target_is_checked_as_the_engine_settings_it_becomes():
    for field, value in (("max_batch_size", 0), ("dla_core", 2)):
        target = _refusal(settings.EngineTarget, name="t", pool="gpu", **{field: value})
        assert target == _refusal(settings.EngineSettings, **{field: value}), field
    target = settings.EngineTarget(name="t", pool="jetson", precision="int8", max_batch_size=4, dla_core=0)
    assert target.serves == "deepstream"  # the Jetson pool's default server
    assert target.settings(1 << 30) == settings.EngineSettings(data_type="int8", max_batch_size=4,
                                                               max_workspace_size=1 << 30, dla_core=0)


def test_every_input_size_is_checked_by_the_one_stride_rule(tmp_path):
    """The guide's 368x368 is the default of the export and the inference spec alike, and a size
    that is no multiple of the stride is refused with one message wherever it is given."""
    from bpnet.overrides import RunOverrides, resolve
    from bpnet.specs.train import ImageDims

    assert settings.ExportSettings().input_shape == InferenceSpec().input_shape == DEFAULT_INPUT_SHAPE == (368, 368)
    expected = _refusal(settings.ExportSettings, input_shape=(130, 128)).split(" — ", 1)[1]
    assert expected == "height and width must be positive multiples of the model stride 8"
    for model, values in ((InferenceSpec, {"input_shape": (130, 128)}), (ImageDims, {"height": 130})):
        assert _refusal(model, **values).split(" — ", 1)[1] == expected, model.__name__
    with pytest.raises(SpecError) as caught:
        resolve({role: {} for role in ("train", "retrain", "inference", "prune", "export")},
                RunOverrides(input_height=130), 0.0, [])
    assert str(caught.value).splitlines()[0] == f"input_height: 130 — {expected}"


def test_the_calibration_methods_are_the_literals():
    from bpnet.deploy.calibration import METHODS

    assert METHODS == get_args(settings.CalibrationMethod)


def test_a_bad_setting_names_its_field():
    with pytest.raises(UsageError) as caught:
        settings.build(settings.PruneSettings, pruning_threshold=1.5)
    assert caught.value.field == "pruning_threshold" and caught.value.exit_code == 2
    assert str(caught.value) == "pruning_threshold: 1.5 — expected less than or equal to 1"


@pytest.mark.parametrize("text, value", [("4", 4), (".5", Decimal("0.5")), ("0.5", Decimal("0.5")),
                                         ("500m", Decimal("0.5")), ("1.5Gi", 1536 * 2**20), ("512M", 512 * 10**6),
                                         ("2k", 2000), ("1e3", 1000), ("2E", 2 * 10**18), ("1Ei", 2**60)])
def test_quantities_are_kubernetes_quantities(text, value):
    assert settings.quantity_value(text) == value
    for model in (run_spec.StepSettings, settings.ServingSettings):
        assert model(cpu=text, memory=text).memory == text


@pytest.mark.parametrize("text", ["lots", "0", "0m", "-1", "1.5 Gi", "1K", "Gi", "1Gi ", "."])
def test_what_is_not_a_positive_quantity_is_refused_alike(text):
    for model in (run_spec.StepSettings, settings.ServingSettings):
        for name in ("cpu", "memory"):
            with pytest.raises(ValueError, match="expected a positive Kubernetes quantity"):
                model(**{name: text})


def test_the_pipeline_steps_get_the_run_spec_values(tmp_path):
    """What the DAG passes from the run spec reaches the steps as the run spec says: GPUs (train's
    and retrain's --gpus too), report_images, generate_masks, num_shards."""
    from kfp import compiler

    from pipelines.arguments import load_run_spec, pipeline_arguments
    from pipelines.dag import build_pipeline
    from tests.conftest import cluster_spec

    spec = load_run_spec(cluster_spec(tmp_path, steps={"train": {"gpus": 3}, "retrain": {"gpus": 0}},
                                      report_images=7, dataset={"num_shards": 5, "generate_masks": False}))
    compiler.Compiler().compile(build_pipeline(spec, pipeline_arguments(spec)), str(tmp_path / "p.yaml"))
    pipeline = next(yaml.safe_load_all((tmp_path / "p.yaml").read_text()))
    tasks, inputs = pipeline["root"]["dag"]["tasks"], pipeline["root"]["inputDefinitions"]["parameters"]
    assert [tasks[t]["inputs"]["parameters"]["gpus"]["runtimeValue"]["constant"] for t in ("train", "retrain")] == [
        3, 0]
    executors = pipeline["deploymentSpec"]["executors"]
    assert executors["exec-train"]["container"]["resources"]["accelerator"]["resourceCount"] == "3"
    assert "accelerator" not in executors["exec-retrain"]["container"].get("resources", {})
    assert (inputs["report_images"]["defaultValue"], inputs["num_shards"]["defaultValue"],
            inputs["generate_masks"]["defaultValue"]) == (7, 5, False)
    for task in ("evaluate", "inference"):
        assert tasks[task]["inputs"]["parameters"]["report_images"] == {"componentInputParameter": "report_images"}


def test_cli_defaults_come_from_the_library():
    from bpnet.data.synth import generate
    from bpnet.model.exported import HEAT_NAME, PAF_NAME

    # the guide's two workspace defaults: export 2 GiB, tlt-converter (build_engine) 1 GiB
    assert _actions("export")["max_workspace_size"].default == settings.EXPORT_MAX_WORKSPACE == 2 * (1 << 30)
    assert (_actions("build_engine")["max_workspace_size"].default ==
            settings.EngineSettings.model_fields["max_workspace_size"].default == 1 << 30)
    assert _actions("build_engine")["outputs"].default.split(",") == [HEAT_NAME, PAF_NAME]
    params = inspect.signature(generate).parameters
    for name, field in settings.SynthSettings.model_fields.items():
        assert params[name].default == field.default, name


def test_the_exported_padding_mode_is_the_one_every_deployment_reader_uses():
    """export.json, the calibration images and the Triton preprocessing feed an exported model the
    same way, and the inference spec accepts that mode."""
    from bpnet.deploy import export, triton_model
    from bpnet.infer.decode import DecodeParams
    from bpnet.pose import BPNET_SKELETON
    from bpnet.steps.export import export_record

    recorded = export_record(SimpleNamespace(input_shape=(64, 96)))["keep_aspect_ratio_mode"]
    triton = triton_model.settings_from(DecodeParams(), (1.0,), (0.0,), (64, 96), {}, 1, BPNET_SKELETON)
    assert recorded == export.CalibrationData("i", "t", "c", settings.CalibrationSettings()).mode == triton[
        "keep_aspect_ratio_mode"]
    assert InferenceSpec(keep_aspect_ratio_mode=recorded).keep_aspect_ratio_mode == recorded
