"""Compile, upload, run and schedule the pipeline on a Kubeflow Pipelines server (v2beta1 API).

The host is the run spec's ``kfp.host`` or $KF_PIPELINES_ENDPOINT. Credentials come only from the
environment: $KF_PIPELINES_TOKEN (a bearer token, e.g. a service-account or OIDC token) or
$KF_PIPELINES_COOKIE (e.g. ``authservice_session=...`` copied from a logged-in browser); with
neither, a projected service-account token (inside a cluster: $KF_PIPELINES_SA_TOKEN_PATH or
kfp's default path) is used when present.

On multi-user installs (``kfp.namespace`` set) the pipeline is uploaded into, and looked up in,
that namespace: tenants may not create shared pipelines.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from bpnet.errors import StepError
from pipelines.arguments import pipeline_arguments
from pipelines.dag import build_pipeline
from pipelines.run_spec import RunSpec

log = logging.getLogger(__name__)


class SubmitError(StepError, RuntimeError):
    """The server could not be reached or said no; the message says what to check."""


def compile_pipeline(spec: RunSpec, package_path: str | Path, arguments: dict[str, Any] | None = None) -> Path:
    """Write the compiled pipeline YAML (uploadable in the Kubeflow UI as is)."""
    from kfp import compiler

    package_path = Path(package_path)
    package_path.parent.mkdir(parents=True, exist_ok=True)
    arguments = arguments if arguments is not None else pipeline_arguments(spec)
    compiler.Compiler().compile(build_pipeline(spec, arguments), str(package_path))
    return package_path


def connect(spec: RunSpec):
    """A ``kfp.Client`` for the spec's host with the token or cookie from the environment."""
    import kfp

    host = spec.kfp.host or os.environ.get("KF_PIPELINES_ENDPOINT")
    if not host:
        raise SubmitError("no Kubeflow Pipelines host: set kfp.host in the run spec or $KF_PIPELINES_ENDPOINT")
    token, cookie = os.environ.get("KF_PIPELINES_TOKEN") or None, os.environ.get("KF_PIPELINES_COOKIE") or None
    kwargs: dict[str, Any] = {"host": host, "existing_token": token, "cookies": cookie}
    if token is None and cookie is None:
        from kfp.client import (
            KF_PIPELINES_SA_TOKEN_ENV,
            KF_PIPELINES_SA_TOKEN_PATH,
            ServiceAccountTokenVolumeCredentials,
        )

        if Path(os.environ.get(KF_PIPELINES_SA_TOKEN_ENV) or KF_PIPELINES_SA_TOKEN_PATH).is_file():
            kwargs["credentials"] = ServiceAccountTokenVolumeCredentials()
    if spec.kfp.namespace:
        kwargs["namespace"] = spec.kfp.namespace
    try:
        return kfp.Client(**kwargs)
    except Exception as exc:  # kfp_server_api/urllib3 errors share no narrower base
        raise SubmitError(f"cannot connect to {host}: {type(exc).__name__}: {str(exc)[:300]}") from None


@dataclass(frozen=True)
class Uploaded:
    pipeline_id: str
    version_id: str
    version_name: str


def _pipeline_id(client, name: str, namespace: str | None) -> str | None:
    """The id of the pipeline called ``name`` in ``namespace`` (shared pipelines when None)."""
    import json

    name_filter = json.dumps({"predicates": [{"operation": 1, "key": "display_name", "stringValue": name}]})  # EQUALS
    found = client.list_pipelines(filter=name_filter, namespace=namespace).pipelines or []
    if len(found) > 1:
        raise SubmitError(f"{len(found)} pipelines are named {name!r}; the name must be unique")
    return found[0].pipeline_id if found else None


def upload(client, spec: RunSpec, package: Path) -> Uploaded:
    """Upload ``package`` as a new version of the spec's pipeline (creating the pipeline if new)."""
    name, namespace = spec.kfp.pipeline_name, spec.kfp.namespace
    digest = hashlib.sha256(package.read_bytes()).hexdigest()[:8]
    version_name = f"{name}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{digest}"
    pipeline_id = _pipeline_id(client, name, namespace)
    if pipeline_id is None:
        pipeline_id = client.upload_pipeline(str(package), pipeline_name=name, namespace=namespace,
                                             description="BodyPoseNet (bpnet) training pipeline").pipeline_id
        versions = client.list_pipeline_versions(pipeline_id, page_size=1, sort_by="created_at desc")
        version = versions.pipeline_versions[0]
        log.info("created pipeline %s (%s)", name, pipeline_id)
        return Uploaded(pipeline_id, version.pipeline_version_id, version.display_name)
    version = client.upload_pipeline_version(str(package), pipeline_version_name=version_name,
                                             pipeline_id=pipeline_id)
    log.info("uploaded pipeline %s version %s", name, version_name)
    return Uploaded(pipeline_id, version.pipeline_version_id, version_name)


