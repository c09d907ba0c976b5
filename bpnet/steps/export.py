"""export: a trained model -> encrypted ONNX; optionally INT8 calibration and a TensorRT engine.

Beside the exported file the step writes ``export.json`` (``bpnet.layout``: the input shape and
padding mode the exported model is fed with, what evaluation and inference of it read), and
beside an engine it built that engine's build record (``bpnet.steps.build_engine``); ``bpnet
export`` and the pipeline's export thus leave the same files.
"""

from __future__ import annotations

import json
from pathlib import Path

from bpnet.artifacts import atomic_write_text
from bpnet.deploy import export as deployment
from bpnet.deploy.export import CalibrationData
from bpnet.deploy.export import ExportResult as Exported  # the library's result is the step's
from bpnet.errors import UsageError
from bpnet.layout import EXPORT_SETTINGS_FILE, EXPORTED_MODE
from bpnet.lock import exclusive
from bpnet.settings import EngineSettings, ExportSettings, Precision
from bpnet.specs.train import NormalizationParams
from bpnet.steps._common import is_exported_file, is_json_with, model_key, replaceable_output
from bpnet.steps.build_engine import write_engine_record


def export_record(exported: Exported) -> dict[str, object]:
    """What ``export.json`` says: how the exported model is fed (its input shape, padded)."""
    return {"input_shape": list(exported.input_shape), "keep_aspect_ratio_mode": EXPORTED_MODE}


def export(model: str | Path, output: str | Path, key: str | None, settings: ExportSettings,
           norm: NormalizationParams, data_type: Precision = "fp32", stage: int | None = None,
           sdk_compatible: bool = False, calibration: CalibrationData | None = None, engine_file: str | None = None,
           engine_settings: EngineSettings | None = None, overwrite: bool = False) -> Exported:
    """Export at ``settings.input_shape``; ``data_type`` int8 also calibrates (``calibration``
    needs images or an existing tensorfile); an engine is built where TensorRT exists. No output
    may replace an input, nor, without ``overwrite``, a file that is not of its kind."""
    from bpnet.deploy.export import int8_path

    key = model_key(key)
    inputs = {"model": model, **({"cal_data_file": calibration.data_file, "cal_cache_file": calibration.cache_file}
                                 if calibration is not None else {})}
    exported_file = is_exported_file(key)
    output = replaceable_output("output_file", output, inputs, "an exported model", exported_file, overwrite)
    if data_type == "int8" and not sdk_compatible:
        replaceable_output("output_file", int8_path(output), inputs, "an exported model", exported_file, overwrite)
    replaceable_output("output_file", output.parent / EXPORT_SETTINGS_FILE, inputs, "an export record",
                       is_json_with("input_shape"), overwrite)
    if data_type == "int8" and (calibration is None or not (calibration.image_dir or
                                                            Path(calibration.data_file).is_file())):
        raise UsageError("int8: needs --cal_image_dir (or an existing --cal_data_file)", field="data_type")
    with exclusive(output, "bpnet export"):  # its files (model, INT8 model, export.json) are one writer's
        exported = deployment.export(model, key, output, settings.input_shape, norm, data_type, stage,
                                     sdk_compatible, calibration if data_type == "int8" else None, engine_file,
                                     engine_settings)
        atomic_write_text(output.parent / EXPORT_SETTINGS_FILE, json.dumps(export_record(exported)) + "\n")
        if exported.engine is not None:
            write_engine_record(exported.engine, exported.engine_settings, exported.info)
    return exported
