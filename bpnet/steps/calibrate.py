"""calibrate: INT8 calibration of an exported fp32 model (TensorRT cache + ONNX Runtime QDQ model),
and that cache fitted to the SDK-compatible export (``fit_calibration``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bpnet.deploy.export import CalibrationData
from bpnet.errors import UsageError
from bpnet.lock import exclusive
from bpnet.specs.train import NormalizationParams
from bpnet.steps._common import is_exported_file, model_key, output_file, replaceable_output


@dataclass(frozen=True)
class Calibrated:
    int8_model: Path
    cache: Path
    tensorfile: Path
    tensors: int  # tensors with a calibrated range
    method: str
    images: int


def calibrate(model: str | Path, output: str | Path | None, key: str | None, calibration: CalibrationData,
              norm: NormalizationParams, overwrite: bool = False) -> Calibrated:
    """Tensorfile (built or reused), cache (computed unless it exists) and the QDQ INT8 model
    (``output``, default ``<model stem>.int8.etlt``: never the model, nor, without ``overwrite``,
    a file that is not an exported model)."""
    from bpnet.deploy import export as deployment
    from bpnet.deploy.calibration import read_trt_cache
    from bpnet.deploy.export import int8_path

    key = model_key(key)
    if not (calibration.image_dir or Path(calibration.data_file).is_file()):
        raise UsageError("missing — needs --cal_image_dir (or an existing --cal_data_file)", field="cal_image_dir")
    inputs = {"model": model, "cal_data_file": calibration.data_file, "cal_cache_file": calibration.cache_file}
    output = replaceable_output("output_file", output or int8_path(model), inputs, "an exported model",
                                is_exported_file(key), overwrite)
    with exclusive(output, "bpnet calibrate"):
        tensorfile, cache, int8 = deployment.calibrate(model, key, calibration, norm, output)
    _, scales = read_trt_cache(cache)
    return Calibrated(int8, cache, tensorfile, len(scales), calibration.settings.cal_method,
                      calibration.settings.images)


@dataclass(frozen=True)
class FittedCache:
    cache: Path
    tensors: int  # tensors with a scale
    renamed: int  # of which the standard export names otherwise (tf2onnx numbers names per export)
    derived: int  # of which the SDK-compatible graph adds (the PAF upsampling): their input's scale


def fit_calibration(model: str | Path, sdk_model: str | Path, cache: str | Path, output: str | Path,
                    key: str | None) -> FittedCache:
    """The TensorRT cache of ``model`` (``cache``) fitted to its SDK-compatible export ``sdk_model``
    into ``output``: what a DeepStream INT8 engine is built with. A cache that does not fit, or an
    SDK graph whose added tensors could exceed the range of what feeds them, is a ModelError."""
    from bpnet.deploy.export import fit_cache

    key = model_key(key)
    output = output_file("output_file", output)
    fitted = fit_cache(model, sdk_model, key, cache, output)
    return FittedCache(output, len(fitted.scales), fitted.renamed, len(fitted.derived))