def _ui_url(client, path: str) -> str:
    return f"{client._get_url_prefix()}/#/{path}"  # kfp's own rule for links (UI host or API host)


def submit_run(spec: RunSpec, build_dir: str | Path, overrides: BaseModel | None = None) -> str:
    """Upload the pipeline, create a run with the spec's parameters (and the typed run parameters
    ``overrides``, a RunOverrides); return the run's URL."""
    arguments = pipeline_arguments(spec, overrides)
    package = compile_pipeline(spec, Path(build_dir) / f"{spec.kfp.pipeline_name}.yaml", arguments=arguments)
    client = connect(spec)
    uploaded = upload(client, spec, package)
    experiment = client.create_experiment(spec.kfp.experiment, namespace=spec.kfp.namespace)
    run_name = f"{spec.name} {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())}"
    run = client.run_pipeline(experiment_id=experiment.experiment_id, job_name=run_name, params=arguments,
                              pipeline_id=uploaded.pipeline_id, version_id=uploaded.version_id)
    return _ui_url(client, f"runs/details/{run.run_id}")


def _recurring_runs_named(client, experiment_id: str, name: str, namespace: str | None) -> list:
    found, token = [], ""
    while True:
        page = client.list_recurring_runs(page_token=token, page_size=100, experiment_id=experiment_id,
                                          namespace=namespace)
        found += [r for r in (page.recurring_runs or []) if r.display_name == name]
        token = page.next_page_token
        if not token:
            return found


def schedule(spec: RunSpec, build_dir: str | Path, overrides: BaseModel | None = None) -> str:
    """Create the spec's recurring run (replacing an older one of the same name); return its URL.

    Each firing starts with the uncached data_version step, so new data behind the URI is
    converted and trained on afresh; at most ``max_concurrency`` runs overlap and missed firings
    are not caught up unless ``catchup`` is set. The new recurring run is created before the old
    one is deleted, so a failure never leaves the pipeline unscheduled.
    """
    if spec.schedule is None:
        raise SubmitError("the run spec has no schedule: add schedule.cron (e.g. '0 2 * * *')")
    arguments = pipeline_arguments(spec, overrides)
    package = compile_pipeline(spec, Path(build_dir) / f"{spec.kfp.pipeline_name}.yaml", arguments=arguments)
    client = connect(spec)
    uploaded = upload(client, spec, package)
    experiment = client.create_experiment(spec.kfp.experiment, namespace=spec.kfp.namespace)
    older = _recurring_runs_named(client, experiment.experiment_id, spec.schedule.name, spec.kfp.namespace)
    job = client.create_recurring_run(
        experiment_id=experiment.experiment_id, job_name=spec.schedule.name, cron_expression=spec.schedule.cron,
        max_concurrency=spec.schedule.max_concurrency, no_catchup=not spec.schedule.catchup, params=arguments,
        pipeline_id=uploaded.pipeline_id, version_id=uploaded.version_id, enabled=True,
        description=f"{spec.kfp.pipeline_name} on cron '{spec.schedule.cron}'")
    for old in older:
        log.info("replacing recurring run %s (%s)", old.display_name, old.recurring_run_id)
        client.delete_recurring_run(old.recurring_run_id)
    return _ui_url(client, f"recurringrun/details/{job.recurring_run_id}")


def unschedule(spec: RunSpec) -> int:
    """Delete the spec's recurring run(s) by name; return how many were removed."""
    if spec.schedule is None:
        raise SubmitError("the run spec has no schedule section: nothing to remove")
    client = connect(spec)
    experiment = client.create_experiment(spec.kfp.experiment, namespace=spec.kfp.namespace)
    found = _recurring_runs_named(client, experiment.experiment_id, spec.schedule.name, spec.kfp.namespace)
    for job in found:
        client.delete_recurring_run(job.recurring_run_id)
    return len(found)
