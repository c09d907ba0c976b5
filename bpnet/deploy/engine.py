"""TensorRT engines from exported models (what tlt-converter does), behind a lazy import.

``EnginePlan`` is everything a build applies — the engine settings (precision, workspace, strict
types, DLA core), optimization profiles, the INT8 calibration cache — checked without TensorRT, so the
command line and the pipeline can be tested anywhere. ``build_engine`` imports TensorRT only
when asked to build; where it is missing (it cannot be pip-installed on machines without the
vendor's index, and needs a GPU), ``EngineUnavailable`` says what is missing.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from bpnet.artifacts import atomic_write_bytes
from bpnet.errors import ModelError, StepError, UsageError
from bpnet.settings import EngineSettings

log = logging.getLogger(__name__)



class EngineUnavailable(StepError, RuntimeError):
    """TensorRT (or a GPU) is not available where the engine was to be built."""


@dataclass(frozen=True)
class Profile:
    """One optimization profile for an input: min, opt and max shapes."""

    input: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


def parse_shape(text: str, what: str) -> tuple[int, ...]:
    if not re.fullmatch(r"\d+(x\d+)*", text):
        raise UsageError(f"{what}: {text!r} — expected dimensions joined by 'x', e.g. 1x224x320x3")
    return tuple(int(v) for v in text.split("x"))


def parse_profile(text: str) -> Profile:
    """``-p <input>,<min>,<opt>,<max>``, shapes as 1x224x320x3 (tlt-converter's syntax)."""
    parts = text.split(",")
    if len(parts) != 4 or not parts[0]:
        raise UsageError(f"-p {text!r} — expected <input_name>,<min_shape>,<opt_shape>,<max_shape>")
    shapes = [parse_shape(p, f"-p {parts[0]}") for p in parts[1:]]
    if len({len(s) for s in shapes}) != 1:
        raise UsageError(f"-p {text!r} — min, opt and max shapes must have the same rank")
    if not all(a <= b <= c for a, b, c in zip(*shapes, strict=True)):
        raise UsageError(f"-p {text!r} — expected min <= opt <= max in every dimension")
    return Profile(parts[0], *shapes)


@dataclass(frozen=True)
class EnginePlan:
    """A build: the engine settings (precision, max batch, workspace, strict types, DLA core:
    declared and checked once, in ``EngineSettings``), the optimization profiles and the INT8
    calibration cache; checked here is only what ties them together."""

    settings: EngineSettings = field(default_factory=EngineSettings)
    profiles: tuple[Profile, ...] = ()
    calibration_cache: str | None = None

    def __post_init__(self) -> None:
        if self.settings.data_type == "int8" and not self.calibration_cache:
            raise UsageError("-t int8 needs a calibration cache (-c), e.g. from bpnet export --data_type int8")
        if self.calibration_cache and not Path(self.calibration_cache).is_file():
            raise UsageError(f"-c {self.calibration_cache}: calibration cache not found")

    def default_profile(self, input_name: str, dims: tuple[int, ...]) -> tuple[Profile, ...]:
        """Batch 1..max_batch_size at ``dims`` (H, W, C) when no -p was given."""
        if self.profiles:
            return self.profiles
        batch = self.settings.max_batch_size
        return (Profile(input_name, (1, *dims), (batch, *dims), (batch, *dims)),)

    def describe(self) -> str:
        s = self.settings
        parts = [s.data_type, f"workspace {s.max_workspace_size >> 20} MiB", f"max batch {s.max_batch_size}"]
        if s.strict_type_constraints:
            parts.append("strict types")
        if s.dla_core is not None:
            parts.append(f"DLA core {s.dla_core} (GPU fallback)")
        if self.calibration_cache:
            parts.append(f"calibration cache {self.calibration_cache}")
        return ", ".join(parts)


def _tensorrt():
    try:
        import tensorrt
    except ImportError as exc:
        raise EngineUnavailable(
            "TensorRT is not installed here (Python package 'tensorrt' not importable: "
            f"{exc}); build engines in the bpnet GPU or Jetson image, on the GPU they will run on") from None
    return tensorrt


def build_engine(onnx_bytes: bytes, plan: EnginePlan, dims: tuple[int, ...], dest: str | Path,
                 input_name: str = "input_1") -> Path:
    """Parse the ONNX, apply ``plan``, serialize the engine to ``dest`` (atomically)."""
    trt = _tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelError(f"TensorRT could not parse the model: {errors}")
    config = builder.create_builder_config()
    s = plan.settings
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, s.max_workspace_size)
    if s.data_type in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    if s.data_type == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = _cache_calibrator(trt, Path(plan.calibration_cache))
    if s.strict_type_constraints:
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
    if s.dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = s.dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    profile = builder.create_optimization_profile()
    for p in plan.default_profile(input_name, dims):
        profile.set_shape(p.input, p.min, p.opt, p.max)
    config.add_optimization_profile(profile)
    log.info("building TensorRT %s engine: %s", trt.__version__, plan.describe())
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise StepError("TensorRT failed to build the engine (see its log above)")
    atomic_write_bytes(dest, bytes(engine))
    return Path(dest)


def trt_version_code(version: str) -> int:
    """TensorRT's NV_TENSORRT_VERSION for a version string: 8.6.1 -> 8601, 10.3.0 -> 100300."""
    major, minor, patch = (int(v) for v in (version.split(".") + ["0", "0"])[:3])
    return major * (10000 if major >= 10 else 1000) + minor * 100 + patch


def cache_for_version(cache: bytes, version: str) -> bytes:
    """The cache with its header naming ``version``: the scales do not depend on the TensorRT
    version, but TensorRT ignores a cache whose header names another one."""
    header, _, body = cache.partition(b"\n")
    kind = header.decode().split("-", 2)[-1] if header.startswith(b"TRT-") else "EntropyCalibration2"
    return f"TRT-{trt_version_code(version)}-{kind}".encode() + b"\n" + body


def _cache_calibrator(trt, cache: Path):
    """An INT8 calibrator that only serves the cache (the ranges were computed at export), its
    header set to the TensorRT doing the build."""

    class CacheCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            super().__init__()

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names):  # noqa: ARG002 - TensorRT's signature
            return None

        def read_calibration_cache(self) -> bytes:
            return cache_for_version(cache.read_bytes(), trt.__version__)

        def write_calibration_cache(self, data) -> None:  # the cache is the input here
            pass

    return CacheCalibrator()
