"""The Kubernetes objects of multi-worker training, as plain dicts (what the launcher creates and
what ``python -m pipelines manifests`` prints for the cluster admin).

Two engines, both Kubeflow's own: Kubeflow Trainer v2 (a ``TrainJob`` on the project's
``ClusterTrainingRuntime``: Trainer ships no TensorFlow runtime, so the runtime is a plain one, an
empty ``mlPolicy``, and each pod derives TF_CONFIG from the JobSet index and hostnames, see
bpnet.cluster) and the Training Operator v1 (a ``TFJob``, which sets TF_CONFIG itself). Every pod
runs ``python -m components.worker`` with the work described in ``BPNET_WORKER_TASK``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from bpnet.cluster import (
    CLUSTER_ENV,
    DEFAULT_PORT,
    JOBSET_NAME_ENV,
    PORT_ENV,
    REPLICATED_JOB_ENV,
    WORKERS_ENV,
)
from bpnet.settings import NodePool

Engine = Literal["trainjob", "tfjob"]
TRAINER_GROUP, TRAINER_VERSION = "trainer.kubeflow.org", "v1alpha1"
TFJOB_GROUP, TFJOB_VERSION = "kubeflow.org", "v1"
TASK_ENV = "BPNET_WORKER_TASK"
WORKER_COMMAND = ["python", "-m", "components.worker"]
NODE = "node"  # Trainer's replicated job and container name for the training nodes
FIELD_MANAGER = "bpnet-launcher"
LABELS = {"app.kubernetes.io/part-of": "bpnet"}


@dataclass(frozen=True)
class Resource:
    """Where a job kind lives in the API (group, version, plural) and what ends it."""

    group: str
    version: str
    kind: str
    plural: str
    succeeded: str  # the status condition type of success; "Failed" is failure for both
    chief_selector: str  # label selector of the chief's pod ({name} = the job's name)


RESOURCES: dict[str, Resource] = {
    "trainjob": Resource(TRAINER_GROUP, TRAINER_VERSION, "TrainJob", "trainjobs", "Complete",
                         "jobset.sigs.k8s.io/jobset-name={name},batch.kubernetes.io/job-completion-index=0"),
    "tfjob": Resource(TFJOB_GROUP, TFJOB_VERSION, "TFJob", "tfjobs", "Succeeded",
                      "training.kubeflow.org/job-name={name},training.kubeflow.org/replica-type=worker,"
                      "training.kubeflow.org/replica-index=0"),
}


@dataclass(frozen=True)
class SecretEnv:
    """An environment variable taken from a Kubernetes secret (its value never appears here)."""

    env: str
    secret: str
    key: str


@dataclass(frozen=True)
class JobRequest:
    """One multi-worker training job: everything the two engines' objects are made from."""

    name: str
    namespace: str
    image: str
    workers: int
    task: str  # BPNET_WORKER_TASK's JSON
    gpus_per_worker: int = 0
    accelerator_type: str = "nvidia.com/gpu"
    pool: NodePool = field(default_factory=NodePool)
    env: dict[str, str] = field(default_factory=dict)
    secret_env: tuple[SecretEnv, ...] = ()
    run_as_user: int | None = None
    runtime: str = "bpnet-tensorflow"
    port: int = DEFAULT_PORT


def job_name(run_id: str, task: str, prefix: str = "bpnet") -> str:
    """The same name for the same KFP run and task, so a retried launcher pod finds its job again.
    Short enough for JobSet's pod hostnames (<name>-node-0-<i>, at most 63 characters)."""
    slug = re.sub(r"[^a-z0-9]+", "-", task.lower()).strip("-")[:16] or "train"
    digest = hashlib.sha256(f"{run_id}/{task}".encode()).hexdigest()[:10]
    return f"{prefix}-{slug}-{digest}"


def _env_list(req: JobRequest, extra: dict[str, str]) -> list[dict[str, Any]]:
    plain = {**req.env, **extra, TASK_ENV: req.task}
    return ([{"name": k, "value": v} for k, v in plain.items()]
            + [{"name": s.env, "valueFrom": {"secretKeyRef": {"name": s.secret, "key": s.key}}}
               for s in req.secret_env])


def _pod_placement(req: JobRequest) -> dict[str, Any]:
    """nodeSelector, tolerations and the security context of every worker pod."""
    out: dict[str, Any] = {}
    if req.pool.node_selector:
        out["nodeSelector"] = dict(req.pool.node_selector)
    if req.pool.tolerations:
        out["tolerations"] = [{k: v for k, v in {"key": t.key, "operator": t.operator, "value": t.value,
                                                 "effect": t.effect}.items() if v is not None}
                              for t in req.pool.tolerations]
    if req.run_as_user is not None:
        out["securityContext"] = {"runAsUser": req.run_as_user, "runAsNonRoot": True}
    return out


