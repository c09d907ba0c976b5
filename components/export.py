"""export: retrained Model -> exported Model (encrypted fp32 ONNX through tf2onnx, standard and
SDK-compatible)."""

from kfp.dsl import Input, Model, Output


def export(model: Input[Model], export_settings: str, overrides: str, exported: Output[Model]):
    """Run ``bpnet export -t tfonnx`` at ``export_settings``' input shape (``ExportCalibrationSettings``
    as JSON, the run parameters ``overrides`` laid over), and again with ``--sdk_compatible_model``
    (for DeepStream engines). The model key comes from $BPNET_MODEL_KEY."""
    from components import runtime

    with runtime.timed(exported.metadata):
        exported.metadata.update(runtime.export(model.path, export_settings, exported.path, overrides))
