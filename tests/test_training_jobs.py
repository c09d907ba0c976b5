"""The multi-worker job objects: valid against the vendored CRDs and Kubernetes' RBAC models,
deterministic names, and what each engine's pods get."""

from __future__ import annotations

import jsonschema
import pytest

from bpnet.settings import NodePool, Toleration
from components.training_jobs import (
    JobRequest,
    SecretEnv,
    cluster_training_runtime,
    job_name,
    launcher_role,
    tf_job,
    train_job,
)
from tests.k8s_schema import validate_builtin, validate_custom


def request(**changes) -> JobRequest:
    base = dict(name=job_name("run-1", "train"), namespace="team", image="registry.example.com/bpnet-gpu:1",
                workers=4, task='{"train_spec": "..."}', gpus_per_worker=2,
                pool=NodePool(node_selector={"pool": "gpu"}, tolerations=[Toleration(key="nvidia.com/gpu")]),
                env={"BPNET_S3_ENDPOINT": "minio:9000"},
                secret_env=(SecretEnv("BPNET_S3_ACCESS_KEY", "mlpipeline-minio-artifact", "accesskey"),),
                run_as_user=1000)
    return JobRequest(**{**base, **changes})


@pytest.mark.parametrize("req", [request(), request(gpus_per_worker=0, pool=NodePool(), run_as_user=None)])
def test_every_generated_custom_object_validates_against_its_crd(req):
    for obj in (train_job(req), tf_job(req), cluster_training_runtime("bpnet-tensorflow", req.image)):
        validate_custom(obj)


def test_the_validator_rejects_what_the_api_server_would(tmp_path):
    job = train_job(request())
    with pytest.raises(jsonschema.ValidationError):
        validate_custom({**job, "spec": {**job["spec"], "trainer": {**job["spec"]["trainer"], "numNodes": -1}}})
    with pytest.raises(AssertionError, match="numNode"):
        validate_custom({**job, "spec": {**job["spec"], "trainer": {"numNode": 2}}})
    role, _ = launcher_role("team", "pipeline-runner", "trainjob")
    with pytest.raises(ValueError, match="verbs"):
        validate_builtin({**role, "rules": [{"apiGroups": [""], "resources": ["pods"]}]})
    with pytest.raises(AssertionError, match="verb"):
        validate_builtin({**role, "rules": [{"apiGroups": [""], "resources": ["pods"], "verb": ["get"]}]})


@pytest.mark.parametrize("engine", ["trainjob", "tfjob"])
def test_rbac_is_valid_and_least_privilege(engine):
    role, binding = launcher_role("team", "pipeline-runner", engine)
    validate_builtin(role)
    validate_builtin(binding)
    verbs = {(g, r): set(rule["verbs"]) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]}
    group = "trainer.kubeflow.org" if engine == "trainjob" else "kubeflow.org"
    plural = "trainjobs" if engine == "trainjob" else "tfjobs"
    assert verbs == {(group, plural): {"create", "get", "delete"}, ("", "pods"): {"list"}, ("", "pods/log"): {"get"}}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "pipeline-runner", "namespace": "team"}]


def test_job_names_are_stable_per_run_and_task_and_fit_jobset_hostnames():
    assert job_name("run-1", "train") == job_name("run-1", "train")
    assert len({job_name("run-1", "train"), job_name("run-2", "train"), job_name("run-1", "retrain")}) == 3
    name = job_name("9f8e" * 9, "Retrain (pruned model)!")
    assert len(f"{name}-node-0-99") <= 63 and name.replace("-", "").isalnum() and name.islower()


