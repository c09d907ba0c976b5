"""calibrate: exported Model + calibration images -> TensorRT calibration cache and a QDQ INT8 Model."""

from kfp.dsl import Dataset, Input, Model, Output


def calibrate(exported: Input[Model], calibration_images: Input[Dataset], export_settings: str, overrides: str,
              int8: Output[Model]):
    """Run ``bpnet calibrate`` on the calibration-image artifact (the ``cal_batches x
    cal_batch_size`` train images calibration_data fetched): the tensorfile, the TensorRT cache
    (``calibration.bin``), the ONNX Runtime QDQ INT8 model and the cache fitted to the
    SDK-compatible export (``calibration.sdk.bin``), in one artifact; ``export_settings`` with the
    run parameters ``overrides`` laid over."""
    from components import runtime

    with runtime.timed(int8.metadata):
        int8.metadata.update(runtime.calibrate(exported.path, calibration_images.path, export_settings, int8.path,
                                               overrides))
