"""calibration_data: raw dataset -> the few train images INT8 calibration reads (a Dataset artifact)."""

from kfp.dsl import Dataset, Output


def calibration_data(dataset_uri: str, data_version: str, dataset_spec: str, export_settings: str, overrides: str,
                     calibration_images: Output[Dataset]):
    """Fetch from ``dataset_uri`` (through bpnet.storage) only the ``cal_batches x cal_batch_size``
    images of the train split that calibration takes (``export_settings`` with the run parameters
    ``overrides`` laid over), instead of handing calibrate the whole train split.

    ``data_version`` is not read: it is part of the cache key, as for dataset_convert, so new data
    behind the same URI is never served cached images.
    """
    from components import runtime

    calibration_images.metadata["data_version"] = data_version
    with runtime.timed(calibration_images.metadata):
        calibration_images.metadata.update(runtime.calibration_data(dataset_uri, dataset_spec, export_settings,
                                                                    calibration_images.path, overrides))
