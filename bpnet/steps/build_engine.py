"""build_engine: a TensorRT engine from an exported model, on this machine's GPU (as tlt-converter)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bpnet.errors import UsageError
from bpnet.settings import EngineSettings
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


def build_engine(exported: str | Path, engine_file: str | Path, key: str | None, settings: EngineSettings,
                 calibration_cache: str | None = None, profiles: Sequence[str] = (),
                 input_shape: tuple[int, int] | None = None, outputs: Sequence[str] | None = None) -> EngineBuilt:
    """Build ``engine_file`` (input size: ``input_shape``, else the exported one; ``profiles`` in
    tlt-converter's ``<input>,<min>,<opt>,<max>`` syntax)."""
    from bpnet.deploy.engine import EnginePlan, parse_profile
    from bpnet.deploy.engine import build_engine as run
    from bpnet.model.exported import HEAT_NAME, PAF_NAME, read_exported

    if outputs is not None and list(outputs) != [HEAT_NAME, PAF_NAME]:
        raise UsageError(f"{','.join(outputs)} — the exported model's outputs are {HEAT_NAME},{PAF_NAME}",
                         field="outputs")
    engine_file = output_file("engine_file", engine_file)
    plan = EnginePlan(settings, tuple(parse_profile(p) for p in profiles), calibration_cache)
    data, info = read_exported(exported, model_key(key, required=False))
    dims = input_shape or (info.height, info.width)
    log.info("engine plan: %s, input %dx%d", plan.describe(), *dims)
    run(data, plan, (dims[0], dims[1], 3), engine_file)
    return EngineBuilt(engine_file, settings.data_type, settings.max_batch_size, dims, engine_file.stat().st_size,
                       plan.describe())
