"""The compiled pipeline YAML: edges, images, GPU requests and pools, secrets as references,
retries, caching, timeouts — all as the run spec says."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pipelines.arguments import load_run_spec
from pipelines.submit import compile_pipeline
from tests.conftest import cluster_spec

EVALUATIONS = ("evaluate", "evaluate-2", "evaluate-3", "evaluate-4", "evaluate-5", "evaluate-6")
GPU_STEPS = ("train", "retrain", *EVALUATIONS, "inference")
MODEL_KEY_STEPS = (*GPU_STEPS, "prune", "export", "calibrate", "build-engine", "build-engine-2", "publish")
STORAGE_STEPS = ("data-version", "dataset-convert", "calibration-data", "promotion-gate", "publish",
                 "train")  # train: warm starts


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> tuple[dict, dict, str, object]:
    tmp = tmp_path_factory.mktemp("compile")
    spec_path = cluster_spec(tmp, gpu={"accelerator_type": "nvidia.com/gpu", "pool": {
        "node_selector": {"pool.example.com/name": "a100-pool", "nvidia.com/gpu.present": "true"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
                        {"key": "dedicated", "operator": "Equal", "value": "training", "effect": "NoExecute"}]}},
        steps={"dataset_convert": {"gpus": 0, "retries": 3, "timeout_seconds": 7200, "caching": True, "cpu": "8",
                                   "memory": "1.5Gi"},
               "train": {"gpus": 2, "retries": 1, "timeout_seconds": 86400, "caching": True},
               "prune": {"gpus": 0, "retries": 2, "timeout_seconds": 900, "caching": True, "cpu": ".5"},
               "int8_gate": {"retries": 1, "timeout_seconds": 1200, "caching": True},
               "retrain": {"gpus": 4, "retries": 1, "timeout_seconds": 43200, "caching": True},
               "evaluate": {"gpus": 1, "retries": 2, "timeout_seconds": 3600, "caching": True},
               "inference": {"gpus": 1, "retries": 0, "timeout_seconds": 1800, "caching": False}})
    spec = load_run_spec(spec_path)
    path = compile_pipeline(spec, tmp / "bpnet.yaml")
    text = path.read_text()
    pipeline, platform = yaml.safe_load_all(text)
    return pipeline, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"], text, spec


def _tasks(pipeline: dict) -> dict:
    return pipeline["root"]["dag"]["tasks"]


def _resolved(output: str) -> dict:
    """How a task input reads an output of the first step (the specs with the run parameters)."""
    return {"taskOutputParameter": {"outputParameterKey": output, "producerTask": "resolve-specs"}}


def _producer(task: dict, artifact: str) -> str:
    return task["inputs"]["artifacts"][artifact]["taskOutputArtifact"]["producerTask"]


def test_edges_follow_the_dag(compiled):
    tasks = _tasks(compiled[0])
    assert set(tasks) == {"resolve-specs", "data-version", "dataset-convert", "calibration-data", "train", "prune",
                          "retrain", "export", "calibrate", *EVALUATIONS, "inference", "promotion-gate", "int8-gate",
                          "condition-1"}
    assert "dependentTasks" not in tasks["resolve-specs"]
    assert tasks["data-version"]["dependentTasks"] == ["resolve-specs"]  # nothing starts before the check
    assert tasks["dataset-convert"]["inputs"]["parameters"]["data_version"]["taskOutputParameter"] == {
        "outputParameterKey": "Output", "producerTask": "data-version"}
    assert _producer(tasks["train"], "train_data") == "dataset-convert"
    assert tasks["train"]["inputs"]["artifacts"]["train_data"]["taskOutputArtifact"]["outputArtifactKey"] == \
        "train_data"
    assert _producer(tasks["prune"], "model") == "train"
    assert (_producer(tasks["retrain"], "pruned"), _producer(tasks["retrain"], "train_data")) == (
        "prune", "dataset-convert")
    evaluated = {tasks[t]["taskInfo"]["name"]: _producer(tasks[t], "model")
                 for t in EVALUATIONS}
    assert evaluated == {"evaluate unpruned": "train", "evaluate pruned": "prune", "evaluate retrained": "retrain",
                         "evaluate Keras (export mode)": "retrain", "evaluate ONNX fp32": "export",
                         "evaluate ONNX INT8": "calibrate"}
    at_export = {t: tasks[t]["inputs"]["parameters"]["export_settings"] for t in EVALUATIONS}
    assert at_export.pop("evaluate-4") == {"componentInputParameter": "export_settings"}  # Keras as exported
    assert all(v == {"runtimeValue": {"constant": ""}} for v in at_export.values())
    gate = tasks["int8-gate"]["inputs"]["parameters"]
    assert (gate["fp32_ap"]["taskOutputParameter"]["producerTask"], gate["int8_ap"]["taskOutputParameter"][
        "producerTask"], gate["max_drop"]["runtimeValue"]["constant"]) == ("evaluate-5", "evaluate-6", 0.02)
    assert _producer(tasks["export"], "model") == "retrain"
    # calibrate gets the few images it reads, not the train split; they are keyed by the data version
    assert (_producer(tasks["calibrate"], "exported"), _producer(tasks["calibrate"], "calibration_images")) == (
        "export", "calibration-data")
    assert set(tasks["calibrate"]["inputs"]["artifacts"]) == {"exported", "calibration_images"}
    cal = tasks["calibration-data"]["inputs"]["parameters"]
    assert cal["data_version"]["taskOutputParameter"] == {"outputParameterKey": "Output",
                                                          "producerTask": "data-version"}
    assert cal["dataset_uri"] == {"componentInputParameter": "dataset_uri"}
    assert "artifacts" not in tasks["calibration-data"]["inputs"]  # it reads the raw dataset by URI, nothing whole
    for step in (*EVALUATIONS, "inference", "train", "retrain"):  # train/retrain: the learning curve's AP
        artifact = tasks[step]["inputs"]["artifacts"]["val_data"]["taskOutputArtifact"]
        assert artifact == {"outputArtifactKey": "val_data", "producerTask": "dataset-convert"}  # val split only
    assert _producer(tasks["inference"], "model") == "retrain"
    resolve = tasks["resolve-specs"]["inputs"]["parameters"]
    for name in ("train_spec", "retrain_spec", "inference_spec", "prune_settings", "export_settings"):
        assert resolve[name] == {"componentInputParameter": name}  # the run's specs, as the form holds them
    reads = {"train": ("train_spec",), "retrain": ("retrain_spec",), "prune": ("prune_settings", "inference_spec"),
             "export": ("export_settings",), "calibrate": ("export_settings",),
             "calibration-data": ("export_settings", "dataset_spec"),
             **{step: ("inference_spec",) for step in (*EVALUATIONS, "inference")}}
    for step, names in reads.items():  # its spec as the run holds it, and the checked run parameters to lay over
        params = tasks[step]["inputs"]["parameters"]
        assert params["overrides"] == _resolved("overrides"), step
        assert all(params[name] == {"componentInputParameter": name} for name in names), step


def test_every_step_runs_the_project_image_without_installing_anything(compiled):
    pipeline, _, _, spec = compiled
    executors = pipeline["deploymentSpec"]["executors"]
    assert len(executors) == 21
    for name, executor in executors.items():
        container = executor["container"]
        assert container["image"] == (spec.images.jetson if name == "exec-build-engine-2" else spec.images.gpu)
        assert "pip install" not in " ".join(container["command"])
        body = container["command"][-1]  # wiring only: the work is runtime's or the library's release gates
        assert "from components" in body or "from bpnet import release" in body, name


def test_gpu_steps_request_gpus_and_land_on_the_spec_pool(compiled):
    pipeline, k8s, _, _ = compiled
    executors = pipeline["deploymentSpec"]["executors"]
    expected_gpus = {"train": "2", "retrain": "4", "evaluate": "1", "evaluate-2": "1", "evaluate-3": "1",
                     "evaluate-4": "1", "evaluate-5": "1", "evaluate-6": "1", "inference": "1"}
    for step in GPU_STEPS:
        accel = executors[f"exec-{step}"]["container"]["resources"]["accelerator"]
        assert (accel["resourceType"], accel["resourceCount"]) == ("nvidia.com/gpu", expected_gpus[step])
        assert k8s[f"exec-{step}"]["nodeSelector"]["labels"] == {"pool.example.com/name": "a100-pool",
                                                                 "nvidia.com/gpu.present": "true"}
        assert {"key": "dedicated", "operator": "Equal", "value": "training",
                "effect": "NoExecute"} in k8s[f"exec-{step}"]["tolerations"]
    cpu_steps = ("data-version", "dataset-convert", "calibration-data", "prune", "export", "calibrate",
                 "promotion-gate", "publish")
    for step in cpu_steps:
        assert "accelerator" not in executors[f"exec-{step}"]["container"].get("resources", {})
        assert "nodeSelector" not in k8s[f"exec-{step}"] and "tolerations" not in k8s[f"exec-{step}"]
    assert executors["exec-dataset-convert"]["container"]["resources"]["cpuRequest"] == 8.0
    # Kubernetes quantities kfp's own check refuses ('1.5Gi', '.5'), passed in bytes and millicores
    memory = executors["exec-dataset-convert"]["container"]["resources"]
    assert memory["memoryRequest"] == memory["memoryLimit"] == pytest.approx(1.5 * 2**30 / 1e9)
    assert executors["exec-prune"]["container"]["resources"]["cpuRequest"] == 0.5


def test_train_and_retrain_get_the_gpu_count_as_their_gpus_argument(compiled):
    tasks = _tasks(compiled[0])
    assert tasks["train"]["inputs"]["parameters"]["gpus"]["runtimeValue"]["constant"] == 2
    assert tasks["retrain"]["inputs"]["parameters"]["gpus"]["runtimeValue"]["constant"] == 4


def test_secrets_are_env_references(compiled):
    """(That no secret *value* reaches the package or the server: test_pipeline_submit.py.)"""
    _, k8s, _, _ = compiled
    for step in STORAGE_STEPS:  # the steps that read dataset_uri or the release root
        env = {e["envVar"]: (s["secretName"], e["secretKey"]) for s in k8s[f"exec-{step}"]["secretAsEnv"]
               for e in s["keyToEnv"]}
        assert {"BPNET_S3_ACCESS_KEY": ("mlpipeline-minio-artifact", "accesskey"),
                "BPNET_S3_SECRET_KEY": ("mlpipeline-minio-artifact", "secretkey")}.items() <= env.items()
    for step in MODEL_KEY_STEPS:
        [secret] = [s for s in k8s[f"exec-{step}"]["secretAsEnv"] if s["secretName"] == "bpnet-model-key"]
        assert secret["keyToEnv"] == [{"envVar": "BPNET_MODEL_KEY", "secretKey": "key"}]


def test_retries_caching_and_timeouts_follow_the_spec(compiled):
    pipeline, k8s, _, _ = compiled
    tasks = _tasks(pipeline)
    expected = {"data-version": (2, False, "600"), "dataset-convert": (3, True, "7200"),
                "train": (1, True, "86400"), "prune": (2, True, "900"), "retrain": (1, True, "43200"),
                "evaluate": (2, True, "3600"), "evaluate-3": (2, True, "3600"), "inference": (0, False, "1800"),
                "int8-gate": (1, True, "1200")}
    for name, (retries, cache, timeout) in expected.items():
        task = tasks[name]
        assert task.get("retryPolicy", {}).get("maxRetryCount", 0) == retries
        assert task["cachingOptions"].get("enableCache", False) is cache
        assert k8s[f"exec-{name}"]["activeDeadlineSeconds"] == timeout
        assert k8s[f"exec-{name}"]["securityContext"] == {"runAsNonRoot": True, "runAsUser": "1000"}


def test_publish_runs_only_under_the_gate_and_train_warm_starts(compiled):
    pipeline = compiled[0]
    tasks = _tasks(pipeline)
    condition = tasks["condition-1"]
    assert condition["triggerPolicy"]["condition"] == (
        "inputs.parameter_values['pipelinechannel--promotion-gate-Output'] == 'promote'")
    assert "promotion-gate" in condition["dependentTasks"]
    promoted = pipeline["components"][condition["componentRef"]["name"]]["dag"]["tasks"]
    assert sorted(promoted) == ["for-loop-2", "for-loop-3", "publish"]
    assert sorted(promoted["publish"]["dependentTasks"]) == ["for-loop-2", "for-loop-3"]  # engines first
    assert "publish" not in tasks  # nowhere outside the condition
    assert tasks["promotion-gate"]["inputs"]["parameters"]["ap"]["taskOutputParameter"]["producerTask"] == "evaluate-3"
    assert tasks["promotion-gate"]["inputs"]["parameters"]["min_ap"] == _resolved("min_ap")  # the run spec's unless set
    assert tasks["resolve-specs"]["inputs"]["parameters"]["spec_min_ap"]["runtimeValue"]["constant"] == 0.5
    assert tasks["train"]["inputs"]["parameters"]["warm_start"]["runtimeValue"]["constant"] == "s3://bpnet/releases"


def test_engine_builds_fan_out_per_pool_with_their_images_and_node_pools(compiled):
    pipeline, k8s, _, spec = compiled
    promoted = pipeline["components"]["comp-condition-1"]["dag"]["tasks"]
    gate = _tasks(pipeline)["int8-gate"]["inputs"]["parameters"]  # the spec's targets, engine_targets picks
    assert gate["chosen"] == _resolved("engine_targets")
    loops = {}
    for name in ("for-loop-2", "for-loop-3"):
        [task] = pipeline["components"][promoted[name]["componentRef"]["name"]]["dag"]["tasks"].values()
        source = promoted[name]["parameterIterator"]["items"]["inputParameter"]  # the INT8 gate's kept targets
        pool = source.removeprefix("pipelinechannel--int8-gate-")
        loops[task["componentRef"]["name"]] = (pool, [(i["name"], i["serves"])
                                                      for i in gate[pool]["runtimeValue"]["constant"]])
    assert loops == {"comp-build-engine": ("gpu_targets", [("gpu-fp16", "triton"), ("gpu-int8", "triton")]),
                     "comp-build-engine-2": ("jetson_targets", [("jetson-fp16", "deepstream"),
                                                                ("jetson-int8-dla0", "deepstream")])}
    executors = pipeline["deploymentSpec"]["executors"]
    gpu, jetson = executors["exec-build-engine"]["container"], executors["exec-build-engine-2"]["container"]
    assert gpu["image"] == spec.images.gpu and jetson["image"] == spec.images.jetson
    assert gpu["resources"]["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert "accelerator" not in (jetson.get("resources") or {})  # the GPU Operator does not manage Jetson
    assert k8s["exec-build-engine"]["nodeSelector"]["labels"]["pool.example.com/name"] == "a100-pool"
    assert k8s["exec-build-engine-2"]["nodeSelector"]["labels"] == {"kubernetes.io/arch": "arm64",
                                                                   "bpnet.example.com/jetson": "true"}
    assert k8s["exec-build-engine-2"]["tolerations"] == [{"effect": "NoSchedule", "key": "bpnet.example.com/jetson",
                                                          "operator": "Exists"}]
    artifacts = promoted["publish"]["inputs"]["artifacts"]
    assert artifacts["gpu_engines"]["taskOutputArtifact"]["producerTask"] == "for-loop-2"
    assert artifacts["jetson_engines"]["taskOutputArtifact"]["producerTask"] == "for-loop-3"
    params = promoted["publish"]["inputs"]["parameters"]
    assert params["int8_verdict"] == {"componentInputParameter": "pipelinechannel--int8-gate-verdict"}
    serving = json.loads(params["serving"]["runtimeValue"]["constant"])
    assert serving == spec.serving_options().model_dump(mode="json")
    assert serving["accelerator_type"] == spec.gpu.accelerator_type  # KServe requests GPUs as the steps do


def test_engine_builds_know_their_node_not_their_pod(compiled):
    """The build record's node is $NODE_NAME (else the hostname: a pod's name): the downward API's
    spec.nodeName on both engine executors, and on no other step."""
    _, k8s, _, _ = compiled
    for step in ("build-engine", "build-engine-2"):
        assert k8s[f"exec-{step}"]["fieldPathAsEnv"] == [{"name": "NODE_NAME", "fieldPath": "spec.nodeName"}]
    assert {name for name, executor in k8s.items() if "fieldPathAsEnv" in executor} == {
        "exec-build-engine", "exec-build-engine-2"}


def test_minio_endpoint_is_plain_env_on_the_data_steps(compiled):
    for step in ("data-version", "dataset-convert"):
        env = {e["name"]: e["value"] for e in compiled[0]["deploymentSpec"]["executors"][f"exec-{step}"][
            "container"]["env"]}
        assert env == {"BPNET_S3_ENDPOINT": "minio-service.kubeflow:9000", "BPNET_S3_SECURE": "false"}


def test_no_pipeline_root_unless_the_spec_sets_one(compiled, tmp_path):
    assert "defaultPipelineRoot" not in compiled[0]  # the namespace's kfp-launcher default applies
    spec = compiled[3].model_copy(update={"pipeline_root": "minio://other/root"})
    pipeline, _ = yaml.safe_load_all(compile_pipeline(spec, tmp_path / "p.yaml").read_text())
    assert pipeline["defaultPipelineRoot"] == "minio://other/root"


def test_parameter_defaults_are_the_specs_so_the_yaml_runs_from_the_ui(compiled):
    inputs = compiled[0]["root"]["inputDefinitions"]["parameters"]
    repo = Path(__file__).resolve().parents[1]
    assert json.loads(inputs["train_spec"]["defaultValue"]) == yaml.safe_load(
        (repo / "specs" / "bpnet_train_m1_coco.yaml").read_text())
    assert inputs["dataset_uri"]["defaultValue"] == "s3://datasets/coco2017-person"
    assert inputs["data_version"]["defaultValue"] == "v7"
    assert json.loads(inputs["prune_settings"]["defaultValue"])["pruning_threshold"] == 0.05
    outputs = compiled[0]["root"]["outputDefinitions"]
    assert outputs["parameters"]["ap"]["parameterType"] == "NUMBER_DOUBLE"  # for dsl.If gates downstream
    assert outputs["artifacts"]["metrics_retrained"]["artifactType"]["schemaTitle"] == "system.Metrics"
