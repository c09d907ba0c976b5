"""publish: the promoted model's release (models, calibration, metrics, specs, serving configs,
model card)."""

from typing import List  # noqa: UP035 - kfp reads List[...] annotations

from kfp.dsl import Input, Metrics, Model


def publish(release_root: str, trained: Input[Model], retrained: Input[Model], exported: Input[Model],
            int8: Input[Model],
            metrics_unpruned: Input[Metrics], metrics_pruned: Input[Metrics], metrics: Input[Metrics],
            metrics_keras_export: Input[Metrics],
            metrics_fp32: Input[Metrics], metrics_int8: Input[Metrics], dataset_uri: str, data_version: str,
            prune_settings: str, export_settings: str, inference_spec: str, serving: str, int8_verdict: str,
            min_ap: float,
            gpu_engines: Input[List[Model]] = None,  # noqa: UP006 - kfp reads typing.List
            jetson_engines: Input[List[Model]] = None) -> str:  # noqa: UP006
    """Publish ``<release_root>/<release_id>/`` through bpnet.storage and move ``latest`` to it
    (only after the release is complete, engines included, and only if the promotion rule still
    holds at that moment). ``int8_verdict`` is the INT8 gate's; ``serving`` the run spec's serving
    options (JSON). Returns the release id."""
    import json

    from bpnet.release import MODEL_LABELS, RETRAINED
    from components import runtime

    evaluations = {name: dict(m.metadata) for name, m in zip(MODEL_LABELS, (
        metrics_unpruned, metrics_pruned, metrics, metrics_keras_export, metrics_fp32, metrics_int8), strict=True)}
    evaluations[RETRAINED]["parameters"] = retrained.metadata.get("parameters")
    pointer = runtime.publish(release_root, trained.path, retrained.path, exported.path, int8.path, evaluations,
                              {"dataset_uri": dataset_uri, "data_version": data_version},
                              {"prune": json.loads(prune_settings), "export": json.loads(export_settings)},
                              [e.path for e in [*(gpu_engines or []), *(jetson_engines or [])]],
                              inference_spec, json.loads(serving), int8_verdict, min_ap)
    return pointer["release"]
