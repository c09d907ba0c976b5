"""``python -m pipelines manifests --spec RUN_SPEC``: what a cluster admin applies once for
multi-worker training — the project's ClusterTrainingRuntime (engine ``trainjob``) and the Role and
RoleBinding that let the pipeline's service account launch and follow the jobs (least privilege:
components.training_jobs.launcher_role)."""

from __future__ import annotations

from typing import Any

import yaml

from components.training_jobs import cluster_training_runtime, launcher_role
from pipelines.run_spec import RunSpec

DEFAULT_NAMESPACE = "kubeflow"  # KFP's namespace in single-user installs


def admin_manifests(spec: RunSpec) -> list[dict[str, Any]]:
    d = spec.distributed
    namespace = spec.kfp.namespace or DEFAULT_NAMESPACE
    runtime = [cluster_training_runtime(d.runtime, spec.images.gpu)] if d.engine == "trainjob" else []
    return [*runtime, *launcher_role(namespace, d.service_account, d.engine)]


def render(spec: RunSpec) -> str:
    """The objects as one multi-document YAML stream (kubectl apply -f -)."""
    return yaml.safe_dump_all(admin_manifests(spec), sort_keys=False)
