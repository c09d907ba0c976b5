"""The settings of each step that are not in a spec file: one pydantic model per step.

Each setting is declared here once, with the TLT guide's CLI default: the ``bpnet`` flags are
derived from these fields (names, defaults, help, choices), the run spec embeds the models as
they are, and the step functions (``bpnet.steps``) take them. A value is checked here, so the
CLI, the run spec and a library caller refuse the same values with the same message.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, Field, ValidationError, model_validator

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


def from_json(model: type[S], text: str, name: str) -> S:
    """``model`` from its JSON (a step's settings as one pipeline parameter), parsed once; a bad
    value is a UsageError naming the parameter and the field."""
    try:
        return model.model_validate_json(text)
    except ValidationError as exc:
        dotted, value, expected = problem(model, exc.errors()[0])
        raise UsageError(f"{value} — {expected}", field=f"{name}: {dotted}") from None


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


class SynthSettings(SpecModel):
    """``synth``: the size and seed of the synthetic demo dataset (``bpnet.data.synth.generate``)."""

    seed: int = Field(0, ge=0, le=2**32 - 1, description="random seed")
    train_images: int = Field(128, ge=1, le=1_000_000, description="number of training images")
    val_images: int = Field(32, ge=1, le=1_000_000, description="number of validation images")
    hard_scenes: bool = Field(False, description="crowds, occlusion, clutter and unlabeled people instead of the "
                              "demo's plain scenes")
    skeleton: str | None = Field(None, description="a pose config file: draw figures of its skeleton (a hand, an "
                                 "animal) instead of people; the dataset spec carries the pose config inline")


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


class OutputSettings(SpecModel):
    """How a command treats an existing output file that bpnet did not write (an input is never
    replaced; an artifact of the same kind bpnet wrote always is)."""

    overwrite: bool = Field(False, description="replace an existing output that is not an artifact of the same "
                                                "kind bpnet wrote (an input is never replaced)")


class CacheReuse(SpecModel):
    """Whether an existing calibration cache must be of the model being calibrated."""

    foreign_cal_cache: bool = Field(False, description="use an existing --cal_cache_file although its sidecar "
                                                       "does not name this model (another or an unknown one)")


class ExportCalibrationSettings(ExportSettings, CalibrationSettings):
    """The pipeline's export and calibrate steps (the run spec's ``export``): the input size and the
    calibration data."""


# The guide gives two workspace defaults: tlt-converter's ``-w`` 1 << 30 (EngineSettings) and
# ``export --max_workspace_size`` 2 * (1 << 30), the engine ``export --engine_file`` builds.
EXPORT_MAX_WORKSPACE = 2 * (1 << 30)


class EngineSettings(SpecModel):
    """``build_engine`` (as tlt-converter): precision, batch, workspace, DLA."""

    data_type: Precision = Field("fp32", description="engine precision")
    max_batch_size: int = Field(1, ge=1, le=MAX_BATCH, description="TensorRT max batch size")
    max_workspace_size: int = Field(1 << 30, ge=1 << 20, le=1 << 40, description="TensorRT workspace bytes")
    strict_type_constraints: bool = Field(False, description="obey precision constraints")
    dla_core: int | None = Field(None, ge=0, le=1, description="DLA core (Jetson), with GPU fallback")


class EngineTarget(SpecModel):
    """One TensorRT engine the pipeline builds (the run spec's ``engines.targets``): where (the GPU
    pool or the Jetson pool), how precise, DLA, and what serves it (which export it is built from).
    It travels to the build step as it is and becomes that step's ``EngineSettings`` there."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$", description="the target's name: <name>.engine, and what "
                      "the engine_targets run parameter chooses by")
    pool: Literal["gpu", "jetson"] = Field(description="gpu: the GPU pool and image; jetson: the Jetson pool and "
                                           "image")
    precision: Precision = Field("fp16", description="engine precision (int8: only if the INT8 gate passes)")
    max_batch_size: int = EngineSettings.model_fields["max_batch_size"]
    dla_core: int | None = EngineSettings.model_fields["dla_core"]
    serves: Server = Field("triton", description="triton: built from the standard export, in the release's "
                           "Triton repository; deepstream: built from the SDK-compatible export for the bodypose2d "
                           "app. Unset: triton on the gpu pool, deepstream on the jetson pool")

    @model_validator(mode="before")
    @classmethod
    def _serves_by_pool(cls, data: object) -> object:
        """Jetson engines go to DeepStream unless the spec says otherwise (the field's default is the GPU pool's)."""
        if isinstance(data, dict) and data.get("pool") == "jetson" and data.get("serves") is None:
            return {**data, "serves": "deepstream"}
        return data

    def settings(self, workspace_bytes: int) -> EngineSettings:
        """The build step's settings for this target."""
        return EngineSettings(data_type=self.precision, max_batch_size=self.max_batch_size,
                              max_workspace_size=workspace_bytes, dla_core=self.dla_core)


class EvaluateSettings(SpecModel):
    """``evaluate``: the drawings written beside the metrics."""

    num_visualizations: int = Field(0, ge=0, le=10_000, description="draw the detections of the first N images "
                                    "into <results_dir>/images_annotated (extension)")


