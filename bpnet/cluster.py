"""Which training cluster this process belongs to: its workers, its index, whether it is the chief.

TensorFlow's multi-worker training reads ``TF_CONFIG`` (``{"cluster": {"worker": [host:port, ...]},
"task": {"type": "worker", "index": i}}``). The Training Operator's TFJob sets it for every pod.
Kubeflow Trainer v2 has no TensorFlow runtime, so under a TrainJob the pod builds it itself: with
``BPNET_CLUSTER=jobset`` the worker count comes from ``BPNET_WORKERS``, the index from the
Indexed Job's ``JOB_COMPLETION_INDEX`` and the peers from JobSet's stable hostnames
``<jobset>-<replicated job>-0-<i>.<jobset>`` (``JOBSET_NAME``, ``REPLICATED_JOB_NAME``, put in the
environment by the project's ClusterTrainingRuntime from the pod's labels), on ``BPNET_WORKER_PORT``.

The chief is the ``chief`` task if the cluster names one, else worker 0 (TensorFlow's convention).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass

from bpnet.errors import SpecError

TF_CONFIG_ENV = "TF_CONFIG"
CLUSTER_ENV = "BPNET_CLUSTER"  # "jobset": derive TF_CONFIG from the JobSet environment
WORKERS_ENV = "BPNET_WORKERS"
PORT_ENV = "BPNET_WORKER_PORT"
JOBSET_NAME_ENV = "JOBSET_NAME"
REPLICATED_JOB_ENV = "REPLICATED_JOB_NAME"
COMPLETION_INDEX_ENV = "JOB_COMPLETION_INDEX"  # set by Kubernetes in every pod of an Indexed Job
DEFAULT_PORT = 2222
_TASK_TYPES = ("chief", "worker")


@dataclass(frozen=True)
class Cluster:
    """One process's place in a multi-worker cluster (TF_CONFIG's content, checked)."""

    hosts: dict[str, list[str]]  # task type -> host:port list
    task_type: str
    task_index: int

    @property
    def size(self) -> int:
        """Number of worker processes (chief included): each holds a copy of the model."""
        return sum(len(v) for v in self.hosts.values())

    @property
    def is_chief(self) -> bool:
        if self.hosts.get("chief"):
            return self.task_type == "chief"
        return self.task_type == "worker" and self.task_index == 0

    @property
    def rank(self) -> int:
        """0 for the chief, then the workers in order: the input pipeline this process reads."""
        chiefs = len(self.hosts.get("chief", []))
        return self.task_index if self.task_type == "chief" else chiefs + self.task_index

    def tf_config(self) -> str:
        return json.dumps({"cluster": self.hosts, "task": {"type": self.task_type, "index": self.task_index}})


def parse_tf_config(text: str) -> Cluster:
    """TF_CONFIG's JSON as a ``Cluster``; a malformed one is a SpecError naming the field."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SpecError([f"{TF_CONFIG_ENV}: not JSON ({exc.msg})"]) from None
    if not isinstance(raw, dict) or not isinstance(raw.get("cluster"), dict) or not isinstance(raw.get("task"), dict):
        raise SpecError([f"{TF_CONFIG_ENV}: expected {{\"cluster\": {{...}}, \"task\": {{\"type\", \"index\"}}}}"])
    hosts = {}
    for kind, members in raw["cluster"].items():
        if kind not in _TASK_TYPES:  # ps/evaluator would need another strategy
            raise SpecError([f"{TF_CONFIG_ENV}: cluster.{kind}: only {' and '.join(_TASK_TYPES)} tasks are supported"])
        if not isinstance(members, list) or not all(isinstance(m, str) and m for m in members):
            raise SpecError([f"{TF_CONFIG_ENV}: cluster.{kind}: expected a list of host:port strings"])
        hosts[kind] = members
    if len(hosts.get("chief", [])) > 1:
        raise SpecError([f"{TF_CONFIG_ENV}: cluster.chief: at most one chief, got {len(hosts['chief'])}"])
    task_type, index = raw["task"].get("type"), raw["task"].get("index", 0)
    if task_type not in hosts:
        raise SpecError([f"{TF_CONFIG_ENV}: task.type {task_type!r} is not in the cluster ({sorted(hosts)})"])
    if not isinstance(index, int) or not 0 <= index < len(hosts[task_type]):
        raise SpecError([f"{TF_CONFIG_ENV}: task.index {index!r}: expected 0..{len(hosts[task_type]) - 1}"])
    return Cluster(hosts, task_type, index)


def _int_env(env: Mapping[str, str], name: str, default: int | None = None, minimum: int = 0) -> int:
    value = env.get(name)
    if value is None and default is not None:
        return default
    try:
        number = int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise SpecError([f"{name}: expected an integer >= {minimum}, got {value!r}"]) from None
    if number < minimum:
        raise SpecError([f"{name}: expected an integer >= {minimum}, got {number}"])
    return number


def jobset_cluster(env: Mapping[str, str]) -> Cluster:
    """The cluster of a JobSet pod (a TrainJob's node), from the environment described above."""
    missing = [n for n in (JOBSET_NAME_ENV, REPLICATED_JOB_ENV) if not env.get(n)]
    if missing:
        raise SpecError([f"{CLUSTER_ENV}=jobset: {', '.join(missing)} not set (the ClusterTrainingRuntime "
                         "sets them from the pod's jobset.sigs.k8s.io labels)"])
    workers = _int_env(env, WORKERS_ENV, minimum=1)
    index = _int_env(env, COMPLETION_INDEX_ENV)
    if index >= workers:
        raise SpecError([f"{COMPLETION_INDEX_ENV}: {index} is not below {WORKERS_ENV}={workers}"])
    port = _int_env(env, PORT_ENV, DEFAULT_PORT, minimum=1)
    job, replicated = env[JOBSET_NAME_ENV], env[REPLICATED_JOB_ENV]
    return Cluster({"worker": [f"{job}-{replicated}-0-{i}.{job}:{port}" for i in range(workers)]}, "worker", index)


def cluster_from_env(env: Mapping[str, str] | None = None) -> Cluster | None:
    """This process's cluster, or None when it trains alone (no TF_CONFIG, or one worker).

    With ``BPNET_CLUSTER=jobset`` the derived TF_CONFIG is also exported, because
    MultiWorkerMirroredStrategy reads it from the environment itself."""
    env = os.environ if env is None else env
    mode = env.get(CLUSTER_ENV, "")
    if mode not in ("", "jobset"):
        raise SpecError([f"{CLUSTER_ENV}: expected 'jobset' or unset, got {mode!r}"])
    if mode == "jobset":
        cluster = jobset_cluster(env)
        if env is os.environ:
            os.environ[TF_CONFIG_ENV] = cluster.tf_config()
    elif env.get(TF_CONFIG_ENV):
        cluster = parse_tf_config(env[TF_CONFIG_ENV])
    else:
        return None
    return cluster if cluster.size > 1 else None
