"""prune: remove low-norm filters of a trained model; writes the pruned model and its report."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from bpnet.artifacts import atomic_write_text
from bpnet.layout import prune_report
from bpnet.lock import exclusive
from bpnet.settings import PruneSettings
from bpnet.specs.base import DEFAULT_INPUT_SHAPE
from bpnet.steps._common import is_json_with, is_model_file, model_key, replaceable_output


@dataclass(frozen=True)
class Pruned:
    model: Path
    report_file: Path
    report: dict  # settings, per-layer widths, parameters and FLOPs before/after

    @property
    def parameters(self) -> dict:
        return self.report["parameters"]

    @property
    def flops(self) -> dict:
        return self.report["flops"]


def prune(model: str | Path, output: str | Path, key: str | None, settings: PruneSettings,
          flops_shape: tuple[int, int] = DEFAULT_INPUT_SHAPE, overwrite: bool = False) -> Pruned:
    """Prune ``model`` into ``output`` (FLOPs counted at ``flops_shape``); the report goes beside it.
    Neither may replace ``model``, nor, without ``overwrite``, a file that is not of their kind."""
    key = model_key(key)
    inputs = {"model": model}
    output = replaceable_output("output_file", output, inputs, "a model", is_model_file(key), overwrite)
    replaceable_output("output_file", prune_report(output), inputs, "a prune report", is_json_with("output_file"),
                       overwrite)
    from bpnet.model.io import open_model, save_model
    from bpnet.prune import prune_model

    with exclusive(output, "bpnet prune"):  # the model and its report are one writer's
        source = open_model(model, key)
        result = prune_model(source.model, settings, flops_shape)
        save_model(result.model, output, key, source.skeleton)  # pruning keeps the heads: same skeleton
        report = {"model": str(model), "output_file": str(output), **result.report}
        atomic_write_text(prune_report(output), json.dumps(report, indent=2) + "\n")
    return Pruned(output, prune_report(output), report)