class PromotionSettings(SpecModel):
    """The promotion gate (``bpnet.release.promotion_gate``): the AP a model must reach."""

    min_ap: float = Field(0.0, ge=0.0, le=1.0, description="the retrained model's AP must reach this to be released")


NVIDIA_GPU = "nvidia.com/gpu"
"""The extended resource the NVIDIA GPU Operator advertises (and the taint of its GPU nodes)."""

QUANTITY = re.compile(r"(?P<number>[0-9]+(\.[0-9]*)?|\.[0-9]+)(?P<suffix>[eE][+-]?[0-9]+|[KMGTPE]i|[mkMGTPE])?")
"""Kubernetes' quantity grammar (k8s.io/apimachinery ``resource.Quantity``), unsigned: a decimal
number (``4``, ``0.5``, ``.5``) with a binary (``Ki`` ... ``Ei``) or decimal (``m``, ``k`` ... ``E``)
suffix, or an exponent (``1e3``)."""
_BINARY, _DECIMAL = "KMGTPE", "kMGTPE"


def quantity_value(text: str) -> Decimal:
    """The number a Kubernetes quantity stands for (``1.5Gi`` -> 1610612736, ``500m`` -> 0.5)."""
    match = QUANTITY.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a Kubernetes quantity")
    number, suffix = Decimal(match["number"]), match["suffix"] or ""
    if suffix.endswith("i"):
        return number * 1024 ** (_BINARY.index(suffix[0]) + 1)
    if len(suffix) > 1:  # an exponent: e3, E-2 (a lone E is exa)
        return number.scaleb(int(suffix[1:]))
    if suffix == "m":
        return number / 1000
    return number * 1000 ** (_DECIMAL.index(suffix) + 1) if suffix else number


def _quantity(example: str) -> AfterValidator:
    def check(value: str) -> str:
        if len(value) > 32 or QUANTITY.fullmatch(value) is None or quantity_value(value) <= 0:
            raise ValueError(f"expected a positive Kubernetes quantity such as {example}")
        return value
    return AfterValidator(check)


CpuQuantity = Annotated[str, _quantity("'4', '0.5', '.5' or '500m'"),
                        Field(description="CPU request, e.g. '4', '0.5' or '500m'")]
MemoryQuantity = Annotated[str, _quantity("'16Gi', '1.5Gi' or '512M'"),
                           Field(description="memory request and limit, e.g. '16Gi', '1.5Gi' or '512M'")]


class Toleration(SpecModel):
    """A Kubernetes toleration of a node taint."""

    key: str = Field(min_length=1, description="the taint's key")
    operator: Literal["Exists", "Equal"] = Field("Exists", description="Exists: any value; Equal: ``value``")
    value: str | None = Field(None, description="the taint's value (with Equal)")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        "NoSchedule", description="the taint's effect; null: any")


class NodePool(SpecModel):
    """How pods land on a pool: node labels to select and taints to tolerate."""

    node_selector: dict[str, str] = Field(default_factory=dict, description="node labels the pods require")
    tolerations: list[Toleration] = Field(default_factory=list, description="node taints the pods tolerate")


def gpu_pool() -> NodePool:
    """The GPU Operator's nodes: tolerate its GPU taint."""
    return NodePool(tolerations=[Toleration(key=NVIDIA_GPU)])


class ServingSettings(SpecModel):
    """How a release is served (the run spec's ``serving``): the KServe InferenceService (GPU, node
    pool, resources, runtime) and the Triton models' batch and people limits."""

    name: str = Field("bpnet", min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
                      description="InferenceService name")
    namespace: str | None = Field(None, description="namespace of the InferenceService; unset: kubectl's")
    gpus: int = Field(1, ge=0, le=16, description="GPUs of the predictor (requested as gpu.accelerator_type)")
    cpu: CpuQuantity | None = Field(None, description="CPU request and limit, e.g. '4' or '.5'")
    memory: MemoryQuantity | None = Field(None, description="memory request and limit, e.g. '8Gi' or '1.5Gi'")
    pool: NodePool = Field(default_factory=gpu_pool, description="node selector and tolerations of the predictor")
    runtime: str | None = Field(None, description="KServe ServingRuntime; unset = KServe picks one for 'triton'")
    service_account: str | None = Field(None, description="service account with read access to the storage URI")
    onnx_max_batch_size: int = Field(8, ge=1, le=1024, description="max_batch_size of the ONNX CPU model")
    max_people: int = Field(20, ge=1, le=1000, description="people per image the Triton ensemble answers")


class ReleaseServing(ServingSettings):
    """What a release's serving files are written from (``bpnet.release``): the serving settings,
    whether the plain ONNX is shipped, and the resource name GPUs are requested by."""

    plain_onnx: bool = Field(False, description="also ship the unencrypted ONNX (Triton CPU model); off by "
                             "default: it is the model in the clear, readable by anyone who can read the release")
    accelerator_type: str = Field(NVIDIA_GPU, min_length=1, description="the extended resource GPUs are "
                                  "requested as (the GPU Operator's by default)")


class InferenceSettings(SpecModel):
    """``inference``: what the input is and whether drawings are written."""

    input_type: InputType = Field(description="what --input is")
    dump_visualizations: bool = Field(False, description="save skeleton drawings to <results_dir>/images_annotated")
