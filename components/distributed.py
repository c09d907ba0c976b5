"""Multi-worker train/retrain, the KFP step's side (``launch``: start the job, wait, fetch what the
chief wrote into the Model artifact); each worker pod's side is components.worker.

Workers are not KFP pods: KFP downloads nothing for them. Each reads its inputs from the
artifacts' object-store URIs (``minio://`` is the MinIO behind KFP's default pipeline root; the
endpoint and keys are the other steps', from the environment) and the chief uploads its results
under the job's ``output`` prefix: ``checkpoints/`` whenever training stops (finished or not, so a
rerun of the job resumes from them; every worker restores from that copy) and ``model/`` once it
has finished. The launcher then copies ``model/`` into the step's Model artifact, so the next steps
see exactly what the single-pod step would have written.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bpnet.layout import TRAIN_SUMMARY_FILE
from bpnet.settings import NodePool
from bpnet.storage import open_store
from components.training_jobs import TASK_ENV, Engine, JobRequest, SecretEnv, job_manifest, job_name

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def store_uri(uri: str) -> str:
    """An artifact URI as bpnet.storage opens it (KFP names MinIO/SeaweedFS ``minio://``)."""
    return "s3://" + uri[len("minio://"):] if uri.startswith("minio://") else uri


@dataclass(frozen=True)
class WorkerTask:
    """What every worker of one job does (``BPNET_WORKER_TASK``): inputs by URI, spec texts, output."""

    train_data: str
    val_data: str
    train_spec: str
    pose_config: str
    output: str  # prefix the chief uploads checkpoints/ and model/ under
    gpus: int = 0
    pretrained: str = ""  # the pruned Model artifact (retrain)
    warm_start: str = ""
    overrides: str = "{}"  # the run parameters resolve_specs checked
    role: str = "train"

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> WorkerTask:
        return cls(**json.loads(text))


@dataclass(frozen=True)
class JobTemplate:
    """The compile-time part of a job (from the run spec): engine, image, GPUs, pool, secrets."""

    engine: Engine
    image: str
    workers: int
    gpus_per_worker: int = 0
    accelerator_type: str = "nvidia.com/gpu"
    pool: dict[str, Any] = field(default_factory=dict)  # NodePool's fields
    env: dict[str, str] = field(default_factory=dict)
    secret_env: list[list[str]] = field(default_factory=list)  # [env, secret, key]
    run_as_user: int | None = None
    runtime: str = "bpnet-tensorflow"
    namespace: str = ""  # empty: the launcher pod's own
    timeout_seconds: float | None = None
    poll_seconds: float = 15.0

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> JobTemplate:
        return cls(**json.loads(text))

    def request(self, name: str, namespace: str, task: WorkerTask) -> JobRequest:
        return JobRequest(name=name, namespace=namespace, image=self.image, workers=self.workers, task=task.to_json(),
                          gpus_per_worker=self.gpus_per_worker, accelerator_type=self.accelerator_type,
                          pool=NodePool(**self.pool), env=dict(self.env),
                          secret_env=tuple(SecretEnv(*s) for s in self.secret_env), run_as_user=self.run_as_user,
                          runtime=self.runtime)


def task_of(job: dict[str, Any]) -> WorkerTask:
    """The work a job was created with (a re-attached launcher reads it from the job, not its own)."""
    spec = job["spec"]
    containers = (spec["tfReplicaSpecs"]["Worker"]["template"]["spec"]["containers"] if "tfReplicaSpecs" in spec
                  else [spec["trainer"]])
    env = {e["name"]: e.get("value") for c in containers for e in c.get("env", [])}
    return WorkerTask.from_json(env[TASK_ENV])


def _api_client():
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.ApiClient()


def launch(template: JobTemplate, task: WorkerTask, run_id: str, task_name: str, model_dir: str | Path,
           api=None) -> dict[str, Any]:
    """Run the job for this KFP run and task to its end, then copy the chief's model folder into
    ``model_dir``; returns the training summary (as the single-pod step's metadata)."""
    from components.launcher import Launcher

    namespace = template.namespace or SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
    name = job_name(run_id, task_name)
    launcher = Launcher(api or _api_client(), template.engine, namespace, poll_seconds=template.poll_seconds,
                        timeout_seconds=template.timeout_seconds)
    job = launcher.run(job_manifest(template.engine, template.request(name, namespace, task)))
    output = task_of(job).output
    open_store(f"{store_uri(output)}/model").fetch(model_dir)
    summary = json.loads((Path(model_dir) / TRAIN_SUMMARY_FILE).read_text())
    return {**{k: summary[k] for k in ("epochs", "steps", "parameters", "gflops_per_image", "images_per_second",
                                         "first_loss", "last_loss") if summary.get(k) is not None},
            "workers": template.workers, "engine": template.engine, "job": name}
