"""The train/retrain step when it runs on several workers: create the engine's job, follow it, end it.

The pattern of google-cloud-pipeline-components' job launchers, on Kubeflow's engines through the
official ``kubernetes`` client: the job's name comes from the KFP run and task
(components.training_jobs.job_name), so a retried launcher pod re-attaches to the job it started
instead of starting a second one; the launcher streams the chief's log, polls the job's status
conditions until one is terminal, and deletes the job when the run is cancelled (SIGTERM) or the
step times out. API errors end the step with one line saying what to do (403: the Role of
``python -m pipelines manifests`` is missing; 404: the engine is not installed; no answer).
"""

from __future__ import annotations

import logging
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TextIO

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from bpnet.errors import StepError
from components.training_jobs import RESOURCES, Engine

log = logging.getLogger(__name__)


class LaunchError(StepError, RuntimeError):
    """The job could not be started, followed or finished; the message is one line."""


class Cancelled(BaseException):
    """SIGTERM reached the launcher (the run was cancelled or the pod is being stopped)."""


@dataclass
class Launcher:
    """Runs one job of ``engine`` in ``namespace`` to its end. ``out`` receives the chief's log."""

    api: client.ApiClient
    engine: Engine
    namespace: str
    poll_seconds: float = 10.0
    timeout_seconds: float | None = None
    request_timeout: float = 30.0
    out: TextIO = field(default_factory=lambda: sys.stdout)
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        self.resource = RESOURCES[self.engine]
        self.custom = client.CustomObjectsApi(self.api)
        self.core = client.CoreV1Api(self.api)
        self._log_lines = 0
        self._timeouts = (self.request_timeout, self.request_timeout)  # (connect, read): the client ignores a float

    def run(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Create (or re-attach to) the job and wait for its end; returns its final object.
        Raises LaunchError when it failed (with the job's reason), timed out or was cancelled."""
        name = manifest["metadata"]["name"]
        with self._deleted_on_sigterm(name):
            self._create_or_attach(manifest)
            deadline = None if self.timeout_seconds is None else self.clock() + self.timeout_seconds
            while True:
                job = self._call("get", name, lambda: self.custom.get_namespaced_custom_object(
                    self.resource.group, self.resource.version, self.namespace, self.resource.plural, name,
                    _request_timeout=self._timeouts))
                self._stream_chief_log(name)
                done = self._terminal(job)
                if done:
                    return self._finish(name, job, done)
                if deadline is not None and self.clock() >= deadline:
                    self._delete(name)
                    raise LaunchError(f"{self.resource.kind} {name} did not finish within {self.timeout_seconds:g} s; "
                                      "it was deleted")
                time.sleep(self.poll_seconds)

    def _create_or_attach(self, manifest: dict[str, Any]) -> None:
        name = manifest["metadata"]["name"]
        try:
            self.custom.create_namespaced_custom_object(
                self.resource.group, self.resource.version, self.namespace, self.resource.plural, manifest,
                _request_timeout=self._timeouts)
            log.info("created %s %s/%s", self.resource.kind, self.namespace, name)
        except ApiException as exc:
            if exc.status != 409:
                raise self._api_error("create", name, exc) from None
            log.info("%s %s/%s exists (a retried launcher): following it", self.resource.kind, self.namespace, name)
        except urllib3.exceptions.HTTPError as exc:
            raise self._unreachable("create", name, exc) from None

    def _call(self, verb: str, name: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except ApiException as exc:
            raise self._api_error(verb, name, exc) from None
        except urllib3.exceptions.HTTPError as exc:
            raise self._unreachable(verb, name, exc) from None

    def _terminal(self, job: dict[str, Any]) -> str | None:
        for c in (job.get("status") or {}).get("conditions") or []:
            if c.get("status") == "True" and c.get("type") in (self.resource.succeeded, "Failed"):
                return c["type"]
        return None

    def _finish(self, name: str, job: dict[str, Any], outcome: str) -> dict[str, Any]:
        self._stream_chief_log(name)  # the chief's last lines
        if outcome == "Failed":
            cond = next(c for c in job["status"]["conditions"] if c.get("type") == "Failed")
            raise LaunchError(f"{self.resource.kind} {name} failed: {cond.get('reason') or 'no reason given'}: "
                              f"{' '.join(str(cond.get('message') or '').split())}")
        log.info("%s %s/%s succeeded", self.resource.kind, self.namespace, name)
        return job

    def _stream_chief_log(self, name: str) -> None:
        """Print the chief's new log lines (the pod appears once the engine has made it)."""
        selector = self.resource.chief_selector.format(name=name)
        pods = self._call("list", "pods", lambda: self.core.list_namespaced_pod(
            self.namespace, label_selector=selector, _request_timeout=self._timeouts)).items
        if not pods:
            return
        pod = pods[0].metadata.name
        try:
            text = self.core.read_namespaced_pod_log(pod, self.namespace, _request_timeout=self._timeouts)
        except ApiException as exc:
            if exc.status in (400, 404):  # container not started yet, or the pod just went away
                return
            raise self._api_error("get", f"{pod}/log", exc) from None
        except urllib3.exceptions.HTTPError as exc:
            raise self._unreachable("get", f"{pod}/log", exc) from None
        lines = text.splitlines()
        for line in lines[self._log_lines:]:
            print(f"[{pod}] {line}", file=self.out, flush=True)
        self._log_lines = max(self._log_lines, len(lines))

    def _delete(self, name: str) -> None:
        try:
            self.custom.delete_namespaced_custom_object(
                self.resource.group, self.resource.version, self.namespace, self.resource.plural, name,
                propagation_policy="Foreground", _request_timeout=self._timeouts)
            log.info("deleted %s %s/%s", self.resource.kind, self.namespace, name)
        except ApiException as exc:
            if exc.status != 404:
                raise self._api_error("delete", name, exc) from None
        except urllib3.exceptions.HTTPError as exc:
            raise self._unreachable("delete", name, exc) from None

    @contextmanager
    def _deleted_on_sigterm(self, name: str) -> Iterator[None]:
        """KFP stops a cancelled run's pods with SIGTERM: the job must not outlive its run."""
        def cancel(signum, frame):
            raise Cancelled()

        previous = signal.signal(signal.SIGTERM, cancel)
        try:
            yield
        except Cancelled:
            self._delete(name)
            raise LaunchError(f"cancelled: {self.resource.kind} {name} was deleted") from None
        finally:
            signal.signal(signal.SIGTERM, previous)

    def _api_error(self, verb: str, name: str, exc: ApiException) -> LaunchError:
        r, where = self.resource, f"{self.namespace}/{name}"
        if exc.status == 403:
            return LaunchError(f"forbidden: the pipeline's service account may not {verb} {where} ({r.group}); "
                               f"apply the Role and RoleBinding printed by `python -m pipelines manifests --spec "
                               f"RUN_SPEC`")
        if exc.status == 404 and verb == "create":
            return LaunchError(f"{r.kind} ({r.group}/{r.version}) is not served by this cluster: install the "
                               f"engine (docs/pipeline.md) or choose the other distributed.engine")
        if exc.status == 404:
            return LaunchError(f"{r.kind} {where} is gone (deleted outside this run?)")
        return LaunchError(f"Kubernetes API: {verb} {where}: HTTP {exc.status} {exc.reason}")

    def _unreachable(self, verb: str, name: str, exc: Exception) -> LaunchError:
        return LaunchError(f"Kubernetes API at {self.api.configuration.host} did not answer ({verb} "
                           f"{self.namespace}/{name}, timeout {self.request_timeout:g} s): {type(exc).__name__}")
