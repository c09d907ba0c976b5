"""The settings of each step that are not in a spec file: one pydantic model per step.

Each setting is declared here once, with the TLT guide's CLI default: the ``bpnet`` flags are
derived from these fields (names, defaults, help, choices), the run spec embeds the models as
they are, and the step functions (``bpnet.steps``) take them. A value is checked here, so the
CLI, the run spec and a library caller refuse the same values with the same message.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import Field, ValidationError, model_validator

from bpnet.errors import UsageError
from bpnet.specs.base import DEFAULT_INPUT_SHAPE, MAX_BATCH, CrossFieldError, InputShape, SpecModel
from bpnet.specs.loader import problem

MAX_SHARDS = 4096
MAX_CALIBRATION_IMAGES = 4096
"""Every calibration image is held as float32 in the tensorfile: 4096 at 368x368 is 6.7 GB."""

Mode = Literal["train", "test"]
Normalizer = Literal["max", "L2"]
Criterion = Literal["union", "intersection", "arithmetic_mean", "geometric_mean"]
CalibrationMethod = Literal["entropy", "percentile", "minmax"]
Precision = Literal["fp32", "fp16", "int8"]
Server = Literal["triton", "deepstream"]
"""What serves an engine: Triton (standard export, the project's decoder) or DeepStream's bodypose2d
app (the SDK-compatible export, whose PAFs the app's parser expects at 1/2 of the input)."""
InputType = Literal["image", "dir", "json"]
S = TypeVar("S", bound=SpecModel)


def build(model: type[S], **values: Any) -> S:
    """``model`` from ``values`` (flags, parameters); a bad value is a UsageError naming its field."""
    try:
        return model(**values)
    except ValidationError as exc:
        dotted, value, expected = problem(model, exc.errors()[0])
        raise UsageError(f"{value} — {expected}", field=dotted) from None


class ConvertSettings(SpecModel):
    """``dataset_convert``: which split, masks, checks, shards."""

    mode: Mode = Field("train", description="which split of the spec to convert: train_data or test_data")
    generate_masks: bool = Field(False, description="generate and save masks of regions with unlabeled people "
                                 "and crowds")
    check_files: bool = Field(False, description="check that images decode at their annotated size and that "
                              "masks exist")
    skip_invalid: bool = Field(False, description="skip and count images with invalid data instead of failing")
    num_shards: int = Field(1, ge=1, le=MAX_SHARDS, description="number of TFRecord shards")


class TrainSettings(SpecModel):
    """``train``: devices, and the label check that writes samples instead of training."""

    gpus: int = Field(1, ge=1, le=64, description="number of GPUs to train on")
    gpu_index: list[int] | None = Field(None, min_length=1, max_length=64, description="indices of the GPUs to use")
    dump_samples: int = Field(0, ge=0, le=10_000, description="write N training samples with their heatmaps/PAFs/"
                              "masks drawn on them to <results_dir>/label_samples and exit (checks the labels by "
                              "eye)")


class PruneSettings(SpecModel):
    """``prune``: the ``tlt bpnet prune`` flags by their long names, defaults as the guide's."""

    normalizer: Normalizer = Field("max", description="divide each filter norm by the layer's max norm or by the "
                                   "L2 norm of all its norms")
    equalization_criterion: Criterion = Field("union", description="how layers that must keep the same channels "
                                              "combine their statistics")
    pruning_granularity: int = Field(8, ge=1, le=4096, description="number of filters to remove at a time")
    pruning_threshold: float = Field(0.1, ge=0.0, le=1.0, description="threshold to compare the normalized norm "
                                     "against")
    min_num_filters: int = Field(16, ge=1, le=4096, description="minimum number of filters to keep per layer")
    excluded_layers: list[str] = Field(default_factory=list, max_length=1000, description="layers not to prune")


class ExportSettings(SpecModel):
    """``export``: the deployment input size (an exported model fixes it)."""

    input_shape: InputShape = Field(DEFAULT_INPUT_SHAPE, description="network input height and width")


class CalibrationSettings(SpecModel):
    """INT8 calibration (``export --data_type int8`` and ``calibrate``): ``cal_batches x
    cal_batch_size`` images through ONNX Runtime's calibrator."""

    cal_batches: int = Field(10, ge=1, le=10_000, description="number of calibration batches")
    cal_batch_size: int = Field(1, ge=1, le=MAX_BATCH, description="calibration batch size")
    cal_method: CalibrationMethod = Field("entropy", description="ONNX Runtime calibrator (extension)")

    @model_validator(mode="after")
    def _bounded_calibration_set(self) -> CalibrationSettings:
        if self.cal_batches * self.cal_batch_size > MAX_CALIBRATION_IMAGES:
            raise CrossFieldError(f"cal_batches x cal_batch_size is {self.cal_batches * self.cal_batch_size} "
                                  f"images; at most {MAX_CALIBRATION_IMAGES}", "cal_batches", "cal_batch_size",
                                  source=self)
        return self

    @property
    def images(self) -> int:
        return self.cal_batches * self.cal_batch_size


class DeploySettings(ExportSettings, CalibrationSettings):
    """The pipeline's export and calibrate steps: the input size and the calibration data."""


class EngineSettings(SpecModel):
    """``build_engine`` (as tlt-converter): precision, batch, workspace, DLA."""

    data_type: Precision = Field("fp32", description="engine precision")
    max_batch_size: int = Field(1, ge=1, le=MAX_BATCH, description="max batch size")
    max_workspace_size: int = Field(1 << 30, ge=1 << 20, le=1 << 40, description="workspace bytes")
    strict_type_constraints: bool = Field(False, description="obey precision constraints")
    dla_core: int | None = Field(None, ge=0, le=1, description="DLA core (Jetson), with GPU fallback")


class EvaluateSettings(SpecModel):
    """``evaluate``: the drawings written beside the metrics."""

    num_visualizations: int = Field(0, ge=0, le=10_000, description="draw the detections of the first N images "
                                    "into <results_dir>/images_annotated (extension)")


class PromotionSettings(SpecModel):
    """The promotion gate (``bpnet.release.promotion_gate``): the AP a model must reach."""

    min_ap: float = Field(0.0, ge=0.0, le=1.0, description="the retrained model's AP must reach this to be released")


class InferenceSettings(SpecModel):
    """``inference``: what the input is and whether drawings are written."""

    input_type: InputType = Field(description="what --input is")
    dump_visualizations: bool = Field(False, description="save skeleton drawings to <results_dir>/images_annotated")
