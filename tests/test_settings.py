"""One source per setting: the CLI flags, the run spec and the steps take their defaults from the
settings models of bpnet.settings (these tests fail when someone declares a default again)."""

from __future__ import annotations

import argparse
import inspect
import re
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
                                              ("evaluate", settings.EvaluateSettings)])
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
