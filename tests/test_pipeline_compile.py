"""The compiled pipeline YAML: edges, images, GPU requests and pools, secrets, retries, caching,
timeouts — all as the run spec says, and no secret value anywhere in the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pipelines.arguments import load_run_spec
from pipelines.submit import compile_pipeline
from tests.test_pipeline_submit import cluster_spec

SECRET_VALUES = {"BPNET_S3_ACCESS_KEY": "AKIA-test-access-0042", "BPNET_S3_SECRET_KEY": "s3cr3t-test-value-0042",
                 "BPNET_MODEL_KEY": "model-key-test-0042", "KF_PIPELINES_TOKEN": "token-test-0042",
                 "AWS_SECRET_ACCESS_KEY": "aws-secret-test-0042"}
GPU_STEPS = ("train", "evaluate", "inference")


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> tuple[dict, dict, str, object]:
    tmp = tmp_path_factory.mktemp("compile")
    spec_path = cluster_spec(tmp, gpu={"accelerator_type": "nvidia.com/gpu", "pool": {
        "node_selector": {"pool.example.com/name": "a100-pool", "nvidia.com/gpu.present": "true"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
                        {"key": "dedicated", "operator": "Equal", "value": "training", "effect": "NoExecute"}]}},
        steps={"dataset_convert": {"gpus": 0, "retries": 3, "timeout_seconds": 7200, "caching": True, "cpu": "8"},
               "train": {"gpus": 2, "retries": 1, "timeout_seconds": 86400, "caching": True},
               "evaluate": {"gpus": 1, "retries": 2, "timeout_seconds": 3600, "caching": True},
               "inference": {"gpus": 1, "retries": 0, "timeout_seconds": 1800, "caching": False}})
    with pytest.MonkeyPatch.context() as mp:
        for name, value in SECRET_VALUES.items():
            mp.setenv(name, value)
        spec = load_run_spec(spec_path)
        path = compile_pipeline(spec, tmp / "bpnet.yaml")
    text = path.read_text()
    pipeline, platform = yaml.safe_load_all(text)
    return pipeline, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"], text, spec


def _tasks(pipeline: dict) -> dict:
    return pipeline["root"]["dag"]["tasks"]


def test_edges_follow_the_dag(compiled):
    tasks = _tasks(compiled[0])
    assert set(tasks) == {"dataset-convert", "train", "evaluate", "inference"}
    assert "dependentTasks" not in tasks["dataset-convert"]
    assert tasks["train"]["dependentTasks"] == ["dataset-convert"]
    for step in ("evaluate", "inference"):
        assert sorted(tasks[step]["dependentTasks"]) == ["dataset-convert", "train"]
        artifacts = tasks[step]["inputs"]["artifacts"]
        assert artifacts["model"]["taskOutputArtifact"] == {"outputArtifactKey": "model", "producerTask": "train"}
        assert artifacts["dataset"]["taskOutputArtifact"]["producerTask"] == "dataset-convert"
    assert tasks["train"]["inputs"]["parameters"]["train_spec"] == {"componentInputParameter": "train_spec"}


def test_every_step_runs_the_project_image_without_installing_anything(compiled):
    pipeline, _, _, spec = compiled
    executors = pipeline["deploymentSpec"]["executors"]
    assert len(executors) == 4
    for executor in executors.values():
        container = executor["container"]
        assert container["image"] == spec.images.gpu
        assert "pip install" not in " ".join(container["command"])
        assert "from components import runtime" in container["command"][-1]


def test_gpu_steps_request_gpus_and_land_on_the_spec_pool(compiled):
    pipeline, k8s, _, _ = compiled
    executors = pipeline["deploymentSpec"]["executors"]
    expected_gpus = {"train": "2", "evaluate": "1", "inference": "1"}
    for step in GPU_STEPS:
        accel = executors[f"exec-{step}"]["container"]["resources"]["accelerator"]
        assert (accel["resourceType"], accel["resourceCount"]) == ("nvidia.com/gpu", expected_gpus[step])
        assert k8s[f"exec-{step}"]["nodeSelector"]["labels"] == {"pool.example.com/name": "a100-pool",
                                                                 "nvidia.com/gpu.present": "true"}
        assert {"key": "dedicated", "operator": "Equal", "value": "training",
                "effect": "NoExecute"} in k8s[f"exec-{step}"]["tolerations"]
    convert = executors["exec-dataset-convert"]["container"]
    assert "accelerator" not in convert.get("resources", {})
    assert "nodeSelector" not in k8s["exec-dataset-convert"] and "tolerations" not in k8s["exec-dataset-convert"]
    assert convert["resources"]["cpuRequest"] == 8.0


def test_train_gets_the_gpu_count_as_its_gpus_argument(compiled):
    params = _tasks(compiled[0])["train"]["inputs"]["parameters"]
    assert params["gpus"]["runtimeValue"]["constant"] == 2


def test_secrets_are_env_references_and_no_value_is_in_the_file(compiled):
    _, k8s, text, _ = compiled
    convert_env = {e["envVar"]: (s["secretName"], e["secretKey"]) for s in k8s["exec-dataset-convert"]["secretAsEnv"]
                   for e in s["keyToEnv"]}
    assert convert_env == {"BPNET_S3_ACCESS_KEY": ("mlpipeline-minio-artifact", "accesskey"),
                           "BPNET_S3_SECRET_KEY": ("mlpipeline-minio-artifact", "secretkey")}
    for step in GPU_STEPS:
        [secret] = k8s[f"exec-{step}"]["secretAsEnv"]
        assert secret["secretName"] == "bpnet-model-key"
        assert secret["keyToEnv"] == [{"envVar": "BPNET_MODEL_KEY", "secretKey": "key"}]
    for value in SECRET_VALUES.values():
        assert value not in text


def test_retries_caching_and_timeouts_follow_the_spec(compiled):
    pipeline, k8s, _, _ = compiled
    tasks = _tasks(pipeline)
    expected = {"dataset-convert": (3, True, "7200"), "train": (1, True, "86400"),
                "evaluate": (2, True, "3600"), "inference": (0, False, "1800")}
    for name, (retries, cache, timeout) in expected.items():
        task = tasks[name]
        assert task.get("retryPolicy", {}).get("maxRetryCount", 0) == retries
        assert task["cachingOptions"].get("enableCache", False) is cache
        assert k8s[f"exec-{name}"]["activeDeadlineSeconds"] == timeout
        assert k8s[f"exec-{name}"]["securityContext"] == {"runAsNonRoot": True}


def test_minio_endpoint_is_plain_env_on_the_data_step(compiled):
    env = {e["name"]: e["value"] for e in compiled[0]["deploymentSpec"]["executors"]["exec-dataset-convert"][
        "container"]["env"]}
    assert env == {"BPNET_S3_ENDPOINT": "minio-service.kubeflow:9000", "BPNET_S3_SECURE": "false"}


def test_cache_key_of_the_data_step_is_the_data_version_or_the_schedule_time(compiled, tmp_path):
    tasks = _tasks(compiled[0])
    assert tasks["dataset-convert"]["inputs"]["parameters"]["data_version"] == {
        "componentInputParameter": "data_version"}
    scheduled = compile_pipeline(compiled[3], tmp_path / "s.yaml", scheduled=True)
    pipeline, _ = yaml.safe_load_all(scheduled.read_text())
    version = _tasks(pipeline)["dataset-convert"]["inputs"]["parameters"]["data_version"]
    assert version["runtimeValue"]["constant"] == "{{$.pipeline_job_schedule_time_utc}}"


def test_parameter_defaults_are_the_specs_so_the_yaml_runs_from_the_ui(compiled):
    inputs = compiled[0]["root"]["inputDefinitions"]["parameters"]
    repo = Path(__file__).resolve().parents[1]
    assert json.loads(inputs["train_spec"]["defaultValue"]) == yaml.safe_load(
        (repo / "specs" / "bpnet_train_m1_coco.yaml").read_text())
    assert inputs["dataset_uri"]["defaultValue"] == "s3://datasets/coco2017-person"
    assert inputs["data_version"]["defaultValue"] == "v7"
    outputs = compiled[0]["root"]["outputDefinitions"]
    assert outputs["parameters"]["ap"]["parameterType"] == "NUMBER_DOUBLE"  # for dsl.If gates downstream
    assert outputs["artifacts"]["metrics"]["artifactType"]["schemaTitle"] == "system.Metrics"
