"""``bpnet export`` and ``bpnet calibrate``: the steps, in one place for the CLI and the pipeline.

export: Keras model -> encrypted ONNX (``.etlt``); with ``--data_type int8`` also the calibration
(tensorfile, TensorRT cache, QDQ INT8 model ``<output stem>.int8.etlt``); with ``--engine_file``
a TensorRT engine where TensorRT exists — elsewhere the engine is skipped with the reason logged.
An SDK-compatible int8 export (the TLT guide's deployable command) calibrates the SDK graph itself
and writes no QDQ model: bpnet inference/evaluate, its only users, refuse SDK-compatible models.
``fit_cache``: the pipeline's route instead — the standard export's cache fitted to its
SDK-compatible export (the scales are those of the same network on the same images).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from bpnet.deploy import calibration
from bpnet.deploy.engine import EnginePlan, EngineUnavailable, build_engine
from bpnet.deploy.onnx_export import to_onnx
from bpnet.errors import ModelError, UsageError
from bpnet.layout import EXPORTED_MODE
from bpnet.model.exported import INPUT_NAME, ExportInfo, read_exported, set_metadata, write_exported
from bpnet.settings import CalibrationSettings, EngineSettings, build
from bpnet.specs.train import NormalizationParams

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CalibrationData:
    """Where calibration reads and writes (images, tensorfile, cache) and how many images."""

    image_dir: str | None
    data_file: str
    cache_file: str
    settings: CalibrationSettings = field(default_factory=CalibrationSettings)
    mode: str | None = EXPORTED_MODE
    foreign_cache: bool = False  # accept an existing cache of another (or an unknown) model


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote (the ``bpnet.steps.export`` result as well)."""

    onnx: Path
    info: ExportInfo
    int8: Path | None = None
    cache: Path | None = None
    tensorfile: Path | None = None
    engine: Path | None = None
    engine_skipped: str | None = None  # why no engine was built (no TensorRT or GPU here)
    engine_settings: EngineSettings | None = None  # what the engine was built (or asked) with

    @property
    def input_shape(self) -> tuple[int, int]:
        return self.info.height, self.info.width

    @property
    def bytes(self) -> int:
        return self.onnx.stat().st_size


def int8_path(output: str | Path) -> Path:
    """Where the QDQ INT8 model of an export goes: ``<stem>.int8<suffix>`` beside it."""
    output = Path(output)
    return output.with_name(f"{output.stem}.int8{output.suffix or '.etlt'}")


def calibration_cache(onnx_bytes: bytes, info: ExportInfo, cal: CalibrationData, norm: NormalizationParams,
                      where: str | Path) -> tuple[Path, dict[str, float]]:
    """The TensorRT cache of the exported graph ``onnx_bytes`` (from ``where``; standard or
    SDK-compatible) and its scales: reused if ``cal.cache_file`` exists and fits the graph, else
    computed with ``cal.settings.cal_method`` over the tensorfile (built or reused)."""
    if info.precision != "fp32":
        raise ModelError(f"{where}: calibrate an fp32 model (this one is {info.precision})")
    settings = cal.settings
    cache = Path(cal.cache_file)
    tensors = calibration.build_tensorfile(cal.image_dir, cal.data_file, settings.cal_batches,
                                           settings.cal_batch_size, info.height, info.width, norm.image_scale,
                                           norm.image_offset, cal.mode)
    if cache.is_file():
        _, scales = calibration.read_trt_cache(cache)
        calibration.check_cache_fits(scales, onnx_bytes, str(cache))
        calibration.check_cache_model(cache, onnx_bytes, cal.foreign_cache)
        log.info("calibration cache %s exists: calibration skipped (its scales are used)", cache)
    else:
        ranges = calibration.activation_ranges(onnx_bytes, INPUT_NAME, tensors, settings.cal_method)
        calibration.write_trt_cache(ranges, cache)
        calibration.write_cache_record(cache, onnx_bytes)
        _, scales = calibration.read_trt_cache(cache)
        log.info("wrote TensorRT calibration cache %s (%d tensors, %s%s)", cache, len(ranges), settings.cal_method,
                 ", SDK-compatible graph" if info.sdk_compatible else "")
    return cache, scales


