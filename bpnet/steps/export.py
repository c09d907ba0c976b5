"""export: a trained model -> encrypted ONNX; optionally INT8 calibration and a TensorRT engine."""

from __future__ import annotations

from pathlib import Path

from bpnet.deploy.export import CalibrationData
from bpnet.deploy.export import ExportResult as Exported  # the library's result is the step's
from bpnet.deploy.export import export as run
from bpnet.errors import UsageError
from bpnet.settings import EngineSettings, ExportSettings, Precision
from bpnet.specs.train import NormalizationParams
from bpnet.steps._common import model_key, output_file


def export(model: str | Path, output: str | Path, key: str | None, settings: ExportSettings,
           norm: NormalizationParams, data_type: Precision = "fp32", stage: int | None = None,
           sdk_compatible: bool = False, calibration: CalibrationData | None = None, engine_file: str | None = None,
           engine_settings: EngineSettings | None = None) -> Exported:
    """Export at ``settings.input_shape``; ``data_type`` int8 also calibrates (``calibration``
    needs images or an existing tensorfile); an engine is built where TensorRT exists."""
    key = model_key(key)
    output = output_file("output_file", output)
    if data_type == "int8" and (calibration is None or not (calibration.image_dir or
                                                            Path(calibration.data_file).is_file())):
        raise UsageError("int8: needs --cal_image_dir (or an existing --cal_data_file)", field="data_type")
    return run(model, key, output, settings.input_shape, norm, data_type, stage, sdk_compatible,
               calibration if data_type == "int8" else None, engine_file, engine_settings)
