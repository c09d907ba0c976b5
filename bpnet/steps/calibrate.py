"""calibrate: INT8 calibration of an exported fp32 model (TensorRT cache + ONNX Runtime QDQ model)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bpnet.deploy.export import CalibrationData
from bpnet.errors import UsageError
from bpnet.specs.train import NormalizationParams
from bpnet.steps._common import model_key, output_file


@dataclass(frozen=True)
class Calibrated:
    int8_model: Path
    cache: Path
    tensorfile: Path
    tensors: int  # tensors with a calibrated range
    method: str
    images: int


def calibrate(model: str | Path, output: str | Path | None, key: str | None, calibration: CalibrationData,
              norm: NormalizationParams) -> Calibrated:
    """Tensorfile (built or reused), cache (computed unless it exists) and the QDQ INT8 model
    (``output``, default ``<model stem>.int8.etlt``)."""
    from bpnet.deploy.calibration import read_trt_cache
    from bpnet.deploy.export import calibrate as run
    from bpnet.deploy.export import int8_path

    key = model_key(key)
    if not (calibration.image_dir or Path(calibration.data_file).is_file()):
        raise UsageError("missing — needs --cal_image_dir (or an existing --cal_data_file)", field="cal_image_dir")
    output = output_file("output_file", output or int8_path(model))
    tensorfile, cache, int8 = run(model, key, calibration, norm, output)
    _, scales = read_trt_cache(cache)
    return Calibrated(int8, cache, tensorfile, len(scales), calibration.settings.cal_method,
                      calibration.settings.images)
