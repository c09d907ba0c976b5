"""prune: remove low-norm filters of a trained model; writes the pruned model and its report."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from bpnet.artifacts import atomic_write_text
from bpnet.layout import prune_report
from bpnet.settings import PruneSettings
from bpnet.specs.base import DEFAULT_INPUT_SHAPE
from bpnet.steps._common import model_key, output_file


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
          flops_shape: tuple[int, int] = DEFAULT_INPUT_SHAPE) -> Pruned:
    """Prune ``model`` into ``output`` (FLOPs counted at ``flops_shape``); the report goes beside it."""
    key = model_key(key)
    output = output_file("output_file", output)
    from bpnet.model.io import open_model, save_model
    from bpnet.prune import prune_model

    source = open_model(model, key)
    result = prune_model(source.model, settings, flops_shape)
    save_model(result.model, output, key, source.skeleton)  # pruning keeps the heads: same skeleton
    report = {"model": str(model), "output_file": str(output), **result.report}
    atomic_write_text(prune_report(output), json.dumps(report, indent=2) + "\n")
    return Pruned(output, prune_report(output), report)
