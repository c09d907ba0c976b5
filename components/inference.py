"""inference: Model + Dataset -> detection.json with drawings, and an HTML gallery."""

from kfp.dsl import HTML, Artifact, Dataset, Input, Model, Output


def inference(val_data: Input[Dataset], model: Input[Model], inference_spec: str, detections: Output[Artifact],
              report: Output[HTML], report_images: int, overrides: str):
    """Run ``bpnet inference`` (with drawings) on the images of ``val_data``; the inference spec
    with the run parameters ``overrides`` (JSON) laid over."""
    from components import runtime

    with runtime.timed(detections.metadata):
        detections.metadata.update(runtime.inference(val_data.path, model.path, inference_spec, detections.path,
                                                     report.path, report_images, overrides))
