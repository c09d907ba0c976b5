"""A release's ``kserve/inferenceservice.yaml``: a ``serving.kserve.io/v1beta1`` InferenceService
serving the release's Triton repository (``<release>/triton``) with KServe's Triton runtime
(model format ``triton``, open inference protocol v2), GPU resources and node placement from
the run spec's ``serving`` section."""

from __future__ import annotations

import re
from typing import Any

from bpnet.errors import UsageError

API_VERSION = "serving.kserve.io/v1beta1"


def dns_label(text: str) -> str:
    """A Kubernetes object name (RFC 1123 label, 63 characters at most)."""
    label = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:63].rstrip("-")
    if not label:
        raise UsageError(f"'{text}' gives no valid Kubernetes name")
    return label


def inference_service(*, name: str, storage_uri: str, gpus: int, cpu: str | None, memory: str | None,
                      node_selector: dict[str, str], tolerations: list[dict[str, Any]], namespace: str | None,
                      service_account: str | None, runtime: str | None, release_id: str,
                      accelerator: str) -> dict[str, Any]:
    """The InferenceService; ``gpus`` are requested as ``accelerator`` (the run spec's
    ``gpu.accelerator_type``, the resource its cluster advertises GPUs by)."""
    resources: dict[str, dict[str, str]] = {"requests": {}, "limits": {}}
    if gpus:
        resources["requests"][accelerator] = resources["limits"][accelerator] = str(gpus)
    if cpu:
        resources["requests"]["cpu"] = resources["limits"]["cpu"] = cpu
    if memory:
        resources["requests"]["memory"] = resources["limits"]["memory"] = memory
    model: dict[str, Any] = {"modelFormat": {"name": "triton"}, "protocolVersion": "v2",
                             "storageUri": storage_uri, "resources": resources}
    if runtime:
        model["runtime"] = runtime
    predictor: dict[str, Any] = {"model": model}
    if node_selector:
        predictor["nodeSelector"] = dict(node_selector)
    if tolerations:
        predictor["tolerations"] = [{k: v for k, v in t.items() if v is not None} for t in tolerations]
    if service_account:
        predictor["serviceAccountName"] = service_account
    metadata: dict[str, Any] = {"name": dns_label(name), "labels": {"app.kubernetes.io/name": "bpnet"},
                                "annotations": {"bpnet/release": release_id}}
    if namespace:
        metadata["namespace"] = namespace
    return {"apiVersion": API_VERSION, "kind": "InferenceService", "metadata": metadata,
            "spec": {"predictor": predictor}}
