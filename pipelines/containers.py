"""``make run-containers``: the DAG of ``make run`` with every step in its own container.

kfp.local's DockerRunner starts each step's container from the step image (``bpnet-cpu:local``,
built by ``make image-cpu``) with the command the compiled YAML gives it (no ``pip install`` at
start: the image holds kfp and bpnet), as the run spec's ``run_as_user`` (uid 1000, as on the
cluster), with the local pipeline root mounted at its own path. Data and releases go through a
local S3 server (moto on 127.0.0.1, ``pipelines.local_s3``) with the same storage code and
``BPNET_S3_*`` variables as MinIO on a cluster; the containers share the host's network to reach
it. The model key and the S3 settings reach a step as environment variables only.

kfp 2.17 starts containers with auto-remove and, when a container is gone before its exit status
is read, reports SUCCESS (podman answers the late inspect with HTTP 500 "no such container", and
kfp reads a NotFound as success). ``StepContainers.run`` therefore replaces kfp's
``run_docker_container`` for the run: no auto-remove, the exit status read, then the container
removed; a failed step fails the run with the step's own last log line. Every container carries
the run's token as a label, so a stopped or killed run removes what it started.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bpnet.errors import UsageError

log = logging.getLogger(__name__)

RUN_LABEL = "bpnet.run"  # label of every step container: the run token (RunGuard)
STEP_ENV_NAMES = ("BPNET_MODEL_KEY",)  # passed from the driver's environment to every step (never in a spec)
BUILD_HINT = "build it with `make image-cpu`"


def docker_client() -> Any:
    """The Docker-API client of ``$DOCKER_HOST`` (podman's service from ``images/podman-setup.sh``)."""
    import docker

    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        raise UsageError(f"no container engine answers at {os.environ.get('DOCKER_HOST', 'the default socket')} "
                         f"({str(exc)[:200]}); run images/podman-setup.sh (make run-containers does)",
                         field="$DOCKER_HOST") from None
    return client


def check_image(client: Any, image: str) -> None:
    """Stop before any work when the step image is not on this machine: there is no registry to pull from."""
    import docker

    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        raise UsageError(f"image {image} is not on this machine; {BUILD_HINT}", field="image") from None


def remove_run_containers(token: str, client: Any | None = None) -> int:
    """Force-remove every container labelled with the run ``token``; returns how many."""
    import docker

    client = client or docker_client()
    removed = 0
    for container in client.containers.list(all=True, filters={"label": f"{RUN_LABEL}={token}"}):
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            container.remove(force=True)
            removed += 1
    return removed


def last_line(log_text: str) -> str:
    """The last non-empty line of a step's log: its own error line when it failed."""
    lines = [line.strip() for line in log_text.splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


@dataclass
class StepContainers:
    """How the run starts, follows and removes step containers (kfp calls ``run`` per step)."""

    token: str
    failures: list[str] = field(default_factory=list)  # "<image> exited <code>: <its last log line>"

    def run(self, client: Any, image: str, command: list[str], volumes: dict[str, Any], **run_args: Any) -> int:
        """kfp's ``run_docker_container`` without its auto-remove race: the exit status is read
        before the container is removed."""
        import docker

        check_image(client, image)
        labels = {**run_args.pop("labels", {}), RUN_LABEL: self.token}
        container = client.containers.run(image=image, command=command, volumes=volumes, detach=True,
                                          labels=labels, **run_args)
        tail: list[str] = []
        try:
            for chunk in container.logs(stream=True, follow=True):
                text = chunk.decode(errors="replace")
                print(text, end="")
                tail = (tail + text.splitlines())[-50:]
            code = int(container.wait()["StatusCode"])
        finally:
            with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                container.remove(force=True)
        if code != 0:
            self.failures.append(f"{image} exited {code}: {last_line(chr(10).join(tail))}")
        return code

    @contextlib.contextmanager
    def installed(self) -> Iterator[StepContainers]:
        """kfp's DockerRunner starts containers through ``self.run`` while the context is open."""
        from kfp.local import docker_task_handler

        original = docker_task_handler.run_docker_container
        docker_task_handler.run_docker_container = self.run
        try:
            yield self
        finally:
            docker_task_handler.run_docker_container = original


def prepare_mounts(uid: int, *folders: Path) -> None:
    """The step uid must be able to write the pipeline root and the workspace it is given: as root
    (rootful podman or Docker), hand the folders to that uid. A non-root driver runs rootless podman,
    whose ``keep-id`` user namespace maps its own uid into the container instead (``runner_args``)."""
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            os.chown(folder, uid, -1)


def runner_args(uid: int, environment: dict[str, str]) -> dict[str, Any]:
    """``kfp.local.DockerRunner`` arguments: the step uid, the host's network (the local S3 server
    listens on 127.0.0.1) and the environment a step gets (model key, S3 settings)."""
    args: dict[str, Any] = {"network_mode": "host", "environment": environment}
    if os.geteuid() == 0:
        args["user"] = str(uid)
    else:
        args.update(user=str(os.getuid()), userns_mode="keep-id")
    return args


def step_environment(s3_env: dict[str, str]) -> dict[str, str]:
    """What a step container receives: the model key from the driver's environment and the S3
    settings, exactly the variables a cluster pod gets from its Kubernetes secrets."""
    env = {name: os.environ[name] for name in STEP_ENV_NAMES if os.environ.get(name)}
    return {**env, **s3_env}