def _resources(req: JobRequest) -> dict[str, Any]:
    return {"limits": {req.accelerator_type: req.gpus_per_worker}} if req.gpus_per_worker else {}


def _label_env(name: str, label: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": f"metadata.labels['{label}']"}}}


def cluster_training_runtime(name: str, image: str, port: int = DEFAULT_PORT) -> dict[str, Any]:
    """The project's TensorFlow runtime for Trainer v2 (applied once by the cluster admin): one
    replicated job of training nodes, stable DNS hostnames, no restarts (a lost worker fails the
    job; a rerun resumes from the chief's checkpoint), and the environment bpnet.cluster reads."""
    container = {
        "name": NODE, "image": image, "command": WORKER_COMMAND,
        "env": [{"name": CLUSTER_ENV, "value": "jobset"}, {"name": PORT_ENV, "value": str(port)},
                _label_env(JOBSET_NAME_ENV, "jobset.sigs.k8s.io/jobset-name"),
                _label_env(REPLICATED_JOB_ENV, "jobset.sigs.k8s.io/replicatedjob-name")],
        "ports": [{"name": "collective", "containerPort": port}],
    }
    return {
        "apiVersion": f"{TRAINER_GROUP}/{TRAINER_VERSION}", "kind": "ClusterTrainingRuntime",
        "metadata": {"name": name, "labels": {"trainer.kubeflow.org/framework": "tensorflow"}},
        "spec": {
            "mlPolicy": {"numNodes": 1},
            "template": {"spec": {
                "network": {"enableDNSHostnames": True, "publishNotReadyAddresses": True},
                "failurePolicy": {"maxRestarts": 0},
                "replicatedJobs": [{"name": NODE, "template": {
                    "metadata": {"labels": {"trainer.kubeflow.org/trainjob-ancestor-step": "trainer"}},
                    "spec": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never",
                                                                      "containers": [container]}}}}}],
            }},
        },
    }


def train_job(req: JobRequest) -> dict[str, Any]:
    """A TrainJob on the project's ClusterTrainingRuntime: N nodes, the image, the work, GPUs, pool."""
    trainer: dict[str, Any] = {"image": req.image, "numNodes": req.workers,
                               "env": _env_list(req, {WORKERS_ENV: str(req.workers)})}
    if req.gpus_per_worker:
        trainer["resourcesPerNode"] = _resources(req)
    spec: dict[str, Any] = {"runtimeRef": {"name": req.runtime, "kind": "ClusterTrainingRuntime",
                                           "apiGroup": TRAINER_GROUP},
                            "trainer": trainer}
    placement = _pod_placement(req)
    if placement:
        spec["runtimePatches"] = [{"manager": FIELD_MANAGER, "trainingRuntimeSpec": {"template": {"spec": {
            "replicatedJobs": [{"name": NODE, "template": {"spec": {"template": {"spec": placement}}}}]}}}}]
    return {"apiVersion": f"{TRAINER_GROUP}/{TRAINER_VERSION}", "kind": "TrainJob",
            "metadata": {"name": req.name, "namespace": req.namespace, "labels": dict(LABELS)},
            "spec": spec}


def tf_job(req: JobRequest) -> dict[str, Any]:
    """A TFJob of N workers (the operator sets TF_CONFIG; worker 0 is the chief); never restarted."""
    container: dict[str, Any] = {"name": "tensorflow", "image": req.image, "command": WORKER_COMMAND,
                                 "env": _env_list(req, {}),
                                 "ports": [{"name": "tfjob-port", "containerPort": req.port}]}
    if req.gpus_per_worker:
        container["resources"] = _resources(req)
    return {"apiVersion": f"{TFJOB_GROUP}/{TFJOB_VERSION}", "kind": "TFJob",
            "metadata": {"name": req.name, "namespace": req.namespace, "labels": dict(LABELS)},
            "spec": {"runPolicy": {"cleanPodPolicy": "None", "backoffLimit": 0},
                     "tfReplicaSpecs": {"Worker": {"replicas": req.workers, "restartPolicy": "Never", "template": {
                         "spec": {"containers": [container], **_pod_placement(req)}}}}}}


def job_manifest(engine: Engine, req: JobRequest) -> dict[str, Any]:
    return train_job(req) if engine == "trainjob" else tf_job(req)


def launcher_role(namespace: str, service_account: str, engine: Engine,
                  name: str = "bpnet-training-launcher") -> list[dict[str, Any]]:
    """Role + RoleBinding: what the launcher does and nothing more (create, read and delete its
    jobs; find the chief's pod and read its log)."""
    r = RESOURCES[engine]
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": name, "namespace": namespace},
            "rules": [{"apiGroups": [r.group], "resources": [r.plural], "verbs": ["create", "get", "delete"]},
                      {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
                      {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]}]}
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": name, "namespace": namespace},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
               "subjects": [{"kind": "ServiceAccount", "name": service_account, "namespace": namespace}]}
    return [role, binding]