def calibrate(onnx_path: str | Path, key: str | None, cal: CalibrationData, norm: NormalizationParams,
              int8_output: str | Path) -> tuple[Path, Path, Path]:
    """Tensorfile (built or reused), TensorRT cache (computed unless it exists), QDQ INT8 model."""
    import onnx

    data, info = read_exported(onnx_path, key)
    if info.sdk_compatible:
        raise ModelError(f"{onnx_path}: the QDQ INT8 model is for bpnet inference/evaluate, which refuse "
                         "SDK-compatible models; calibrate the export made without --sdk_compatible_model (or "
                         "export the SDK-compatible model with --data_type int8 for its TensorRT cache)")
    cache, scales = calibration_cache(data, info, cal, norm, onnx_path)
    proto = onnx.load_model_from_string(calibration.quantize_qdq(data, scales))
    set_metadata(proto, ExportInfo(**{**info.__dict__, "precision": "int8"}))
    out = write_exported(proto, int8_output, key)
    log.info("wrote ONNX Runtime QDQ INT8 model %s", out)
    return Path(cal.data_file), cache, out


def fit_cache(onnx_path: str | Path, sdk_path: str | Path, key: str | None, cache: str | Path,
              dest: str | Path) -> calibration.DerivedScales:
    """``dest``: the TensorRT cache of ``onnx_path`` (standard fp32 export) fitted to ``sdk_path``
    (its SDK-compatible export at the same size and stage), with the same header."""
    standard, info = read_exported(onnx_path, key)
    sdk, sdk_info = read_exported(sdk_path, key)
    if info.sdk_compatible or not sdk_info.sdk_compatible or info.precision != "fp32" or \
            {**info.__dict__, "sdk_compatible": True} != sdk_info.__dict__:
        raise ModelError(f"{sdk_path}: not the SDK-compatible fp32 export of {onnx_path} (exported as {sdk_info}; "
                         f"the standard one as {info})")
    header, scales = calibration.read_trt_cache(cache)
    calibration.check_cache_fits(scales, standard, str(cache))
    fitted = calibration.derive_scales(standard, scales, sdk)
    calibration.write_scales(fitted.scales, dest, header)
    calibration.write_cache_record(dest, sdk)
    log.info("fitted %s to the SDK-compatible model %s -> %s: %d tensors (%d matched under another name, %d "
             "added by the PAF upsampling: %s)", cache, sdk_path, dest, len(fitted.scales), fitted.renamed,
             len(fitted.derived), ", ".join(sorted(fitted.derived)))
    return fitted


def export(model_path: str | Path, key: str, output: str | Path, dims: tuple[int, int], norm: NormalizationParams,
           data_type: str = "fp32", stage: int | None = None, sdk_compatible: bool = False,
           cal: CalibrationData | None = None, engine_file: str | None = None,
           engine_settings: EngineSettings | None = None) -> ExportResult:
    """Export; calibrate for int8 (an SDK-compatible export: its own TensorRT cache, no QDQ model);
    build the engine if asked (with ``engine_settings``, the precision being ``data_type``)."""
    from bpnet.model.io import open_model

    source = open_model(model_path, key)
    proto, info = to_onnx(source.model, *dims, stage=stage, sdk_compatible=sdk_compatible, skeleton=source.skeleton)
    onnx = write_exported(proto, output, key)
    log.info("exported %s: input %s (N, %d, %d, 3), stage %d of %d%s", onnx, INPUT_NAME, *dims, info.stage,
             info.stages, ", SDK-compatible deployable model" if sdk_compatible else "")
    tensorfile = cache = int8 = engine = skipped = settings = None
    if data_type == "int8":
        if cal is None:
            raise UsageError("--data_type int8 needs calibration settings (--cal_image_dir or --cal_data_file)")
        if sdk_compatible:
            cache, _ = calibration_cache(proto.SerializeToString(), info, cal, norm, onnx)
            tensorfile = Path(cal.data_file)
            log.info("no ONNX Runtime QDQ INT8 model (%s) for the SDK-compatible export: bpnet inference and "
                     "evaluate, its only users, refuse SDK-compatible models (deployment only)", int8_path(output))
        else:
            tensorfile, cache, int8 = calibrate(onnx, key, cal, norm, int8_path(output))
    if engine_file:
        settings = build(EngineSettings, **{**(engine_settings or EngineSettings()).model_dump(),
                                            "data_type": data_type})
        plan = EnginePlan(settings, calibration_cache=str(cache) if cache else None)
        try:
            engine = build_engine(proto.SerializeToString(), plan, (dims[0], dims[1], 3), engine_file)
        except EngineUnavailable as exc:
            skipped = str(exc)
            log.warning("engine NOT built (%s): %s", engine_file, exc)
    return ExportResult(onnx, info, int8, cache, tensorfile, engine, skipped, settings)
