"""Checks of generated Kubernetes objects: custom resources against the vendored CRD's
openAPIV3Schema (jsonschema), built-in kinds against the official ``kubernetes`` client's models
(required fields and types through its deserializer; unknown fields refused, as a typo would be
silently dropped by the API server)."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

CRDS = Path(__file__).resolve().parent / "data" / "crds"


@cache
def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> openAPIV3Schema of every vendored CRD."""
    out = {}
    for path in sorted(CRDS.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = doc["spec"]["group"], doc["spec"]["names"]["kind"]
            for version in doc["spec"]["versions"]:
                out[(f"{group}/{version['name']}", kind)] = version["schema"]["openAPIV3Schema"]
    return out


def unknown_fields(obj: Any, schema: dict[str, Any], where: str = "") -> list[str]:
    """Paths of fields the schema does not declare (the API server would prune them)."""
    if isinstance(obj, dict) and "properties" in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
        out = []
        for key, value in obj.items():
            if key not in schema["properties"]:
                out.append(f"{where}.{key}")
            else:
                out += unknown_fields(value, schema["properties"][key], f"{where}.{key}")
        return out
    if isinstance(obj, list) and "items" in schema:
        return [p for i, item in enumerate(obj) for p in unknown_fields(item, schema["items"], f"{where}[{i}]")]
    return []


def validate_custom(obj: dict[str, Any]) -> None:
    schema = crd_schemas()[(obj["apiVersion"], obj["kind"])]
    jsonschema.validate(obj, schema)
    extra = unknown_fields(obj, schema)
    assert not extra, f"{obj['kind']}: fields not in the CRD: {extra}"


def validate_builtin(obj: dict[str, Any]) -> None:
    """A Role/RoleBinding/... through the client's model ``V1<Kind>`` of its apiVersion."""
    from kubernetes import client

    version = obj["apiVersion"].split("/")[-1]
    model = f"{version.capitalize()}{obj['kind']}"
    _check_keys(obj, model)
    client.ApiClient()._ApiClient__deserialize(obj, model)  # required fields, enums, types


def _check_keys(obj: Any, model: str) -> None:
    from kubernetes import client

    list_of = re.fullmatch(r"list\[(.+)\]", model)
    if list_of:
        for item in obj:
            _check_keys(item, list_of.group(1))
        return
    cls = getattr(client, model, None)
    if cls is None or not isinstance(obj, dict):
        return
    by_json = {v: k for k, v in cls.attribute_map.items()}
    for key, value in obj.items():
        assert key in by_json, f"{model}: no field {key!r}"
        _check_keys(value, cls.openapi_types[by_json[key]])
