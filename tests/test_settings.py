"""One source per setting: the CLI flags, the run spec and the steps take their defaults from the
settings models of bpnet.settings (these tests fail when someone declares a default again)."""

from __future__ import annotations

import argparse
import inspect
import re
from decimal import Decimal
from pathlib import Path
from typing import get_args

import pytest

from bpnet import settings
from bpnet.cli import build_parser
from bpnet.errors import UsageError
from bpnet.specs.base import DEFAULT_INPUT_SHAPE
from bpnet.specs.inference import InferenceSpec
from pipelines import run_spec

REPO = Path(__file__).resolve().parents[1]
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


def test_the_run_spec_embeds_the_library_models():
    assert run_spec.PruneSettings is settings.PruneSettings
    fields = run_spec.RunSpec.model_fields
    assert fields["prune"].default_factory is settings.PruneSettings
    assert fields["export"].default_factory is settings.DeploySettings
    assert issubclass(settings.DeploySettings, settings.ExportSettings)
    assert issubclass(settings.DeploySettings, settings.CalibrationSettings)
    assert (run_spec.EngineSettings().workspace_bytes ==
            settings.EngineSettings.model_fields["max_workspace_size"].default)
    assert get_args(run_spec.EngineTarget.model_fields["precision"].annotation) == get_args(settings.Precision)


def test_the_default_input_shape_is_one_object():
    assert settings.ExportSettings.model_fields["input_shape"].default is DEFAULT_INPUT_SHAPE
    assert InferenceSpec.model_fields["input_shape"].default is DEFAULT_INPUT_SHAPE
    from bpnet.prune import prune
    from bpnet.steps.prune import prune as prune_step

    for func in (prune, prune_step):
        assert inspect.signature(func).parameters["flops_shape"].default is DEFAULT_INPUT_SHAPE


def test_the_calibration_methods_and_precisions_are_the_literals():
    from bpnet.deploy.calibration import METHODS
    from bpnet.deploy.engine import EnginePlan

    assert METHODS == get_args(settings.CalibrationMethod)
    # the engine plan takes the settings as they are: precision, batch, workspace, DLA checked once
    assert EnginePlan.__dataclass_fields__["settings"].type in ("EngineSettings", settings.EngineSettings)


def _sources() -> list[Path]:
    return [p for folder in ("bpnet", "components", "pipelines") for p in (REPO / folder).rglob("*.py")]


def test_no_module_declares_the_input_shape_or_the_stride_check_again():
    own = {REPO / "bpnet/specs/base.py"}
    for path in _sources():
        if path in own:
            continue
        text = path.read_text()
        assert not re.search(r"\(368, 368\)|if [^\n]*% (8\b|MODEL_STRIDE)", text), path


def test_components_and_pipelines_never_call_the_cli():
    for path in _sources():
        if path.parts[-2] in ("components", "pipelines"):
            assert "bpnet.cli" not in path.read_text() and "cli.main" not in path.read_text(), path


def test_a_bad_setting_names_its_field():
    with pytest.raises(UsageError) as caught:
        settings.build(settings.PruneSettings, pruning_threshold=1.5)
    assert caught.value.field == "pruning_threshold" and caught.value.exit_code == 2
    assert str(caught.value) == "pruning_threshold: 1.5 — expected less than or equal to 1"


def _same_field(derived, source) -> bool:
    """pydantic copies a FieldInfo used as a default: the same default, constraints and help."""
    return (derived.default, derived.metadata, derived.description) == (source.default, source.metadata,
                                                                         source.description)


def test_serving_is_one_library_model_the_run_spec_embeds():
    from bpnet import release

    assert run_spec.ServingSettings is settings.ServingSettings and release.ServingOptions is settings.ServingOptions
    assert run_spec.RunSpec.model_fields["serving"].default_factory is settings.ServingSettings
    assert issubclass(settings.ServingOptions, settings.ServingSettings)
    assert _same_field(run_spec.ReleaseSettings.model_fields["plain_onnx"],
                       settings.ServingOptions.model_fields["plain_onnx"])
    assert _same_field(run_spec.GpuSettings.model_fields["accelerator_type"],
                       settings.ServingOptions.model_fields["accelerator_type"])
    assert run_spec.NodePool is settings.NodePool and run_spec.Toleration is settings.Toleration
    steps, serving = run_spec.StepSettings.model_fields, settings.ServingSettings.model_fields
    assert steps["cpu"].annotation == serving["cpu"].annotation  # one quantity type for pods and the service
    assert steps["memory"].annotation == serving["memory"].annotation


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


def test_engine_targets_and_the_dataset_take_their_fields_from_the_library():
    target, engine = run_spec.EngineTarget.model_fields, settings.EngineSettings.model_fields
    for name in ("max_batch_size", "dla_core"):
        assert _same_field(target[name], engine[name]), name
    assert "serves" in target
    source, convert = run_spec.DatasetSource.model_fields, settings.ConvertSettings.model_fields
    assert _same_field(source["num_shards"], convert["num_shards"])
    assert source["generate_masks"].description == convert["generate_masks"].description
    assert source["generate_masks"].default is True  # the pipeline's own choice: it trains on the masks


def test_the_pipeline_steps_take_their_parameters_from_the_run_spec_alone():
    """No component (nor the runtime behind it) declares a default of its own for what the DAG
    passes from the run spec: report_images, gpus, generate_masks, num_shards."""
    from components import dataset_convert, evaluate, inference, retrain, runtime, train

    for func, names in ((dataset_convert.dataset_convert, ("generate_masks", "num_shards")),
                        (runtime.dataset_convert, ("generate_masks", "num_shards")),
                        (evaluate.evaluate, ("report_images",)), (runtime.evaluate, ("report_images",)),
                        (inference.inference, ("report_images",)), (runtime.inference, ("report_images",)),
                        (train.train, ("gpus",)), (retrain.retrain, ("gpus",)), (runtime.train, ("gpus",))):
        params = inspect.signature(func).parameters
        for name in names:
            assert params[name].default is inspect.Parameter.empty, (func.__module__, name)
    # a CPU pod's 0 GPUs becomes one training device in one place: runtime.train
    assert [p.name for p in _sources() if p.parts[-2] in ("components", "pipelines")
            and "max(1, " in p.read_text()] == ["runtime.py"]
    assert "StepSettings(" not in (REPO / "pipelines/dag.py").read_text()  # every step's settings are the spec's
    assert "int8_gate" in run_spec.Steps.model_fields


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


def test_the_exported_padding_mode_is_one_constant():
    from bpnet.deploy import calibration, export, triton_model
    from bpnet.layout import EXPORTED_MODE

    assert EXPORTED_MODE in get_args(get_args(InferenceSpec.model_fields["keep_aspect_ratio_mode"].annotation)[0])
    assert export.CalibrationData.__dataclass_fields__["mode"].default is EXPORTED_MODE
    assert inspect.signature(calibration.build_tensorfile).parameters["mode"].default is EXPORTED_MODE
    assert triton_model.EXPORTED_MODE is EXPORTED_MODE  # the Triton model imports bpnet, so not a literal
    for folder in ("bpnet/deploy", "components", "pipelines"):
        for path in (REPO / folder).rglob("*.py"):
            assert '"pad_image_input"' not in path.read_text(), path
