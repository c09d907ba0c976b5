"""Issue 16's adversarial spec classes, one case (or a few) per class, through real processes.

Each promise is about what a user sees: ``bpnet``/``python -m pipelines`` exits 2 with
``spec error: <file>: <field>: ...`` lines, prints no traceback, stays within a memory limit
(RLIMIT_AS on the child: a spec that expands to gigabytes dies instead of passing), and creates
nothing under the results folder. Bad specs are the shipped demo specs with one thing broken;
the dataset spec points at the real COCO annotations of tests/data/real_images.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
import yaml

from bpnet.artifacts import ArtifactError, check_layout, parse_manifest
from bpnet.cli import main as cli_main
from bpnet.errors import ModelError
from bpnet.specs import SpecError, TrainSpec, load_spec
from bpnet.specs.loader import _fmt_value
from pipelines.__main__ import main as pipelines_main
from pipelines.arguments import load_run_spec
from tests.conftest import REPO, real_dataset

SPECS = REPO / "specs"
CLI_MEMORY = 1 << 30  # address space of a `bpnet` child: the fixed loader needs under 100 MB of RSS
PIPELINES_MEMORY = 3 << 30  # kfp and grpc map more address space at import


def _limit(nbytes: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (nbytes, nbytes))
    return apply


def run(args: list[str], memory: int = CLI_MEMORY, module: str = "bpnet.cli",
        inprocess: bool = False) -> subprocess.CompletedProcess:
    """The command in a child process (the promise as a user sees it), or, for the many variants
    of a class already shown through a process, in this one (same main(), same stderr)."""
    if inprocess:
        main = cli_main if module == "bpnet.cli" else pipelines_main
        err = io.StringIO()
        with contextlib.redirect_stderr(err), mock.patch.dict(os.environ, {"BPNET_MODEL_KEY": "test-key"}):
            code = main(args)
        return subprocess.CompletedProcess(args, code, "", err.getvalue())
    env = {**os.environ, "PYTHONPATH": str(REPO), "BPNET_MODEL_KEY": "test-key", "OPENBLAS_NUM_THREADS": "1",
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("BPNET_SPEC_ROOT", None)
    # the timeout only stops a hang (a regression would otherwise block the suite); no speed is asserted
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=120,
                          env=env, preexec_fn=_limit(memory), cwd=REPO)


def assert_spec_error(proc: subprocess.CompletedProcess, spec: Path, field: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("spec error:")]
    assert lines, proc.stderr
    assert any(line.startswith(f"spec error: {spec}: {field}") for line in lines), proc.stderr
    assert all(len(line) < 400 for line in lines)


@pytest.fixture()
def dataset_spec(tmp_path: Path) -> Path:
    """The shipped dataset spec over the real COCO annotations (train split for both modes)."""
    data = json.loads((SPECS / "coco_spec.json").read_text())
    data["root_directory_path"] = str(real_dataset(tmp_path / "coco"))
    data["test_data"] = dict(data["train_data"])
    path = tmp_path / "coco_spec.json"
    path.write_text(json.dumps(data, indent=1))
    return path


@pytest.fixture()
def train_data(tmp_path: Path, dataset_spec: Path) -> dict:
    """The demo train spec with its inputs pointed at files that exist."""
    (tmp_path / "train-fold-000-of-001").write_bytes(b"")  # exists: that is all validation checks
    data = yaml.safe_load((SPECS / "demo/bpnet_train_demo.yaml").read_text())
    data["checkpoint_dir"] = str(tmp_path / "ckpt")
    loader = data["dataloader"]
    loader["pose_config"]["pose_config_path"] = str(SPECS / "bpnet_18joints.json")
    loader["dataset_config"].update(root_data_path=str(tmp_path), train_records_folder_path=str(tmp_path),
                                    val_records_folder_path=str(tmp_path),
                                    dataset_specs={"coco": str(dataset_spec)})
    return data


def _write(tmp_path: Path, data: dict | str, name: str = "train.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def train(tmp_path: Path, spec: Path, inprocess: bool = False) -> tuple[subprocess.CompletedProcess, Path]:
    results = tmp_path / "results"
    return run(["train", "-e", str(spec), "-r", str(results)], inprocess=inprocess), results


def test_fixture_spec_is_valid(tmp_path, train_data):
    """The baseline the cases break: it loads with every input checked."""
    from bpnet.specs import default_path_context

    path = _write(tmp_path, train_data)
    spec = load_spec(path, TrainSpec, default_path_context(path, check_inputs=True))
    assert spec.dataloader.batch_size == 8


# --- class 1: hangs and unbounded memory --------------------------------------------------------

BILLION_LAUGHS = "".join(
    f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10) if i else ', '.join(['lol'] * 10)}]\n" for i in range(9)
) + "num_epoch: *l8\n"


def test_billion_laughs_is_refused_within_the_memory_limit(tmp_path):
    spec = _write(tmp_path, BILLION_LAUGHS)
    proc, results = train(tmp_path, spec)
    assert_spec_error(proc, spec, "line ")
    assert "anchors/aliases" in proc.stderr
    assert not results.exists()


def test_alias_shared_value_formats_only_what_is_printed():
    shared: list = ["x"] * 10
    for _ in range(9):  # 10^10 leaves if serialized
        shared = [shared] * 10
    text = _fmt_value(shared)
    assert len(text) <= 80 and text.endswith("...")


@pytest.mark.parametrize(("section", "key", "value"), [
    ("dataloader", "shuffle_buffer_size", 1.0e12),
    ("dataloader", "batch_size", 10**7),
    ("image_dims", "height", 1 << 20),
])
def test_memory_sizing_train_fields_are_bounded(tmp_path, train_data, section, key, value):
    target = train_data["dataloader"] if section == "dataloader" else \
        train_data["dataloader"]["image_config"]["image_dims"]
    target[key] = value
    spec = _write(tmp_path, train_data)
    proc, results = train(tmp_path, spec, inprocess=key != "shuffle_buffer_size")
    field = f"dataloader.{key}" if section == "dataloader" else f"dataloader.image_config.image_dims.{key}"
    assert_spec_error(proc, spec, f"{field}: ")
    assert "less than or equal to" in proc.stderr
    assert not results.exists()


@pytest.mark.parametrize(("change", "field"), [
    ({"output_upsampling_factor": [1000, 1000]}, "output_upsampling_factor"),
    ({"input_shape": [8192, 8192]}, "input_shape"),
    ({"multi_scale_inference": True, "input_shape": [2048, 2048], "scales": [3.0]}, "scales"),
])
def test_memory_sizing_inference_fields_are_bounded(tmp_path, change, field):
    data = {**yaml.safe_load((SPECS / "demo/infer_spec_demo.yaml").read_text()), **change}
    data["train_spec"] = None
    spec = _write(tmp_path, data, "infer.yaml")
    results = tmp_path / "results"
    proc = run(["inference", "-i", str(spec), "-m", str(tmp_path / "m.tlt"), "--input_type", "dir",
                "--input", str(tmp_path), "-r", str(results)], inprocess=field != "output_upsampling_factor")
    assert_spec_error(proc, spec, f"{field}: ")
    assert not results.exists()


def test_memory_sizing_run_spec_fields_are_bounded(tmp_path):
    data = yaml.safe_load((SPECS / "pipeline/cluster.yaml").read_text())
    data.setdefault("export", {})["cal_batch_size"] = 10**6
    data.setdefault("engines", {})["workspace_bytes"] = 1 << 50
    spec = _write(tmp_path, data, "run.yaml")
    with pytest.raises(SpecError) as info:
        load_run_spec(spec)
    text = "\n".join(info.value.lines)
    assert "export.cal_batch_size: 1000000 — expected less than or equal to 1024" in text
    assert "engines.workspace_bytes: " in text
    data["export"].update(cal_batch_size=1000, cal_batches=1000)
    with pytest.raises(SpecError, match="export.cal_batches: 1000 — cal_batches x cal_batch_size is 1000000 images; "
                                        "at most 4096"):
        load_run_spec(_write(tmp_path, data, "run.yaml"))


# --- class 5: values that validate but would fail late --------------------------------------------

@pytest.mark.parametrize(("path", "value", "field", "expected"), [
    (("dataloader", "augmentation_config", "spatial_aug_params", "rotate_deg_max"), ".nan",
     "dataloader.augmentation_config.spatial_aug_params.rotate_deg_max", "finite number"),
    (("optimizer", "learning_rate_schedule", "base_learning_rate"), ".inf",
     "optimizer.learning_rate_schedule.base_learning_rate", "finite number"),
    (("num_epoch",), "true", "num_epoch", "not true/false"),
    (("random_seed",), "-1", "random_seed", "greater than or equal to 0"),
    (("dataloader", "normalization_params", "image_scale"), "[256.0, true, 256.0]",
     "dataloader.normalization_params.image_scale", "not true/false"),
    (("compute_dtype",), "float16", "compute_dtype", "'float32' or 'bfloat16'"),
])
def test_late_failing_values_are_spec_errors(tmp_path, train_data, path, value, field, expected):
    target = train_data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = "@@VALUE@@"
    spec = _write(tmp_path, yaml.safe_dump(train_data, sort_keys=False).replace("'@@VALUE@@'", value))
    proc, results = train(tmp_path, spec, inprocess=value != ".nan")
    assert_spec_error(proc, spec, f"{field}: ")
    assert expected in proc.stderr
    assert not results.exists()


def test_duplicate_yaml_key_is_an_error_not_last_wins(tmp_path, train_data):
    text = yaml.safe_dump(train_data, sort_keys=False)
    spec = _write(tmp_path, text.replace("num_epoch: 40\n", "num_epoch: 40\nnum_epoch: 1\n"))
    proc, results = train(tmp_path, spec)
    assert_spec_error(proc, spec, "line ")
    assert 'duplicate key "num_epoch"' in proc.stderr
    assert not results.exists()


def test_duplicate_json_key_is_an_error(tmp_path, dataset_spec):
    text = dataset_spec.read_text().replace('"dataset": "coco",', '"dataset": "coco", "dataset": "other",')
    spec = _write(tmp_path, text, "dup.json")
    proc = run(["dataset_convert", "-d", str(spec), "-o", str(tmp_path / "out" / "train")], inprocess=True)
    assert_spec_error(proc, spec, "-: duplicate key")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("content", "expected"), [
    (None, "no such file"),
    (b"\x89PNG\r\n\x1a\n\x00\x00", "cannot read pose config"),
    (b"[1, 2, 3]", "must be a JSON object"),
    (json.dumps({"num_joints": 1, "keypoints": ["nose"], "skeleton": []}).encode(), "a skeleton needs at least 2"),
])
def test_pose_config_is_checked_before_the_results_folder(tmp_path, train_data, content, expected):
    pose = tmp_path / "pose.json"
    if content is not None:
        pose.write_bytes(content)
    train_data["dataloader"]["pose_config"]["pose_config_path"] = str(pose)
    spec = _write(tmp_path, train_data)
    proc, results = train(tmp_path, spec, inprocess=content is not None)
    assert_spec_error(proc, spec, "dataloader.pose_config.pose_config_path: ")
    assert expected in proc.stderr
    assert not results.exists()


def test_missing_pretrained_weights_and_dataset_spec_are_reported_together(tmp_path, train_data):
    train_data["pretrained_weights"] = str(tmp_path / "nowhere.tlt")
    train_data["dataloader"]["dataset_config"]["dataset_specs"] = {"coco": str(tmp_path / "nowhere.json")}
    spec = _write(tmp_path, train_data)
    proc, results = train(tmp_path, spec, inprocess=True)
    assert_spec_error(proc, spec, "pretrained_weights: ")
    assert f"spec error: {spec}: dataloader.dataset_config.dataset_specs.coco: " in proc.stderr
    assert not results.exists()


def test_missing_records_and_finetune_checkpoint_are_spec_errors(tmp_path, train_data):
    train_data["dataloader"]["dataset_config"]["train_records_path"] = ["train-fold-000-of-002"]
    train_data["finetuning_config"] = {"is_finetune_exp": True, "checkpoint_path": str(tmp_path / "ckpt-3")}
    spec = _write(tmp_path, train_data)
    proc, results = train(tmp_path, spec, inprocess=True)
    assert_spec_error(proc, spec, "dataloader.dataset_config.train_records_path: [\"train-fold-000-of-002\"] — no such")
    assert f"spec error: {spec}: finetuning_config.checkpoint_path: " in proc.stderr
    assert not results.exists()
    train_data["finetuning_config"] = {"is_finetune_exp": True}
    with pytest.raises(SpecError, match="finetuning_config.checkpoint_path: null — missing: is_finetune_exp is true"):
        load_spec(_write(tmp_path, train_data), TrainSpec)


def test_missing_dataset_root_is_a_spec_error(tmp_path, dataset_spec):
    data = json.loads(dataset_spec.read_text())
    data["root_directory_path"] = str(tmp_path / "no-data")
    spec = _write(tmp_path, json.dumps(data), "coco.json")
    proc = run(["dataset_convert", "-d", str(spec), "-o", str(tmp_path / "out" / "train")], inprocess=True)
    assert_spec_error(proc, spec, "root_directory_path: ")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("step", "key", "value"), [
    ("train", "memory", "lots"), ("train", "cpu", "four"), ("evaluate", "memory", "0"), ("prune", "cpu", "1.5x"),
])
def test_run_spec_resources_are_kubernetes_quantities(tmp_path, step, key, value):
    data = yaml.safe_load((SPECS / "pipeline/cluster.yaml").read_text())
    data.setdefault("steps", {}).setdefault(step, {})[key] = value
    spec = _write(tmp_path, data, "run.yaml")
    proc = run(["compile", "--spec", str(spec), "--build_dir", str(tmp_path / "build")], PIPELINES_MEMORY,
               module="pipelines", inprocess=value != "lots")
    assert_spec_error(proc, spec, f"steps.{step}.{key}: \"{value}\" — expected a positive Kubernetes quantity")
    assert not (tmp_path / "build").exists()


def test_run_spec_accepts_kfp_quantities(tmp_path):
    data = yaml.safe_load((SPECS / "pipeline/cluster.yaml").read_text())
    data.setdefault("steps", {})["train"] = {"cpu": "500m", "memory": "16Gi"}
    data["steps"]["evaluate"] = {"cpu": "0.5", "memory": "512M"}
    spec = load_run_spec(_write(tmp_path, data, "run.yaml"))
    assert (spec.steps.train.cpu, spec.steps.evaluate.memory) == ("500m", "512M")


def test_local_run_checks_the_dataset_folder_first_and_never_retries(tmp_path):
    data = yaml.safe_load((SPECS / "pipeline/local.yaml").read_text())
    for key in ("pipeline_root",):
        data[key] = str(tmp_path / "pipeline")
    data["specs"] = {k: str((SPECS / "pipeline" / v).resolve()) for k, v in data["specs"].items()}
    data["release"]["root"] = str(tmp_path / "releases")
    data["dataset"]["uri"] = str(tmp_path / "no-such-dataset")
    spec = _write(tmp_path, data, "run.yaml")
    proc = run(["local", "--spec", str(spec)], PIPELINES_MEMORY, module="pipelines")
    assert_spec_error(proc, spec, "dataset.uri: ")
    assert not (tmp_path / "pipeline").exists()
    data["dataset"]["uri"] = str(tmp_path)
    local = load_run_spec(_write(tmp_path, data, "run.yaml")).for_local_run(spec)
    assert all(getattr(local.steps, name).retries == 0 for name in type(local.steps).model_fields)
    assert load_run_spec(spec).steps.data_version.retries == 2  # the cluster keeps its retries


# --- class 8: error format gaps -------------------------------------------------------------------

def test_binary_spec_names_the_file(tmp_path):
    spec = tmp_path / "train.yaml"
    spec.write_bytes(b"\x00\xff\xfe binary \x80\x81")
    proc, results = train(tmp_path, spec)
    assert_spec_error(proc, spec, "byte ")
    assert "not UTF-8" in proc.stderr and "codec" not in proc.stderr
    assert not results.exists()


@pytest.mark.parametrize(("name", "text"), [
    ("deep.yaml", "a: " + "[" * 20000 + "]" * 20000 + "\n"),
    ("deep.json", "{\"a\": " + "[" * 200000 + "]" * 200000 + "}"),
])
def test_deep_nesting_is_a_spec_error(tmp_path, name, text):
    spec = _write(tmp_path, text, name)
    proc, results = train(tmp_path, spec)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"spec error: {spec}: " in proc.stderr and "nested deeper than" in proc.stderr
    assert "recursion" not in proc.stderr
    assert not results.exists()


def test_cross_field_error_names_the_field_not_the_section(tmp_path, train_data):
    schedule = train_data["optimizer"]["learning_rate_schedule"]
    schedule.update(soft_start=0.9, annealing=0.5)
    spec = _write(tmp_path, train_data)
    proc, _ = train(tmp_path, spec, inprocess=True)
    assert_spec_error(proc, spec, "optimizer.learning_rate_schedule.soft_start: 0.9 — must not exceed annealing (0.5)")
    assert "{" not in proc.stderr


def test_results_folder_that_is_a_file(tmp_path, train_data):
    spec = _write(tmp_path, train_data)
    results = tmp_path / "results"
    results.write_text("not a folder")
    proc = run(["train", "-e", str(spec), "-r", str(results / "sub")])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"-r/--results_dir: {results / 'sub'} — {results} is a file; expected a folder" in proc.stderr
    assert results.read_text() == "not a folder"


def test_storage_keys_that_collide_or_clash_are_refused():
    assert check_layout(["a/./b", "c"], "here") == ["a/b", "c"]
    with pytest.raises(ArtifactError, match="'dir//x' and 'dir/x' name the same file 'dir/x'"):
        check_layout(["dir//x", "dir/x"], "here")
    with pytest.raises(ArtifactError, match="'x' is a file but 'x/y' needs it to be a folder"):
        check_layout(["x/y", "x"], "here")


def test_manifest_with_a_non_string_path_is_an_artifact_error():
    entry = {"path": 7, "size": 1, "sha256": "0" * 64}
    with pytest.raises(ArtifactError, match=r"files\[0\]\.path is int, expected a string"):
        parse_manifest(json.dumps({"files": [entry]}), "m.json")


def test_pruned_model_as_pretrained_weights_without_load_graph_is_an_error(tmp_path, train_data):
    from bpnet.model.bpnet import build_model
    from bpnet.model.io import save_model
    from bpnet.train import initial_model, spec_architecture

    spec = load_spec(_write(tmp_path, train_data), TrainSpec)
    narrower = spec.model_copy(update={"model": spec.model.model_copy(update={"width_multiplier": 0.125})})
    save_model(build_model(spec_architecture(narrower), seed=0), tmp_path / "pruned.tlt", "test-key")
    spec.pretrained_weights = str(tmp_path / "pruned.tlt")
    with pytest.raises(ModelError, match=r"layer\(s\) differ in shape .* retrained with load_graph: true"):
        initial_model(spec, "test-key")
