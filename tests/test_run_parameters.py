"""The typed run parameters of the Kubeflow run form (bpnet.overrides): declared once, typed in the
compiled YAML, laid over the train and retrain specs (and the input size over every spec that
has one), recorded in the specs the steps read, and refused with a message naming them."""

from __future__ import annotations

import inspect
import json

import pytest
import yaml

from bpnet.errors import SpecError
from bpnet.overrides import RunOverrides, resolve
from bpnet.settings import ExportCalibrationSettings, PruneSettings
from bpnet.specs.inference import InferenceSpec
from bpnet.specs.train import TrainSpec
from components import runtime
from components.resolve_specs import resolve_specs
from pipelines.__main__ import main
from pipelines.arguments import load_run_spec, parse_overrides, pipeline_arguments
from tests.conftest import cluster_spec

KFP_TYPES = {int: "NUMBER_INTEGER", float: "NUMBER_DOUBLE", str: "STRING"}
SET = {"num_epoch": 5, "batch_size": 4, "base_learning_rate": 3e-4, "input_height": 256, "input_width": 320,
       "pruning_threshold": 0.3, "min_ap": 0.25, "engine_targets": "gpu-fp16,jetson-int8-dla0"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cluster")
    return load_run_spec(cluster_spec(tmp)), tmp


def _texts(spec) -> dict[str, str]:
    arguments = pipeline_arguments(spec)
    return {name: arguments[name] for name in runtime.SPEC_PARAMETERS}


def test_the_component_spells_out_run_overrides_parameters():
    fields = RunOverrides.model_fields
    # the component is built from source, so it spells its parameters out: they must be RunOverrides'
    params = inspect.signature(resolve_specs).parameters
    assert {n: params[n].annotation for n in fields} == {n: f.annotation for n, f in fields.items()}


def test_the_compiled_yaml_offers_them_typed_with_the_set_values_and_no_secret(tmp_path, monkeypatch):
    planted = {"BPNET_MODEL_KEY": "model-key-planted-77", "BPNET_S3_SECRET_KEY": "s3-planted-77",
               "KF_PIPELINES_TOKEN": "token-planted-77"}
    for name, value in planted.items():
        monkeypatch.setenv(name, value)
    build = tmp_path / "build"
    assert main(["compile", "--spec", str(cluster_spec(tmp_path)), "--build_dir", str(build),
                 "--set", "num_epoch=5", "--set", "input_height=256"]) == 0
    text = (build / "bpnet.yaml").read_text()
    inputs = next(yaml.safe_load_all(text))["root"]["inputDefinitions"]["parameters"]
    for name, field in RunOverrides.model_fields.items():
        assert inputs[name]["parameterType"] == KFP_TYPES[field.annotation], name
        assert inputs[name]["description"] == field.description, name  # shown beside the form's field
        expected = {"num_epoch": 5, "input_height": 256}.get(name, field.default)
        assert inputs[name].get("defaultValue", "") == expected, name
    assert inputs["train_spec"]["parameterType"] == "STRING"  # the whole specs stay parameters too
    assert not [v for v in planted.values() if v in text]


def _names(spec) -> list[str]:
    return [t["name"] for targets in spec.engines.by_pool().values() for t in targets]


def _laid(texts: dict[str, str], ran: str) -> dict[str, dict]:
    """Each spec as its step reads it: the run's text with resolve_specs' run parameters laid over."""
    return {name: runtime.spec_for(role, texts[name], ran, name) for name, role in runtime.SPEC_PARAMETERS.items()}


def test_overrides_land_in_the_train_and_retrain_specs_and_the_input_size_everywhere(cluster):
    spec, _ = cluster
    texts = _texts(spec)
    ran, min_ap, targets = runtime.resolve_specs(texts, RunOverrides(**SET), spec.release.min_ap, _names(spec))
    laid = _laid(texts, ran)
    for name in ("train_spec", "retrain_spec"):
        trained = TrainSpec.model_validate(laid[name])
        assert trained.num_epoch == 5 and trained.dataloader.batch_size == 4, name
        assert trained.optimizer.learning_rate_schedule.base_learning_rate == 3e-4, name
        dims = trained.dataloader.image_config.image_dims
        assert (dims.height, dims.width) == (256, 320), name
        assert trained.dataloader.pose_config.target_shape == (32, 40), name  # input / stride, as required
    assert InferenceSpec.model_validate(laid["inference_spec"]).input_shape == (256, 320)
    assert ExportCalibrationSettings(**laid["export_settings"]).input_shape == (256, 320)
    assert PruneSettings(**laid["prune_settings"]).pruning_threshold == 0.3
    assert min_ap == 0.25 and targets == ["gpu-fp16", "jetson-int8-dla0"]
    written = yaml.safe_load(open(spec.specs.train).read())
    resolved = laid["train_spec"]
    assert {k: v for k, v in resolved.items() if k not in ("num_epoch", "dataloader", "optimizer")} == {
        k: v for k, v in written.items() if k not in ("num_epoch", "dataloader", "optimizer")}  # the rest as written


def test_unset_parameters_leave_the_specs_as_written(cluster):
    spec, _ = cluster
    texts = _texts(spec)
    ran, min_ap, targets = runtime.resolve_specs(texts, RunOverrides(), spec.release.min_ap, _names(spec))
    as_given = {name: runtime.spec_mapping(text, name) for name, text in texts.items()}
    assert ran == "{}" and _laid(texts, ran) == as_given  # nothing to lay over
    assert min_ap == spec.release.min_ap == 0.5 and targets == _names(spec)
    only_prune, _, _ = runtime.resolve_specs(texts, RunOverrides(pruning_threshold=0.0), 0.5, [])
    changed = {n for n, laid in _laid(texts, only_prune).items() if laid != as_given[n]}
    assert changed == {"prune_settings"}  # 0.0 is a value, -1.0 unset
    assert _laid(texts, only_prune)["prune_settings"]["pruning_threshold"] == 0.0


def test_the_exponential_schedule_gets_its_own_rate_field(cluster):
    spec, _ = cluster
    train = yaml.safe_load(open(spec.specs.train).read())
    train["optimizer"]["learning_rate_schedule"] = {"__class_name__": "BpNetExponentialDecayLRSchedule",
                                                    "learning_rate": 1e-3, "decay_rate": 0.1, "decay_epochs": 1}
    specs = {role: train for role in ("train", "retrain")}
    resolved = resolve(specs, RunOverrides(base_learning_rate=5e-4), 0.0, [])
    schedule = TrainSpec.model_validate(resolved.specs["train"]).optimizer.learning_rate_schedule
    assert (schedule.learning_rate, schedule.decay_rate) == (5e-4, 0.1)
    assert train["optimizer"]["learning_rate_schedule"]["learning_rate"] == 1e-3  # the input is not changed


@pytest.mark.parametrize("values, expected", [
    ({"input_height": 130}, "input_height: 130 — height and width must be positive multiples of the model stride 8"),
    ({"num_epoch": -3}, "num_epoch: -3 — expected greater than or equal to 1"),
    ({"min_ap": 1.5}, "min_ap: 1.5 — expected less than or equal to 1"),
    ({"pruning_threshold": -0.5}, "pruning_threshold: -0.5 — expected greater than or equal to 0"),
    ({"engine_targets": "gpu-fp8"}, "engine_targets: 'gpu-fp8' — comma-separated names of the run spec's engine "
                                    "targets (gpu-fp16, gpu-int8, jetson-fp16, jetson-int8-dla0); unknown: gpu-fp8"),
    ({"base_learning_rate": 1e-12}, "train spec: optimizer.learning_rate_schedule.min_learning_rate: 8e-08 — must "
                                    "not exceed base_learning_rate (1e-12) (with base_learning_rate=1e-12)"),
])
def test_a_bad_value_names_the_parameter_value_and_expectation(cluster, values, expected):
    spec, _ = cluster
    with pytest.raises(SpecError) as caught:
        pipeline_arguments(spec, RunOverrides(**values))
    assert expected in caught.value.lines


def test_bad_values_stop_the_command_before_anything_is_written(tmp_path, capsys):
    build = tmp_path / "build"
    assert main(["compile", "--spec", str(cluster_spec(tmp_path)), "--build_dir", str(build),
                 "--set", "input_height=130", "--set", "num_epoch=-3"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == ["num_epoch: -3 — expected greater than or equal to 1",
                   "input_height: 130 — height and width must be positive multiples of the model stride 8"]
    assert not build.exists()


@pytest.mark.parametrize("item, expected", [
    ("epochs=5", '--set epochs="5" — unknown key (did you mean \'num_epoch\'?)'),
    ("num_epoch=five", '--set num_epoch="five" — expected a valid integer, unable to parse string as an integer'),
    ("num_epoch", "--set num_epoch: expected NAME=VALUE, NAME one of " + ", ".join(RunOverrides.model_fields)),
])
def test_set_parses_typed_values_and_names_a_bad_one(item, expected):
    assert parse_overrides(["num_epoch=5", "base_learning_rate=1e-4"]) == RunOverrides(num_epoch=5,
                                                                                      base_learning_rate=1e-4)
    with pytest.raises(SpecError) as caught:
        parse_overrides([item])
    assert caught.value.lines == [expected]


def test_the_component_resolves_in_its_own_process_through_kfp_local(cluster):
    """The first step as kfp.local runs it (its source alone in a subprocess): typed inputs in,
    the checked run parameters, the gate's minimum and the chosen targets out."""
    import warnings

    from kfp import local

    from components import component

    spec, tmp = cluster
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp / "root"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        task = component(resolve_specs, "bpnet:test")(
            **_texts(spec), spec_min_ap=0.5, target_names=_names(spec),
            **{**RunOverrides().model_dump(), "num_epoch": 7, "engine_targets": "gpu-int8"})
    assert json.loads(task.outputs["overrides"]) == {"num_epoch": 7, "engine_targets": "gpu-int8"}
    retrain = runtime.spec_for("retrain", _texts(spec)["retrain_spec"], task.outputs["overrides"], "retrain_spec")
    assert TrainSpec.model_validate(retrain).num_epoch == 7
    assert task.outputs["min_ap"] == 0.5 and task.outputs["engine_targets"] == ["gpu-int8"]


def test_the_pipeline_signature_is_derived_from_run_overrides(cluster):
    from pipelines.dag import build_pipeline

    spec, _ = cluster
    pipeline = build_pipeline(spec, pipeline_arguments(spec))
    inputs = pipeline.component_spec.inputs
    for name, field in RunOverrides.model_fields.items():
        assert inputs[name].default == field.default, name