def test_trainjob_pods_derive_tf_config_and_tfjob_pods_get_it():
    req = request()
    trainer = train_job(req)["spec"]["trainer"]
    assert trainer["numNodes"] == 4 and trainer["resourcesPerNode"] == {"limits": {"nvidia.com/gpu": 2}}
    env = {e["name"]: e for e in trainer["env"]}
    assert env["BPNET_WORKERS"]["value"] == "4" and env["BPNET_WORKER_TASK"]["value"] == req.task
    assert env["BPNET_S3_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "mlpipeline-minio-artifact",
                                                                       "key": "accesskey"}
    runtime_env = {e["name"]: e for e in cluster_training_runtime("r", "img")["spec"]["template"]["spec"][
        "replicatedJobs"][0]["template"]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert runtime_env["BPNET_CLUSTER"]["value"] == "jobset"
    assert "jobset-name" in runtime_env["JOBSET_NAME"]["valueFrom"]["fieldRef"]["fieldPath"]
    worker = tf_job(req)["spec"]["tfReplicaSpecs"]["Worker"]
    assert worker["replicas"] == 4 and worker["restartPolicy"] == "Never"
    assert "BPNET_CLUSTER" not in {e["name"] for e in worker["template"]["spec"]["containers"][0]["env"]}
    assert worker["template"]["spec"]["nodeSelector"] == {"pool": "gpu"}


def test_manifests_command_prints_valid_runtime_and_rbac(tmp_path, capsys):
    import yaml

    from pipelines.__main__ import main
    from tests.test_pipeline_submit import cluster_spec

    expected = {"trainjob": ["ClusterTrainingRuntime", "Role", "RoleBinding"], "tfjob": ["Role", "RoleBinding"]}
    for engine, kinds in expected.items():
        spec = cluster_spec(tmp_path, distributed={"engine": engine, "service_account": "default-editor"})
        assert main(["manifests", "--spec", str(spec)]) == 0
        docs = list(yaml.safe_load_all(capsys.readouterr().out))
        assert [d["kind"] for d in docs] == kinds
        for doc in docs:
            (validate_custom if doc["kind"] == "ClusterTrainingRuntime" else validate_builtin)(doc)
        assert docs[-1]["subjects"][0]["name"] == "default-editor"


def test_a_multi_worker_train_step_is_a_launcher_of_a_valid_job(tmp_path):
    import json

    import yaml

    from components.distributed import JobTemplate, WorkerTask
    from components.training_jobs import job_manifest
    from pipelines.arguments import load_run_spec
    from pipelines.submit import compile_pipeline
    from tests.test_pipeline_submit import cluster_spec

    spec = load_run_spec(cluster_spec(tmp_path, steps={"train": {"gpus": 2, "workers": 4}},
                                      distributed={"engine": "tfjob"}))
    pipeline, platform = yaml.safe_load_all(compile_pipeline(spec, tmp_path / "p.yaml").read_text())
    tasks = pipeline["root"]["dag"]["tasks"]
    params = tasks["train"]["inputs"]["parameters"]
    assert params["workers"]["runtimeValue"]["constant"] == 4
    assert "retrain" in tasks and "workers" not in tasks["retrain"]["inputs"]["parameters"]  # default: one pod
    executors = pipeline["deploymentSpec"]["executors"]
    assert "accelerator" not in executors["exec-train"]["container"].get("resources", {})  # the launcher: no GPU
    assert executors["exec-retrain"]["container"]["resources"]["accelerator"]["count"] == "1"
    template = JobTemplate.from_json(params["job"]["runtimeValue"]["constant"])
    assert (template.engine, template.workers, template.gpus_per_worker) == ("tfjob", 4, 2)
    task = WorkerTask("minio://b/train", "minio://b/val", "num_epoch: 1", "", "minio://b/model.workers", gpus=2)
    job = job_manifest(template.engine, template.request("bpnet-train-0123456789", "team", task))
    validate_custom(job)
    env = {e["name"]: e for e in job["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]["env"]}
    assert json.loads(env["BPNET_WORKER_TASK"]["value"])["output"] == "minio://b/model.workers"
    assert env["BPNET_MODEL_KEY"]["valueFrom"]["secretKeyRef"]["name"] == spec.storage.model_key_secret
    secrets = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-train"]
    assert any(s["secretName"] == spec.storage.credentials_secret for s in secrets.get("secretAsEnv", []))
