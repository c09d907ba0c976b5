"""What the pipeline makes, declared once and looked up by name: the models it evaluates and each
step's outputs.

The DAG (``pipelines.dag``) wires its evaluations and its outputs from these tables, the publish
step's inputs are derived from ``EVALUATED`` (``components.publish.publish_component``), the run
summary (``pipelines.local_run``) reads its rows from them, and the release (``bpnet.release``)
takes the evaluations keyed by their labels. Adding an evaluated model is one entry in
``EVALUATED``; nothing else is listed in step with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

from kfp.dsl import HTML, Artifact, Dataset, Metrics, Model

from bpnet.release import RETRAINED

InputMode = Literal["spec", "export"]
"""How an evaluated model is fed: ``spec`` as the inference spec says (an exported model: as its
export.json records), ``export`` at the exported models' input size and padding mode."""


@dataclass(frozen=True)
class StepOutput:
    """One output of the pipeline: the step that makes it, the step's output key, its type and the
    metadata the run summary shows for it (none: no summary row)."""

    name: str
    step: str
    key: str
    type: type
    figures: tuple[str, ...] = ()


@dataclass(frozen=True)
class Evaluated:
    """One model the pipeline evaluates: its label (the DAG's task, the release's metrics.json and
    the run summary name it so), the key of its outputs (``evaluation_<key>``, ``metrics_<key>``),
    the pipeline output holding the model (a Model of ``STEP_OUTPUTS``) and its input mode."""

    label: str
    key: str
    model: str
    mode: InputMode = "spec"

    @property
    def results(self) -> str:
        return f"evaluation_{self.key}"

    @property
    def metrics(self) -> str:
        return f"metrics_{self.key}"


UNPRUNED, PRUNED, KERAS_EXPORT, ONNX_FP32, ONNX_INT8 = ("unpruned", "pruned", "Keras (export mode)", "ONNX fp32",
                                                       "ONNX INT8")

STEP_OUTPUTS = (
    StepOutput("train_data", "dataset_convert", "train_data", Dataset, ("train_samples", "val_images")),
    StepOutput("val_data", "dataset_convert", "val_data", Dataset),
    StepOutput("calibration_images", "calibration_data", "calibration_images", Dataset, ("images", "bytes")),
    StepOutput("model", "train", "model", Model, ("epochs", "last_loss", "images_per_second")),
    StepOutput("pruned_model", "prune", "pruned", Model, ("parameters_kept",)),
    StepOutput("retrained_model", "retrain", "model", Model, ("epochs", "last_loss", "images_per_second")),
    StepOutput("exported_model", "export", "exported", Model, ("input_shape", "bytes")),
    StepOutput("int8_model", "calibrate", "int8", Model, ("cal_images", "calibrated_tensors")),
    StepOutput("detections", "inference", "detections", Artifact, ("images", "people")),
    StepOutput("inference_report", "inference", "report", HTML),
    StepOutput("promotion", "promotion_gate", "Output", str),
    StepOutput("int8_verdict", "int8_gate", "verdict", str),
    # the engine targets built if promoted: engine_targets' choice, minus INT8 on hold
    StepOutput("gpu_engine_targets", "int8_gate", "gpu_targets", list),
    StepOutput("jetson_engine_targets", "int8_gate", "jetson_targets", list),
)
"""The pipeline's outputs made by its steps, in the run summary's order (evaluations follow the
step that made their model)."""

EVALUATED = (
    Evaluated(UNPRUNED, "unpruned", "model"),
    Evaluated(PRUNED, "pruned", "pruned_model"),
    Evaluated(RETRAINED, "retrained", "retrained_model"),
    Evaluated(KERAS_EXPORT, "keras_export", "retrained_model", "export"),  # like with like against ONNX
    Evaluated(ONNX_FP32, "fp32", "exported_model"),
    Evaluated(ONNX_INT8, "int8", "int8_model"),
)
"""The models the pipeline evaluates; ``RETRAINED``'s AP is what the promotion gate reads."""

GATED = RETRAINED
"""The evaluation whose AP, metrics and report are the pipeline's (``ap``, the promotion gate)."""
GATED_OUTPUTS = (("ap", "Output", float), ("evaluation_report", "report", HTML))


def evaluated_by_label(evaluated: tuple[Evaluated, ...] = EVALUATED) -> dict[str, Evaluated]:
    return {e.label: e for e in evaluated}


def outputs_type(evaluated: tuple[Evaluated, ...] = EVALUATED) -> type:
    """The pipeline function's return type: every step output, each evaluation's results and
    metrics, and the gated evaluation's AP and report (kfp reads the output names and types)."""
    fields = [(o.name, o.type) for o in STEP_OUTPUTS]
    fields += [(name, kind) for e in evaluated for name, kind in ((e.results, Artifact), (e.metrics, Metrics))]
    fields += [(name, kind) for name, _, kind in GATED_OUTPUTS]
    return NamedTuple("Outputs", fields)


@dataclass(frozen=True)
class SummaryRow:
    """A row of the run summary's step table: its label, the output it reads, the figures shown."""

    label: str
    output: str
    figures: tuple[str, ...]


def summary_rows(evaluated: tuple[Evaluated, ...] = EVALUATED) -> list[SummaryRow]:
    """The summary's step rows: each output with figures, each evaluation after its model's."""
    rows = []
    for out in STEP_OUTPUTS:
        if out.figures:
            rows.append(SummaryRow(out.step, out.name, out.figures))
        rows += [SummaryRow(f"evaluate {e.label}", e.results, ("AP",)) for e in evaluated if e.model == out.name]
    return rows
