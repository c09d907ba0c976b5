"""build_engine: a TensorRT engine from an exported model, on this machine's GPU (as tlt-converter),
and its build record.

The record (``<target>.engine.json``, ``bpnet.layout.engine_record``) is what a release needs to
ship an engine: which target it is, its precision and max batch size, what serves it and the
TensorRT/CUDA/L4T/JetPack versions, CPU architecture and node it was built on. Written here, after
the engine, it is the same whether ``bpnet build_engine`` or the pipeline built the engine.
Where no engine is built (no TensorRT here: the build raises, or ``bpnet export --engine_file``
logs why and goes on) no record is written either: a record claims versions for an engine that
exists.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bpnet.artifacts import atomic_write_text
from bpnet.errors import UsageError
from bpnet.layout import engine_record, engine_target
from bpnet.lock import exclusive
from bpnet.model.exported import HEAT_NAME, PAF_NAME, ExportInfo, read_exported
from bpnet.settings import EngineSettings, Server
from bpnet.steps._common import model_key, output_file

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineBuilt:
    engine: Path
    precision: str
    max_batch_size: int
    input_shape: tuple[int, int]
    bytes: int
    plan: str  # what was asked of TensorRT, as logged
    serves: Server
    record: Path  # the build record beside the engine


def serves_of(info: ExportInfo) -> Server:
    """What serves an engine built from this export: DeepStream's bodypose2d app parses the
    SDK-compatible model, Triton's decoder the standard one (``bpnet.layout.engine_sources``)."""
    return "deepstream" if info.sdk_compatible else "triton"


def write_engine_record(engine: Path, settings: EngineSettings, info: ExportInfo) -> Path:
    """The build record of the engine just built at ``engine`` with ``settings`` from an export
    described by ``info``, with this machine's platform (``bpnet.deploy.platform``: what the
    release's ``check_runtime.py`` compares on the machine it deploys to)."""
    from bpnet.deploy.platform import current_platform

    record = {"target": engine_target(engine), "precision": settings.data_type,
              "max_batch_size": settings.max_batch_size, "serves": serves_of(info), "platform": current_platform()}
    path = engine_record(engine)
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")
    return path


def build_engine(exported: str | Path, engine_file: str | Path, key: str | None, settings: EngineSettings,
                 calibration_cache: str | None = None, profiles: Sequence[str] = (),
                 input_shape: tuple[int, int] | None = None, outputs: Sequence[str] | None = None) -> EngineBuilt:
    """Build ``engine_file`` (input size: ``input_shape``, else the exported one; ``profiles`` in
    tlt-converter's ``<input>,<min>,<opt>,<max>`` syntax), then its build record."""
    from bpnet.deploy import engine as tensorrt
    from bpnet.deploy.engine import EnginePlan, parse_profile

    if outputs is not None and list(outputs) != [HEAT_NAME, PAF_NAME]:
        raise UsageError(f"{','.join(outputs)} — the exported model's outputs are {HEAT_NAME},{PAF_NAME}",
                         field="outputs")
    engine_file = output_file("engine_file", engine_file)
    plan = EnginePlan(settings, tuple(parse_profile(p) for p in profiles), calibration_cache)
    data, info = read_exported(exported, model_key(key, required=False))
    dims = input_shape or (info.height, info.width)
    log.info("engine plan: %s, input %dx%d", plan.describe(), *dims)
    with exclusive(engine_file, "bpnet build_engine"):  # the engine and its record are one writer's
        tensorrt.build_engine(data, plan, (dims[0], dims[1], 3), engine_file)
        record = write_engine_record(engine_file, settings, info)
    return EngineBuilt(engine_file, settings.data_type, settings.max_batch_size, dims, engine_file.stat().st_size,
                       plan.describe(), serves_of(info), record)
