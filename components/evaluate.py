"""evaluate: Model + Dataset -> COCO AP as KFP Metrics, an HTML report, and the AP for gates."""

from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output


def evaluate(val_data: Input[Dataset], model: Input[Model], inference_spec: str, metrics: Output[Metrics],
             report: Output[HTML], results: Output[Artifact], report_images: int, overrides: str, label: str = "",
             export_settings: str = "") -> float:
    """Run ``bpnet evaluate`` on the val split; log AP/AR as metrics; return AP (for ``dsl.If``).
    ``label`` names the model in the report (unpruned, pruned, retrained). With ``export_settings``
    a Keras model is evaluated as the exported models are (their input size, ``pad_image_input``),
    so its AP compares like with like against ONNX fp32 and INT8. ``overrides``: the run parameters
    (JSON) laid over the specs."""
    from components import runtime

    with runtime.timed(results.metadata):
        scores = runtime.evaluate(val_data.path, model.path, inference_spec, results.path, report.path, report_images,
                                  label, export_settings, overrides)
    for name in ("AP", "AP50", "AP75", "AP_medium", "AP_large", "AR"):
        metrics.log_metric(name, scores[name])
    results.metadata["AP"] = scores["AP"]
    return float(scores["AP"])
