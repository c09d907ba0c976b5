"""The train spec (YAML): trainer, model, loss, optimizer, dataloader, augmentation, labels.

Every field of the guide's tables, with its documented default, type and allowed values. The
same model serves ``train`` and the ``retrain`` of a pruned model (``load_graph: true``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args

from pydantic import Discriminator, Field, Tag, ValidationInfo, field_validator, model_validator

from bpnet.errors import SpecError
from bpnet.specs.base import (
    MAX_BATCH,
    MAX_COUNT,
    MAX_IMAGE_SIDE,
    MODEL_STRIDE,
    CheckpointPath,
    CrossFieldError,
    InputFile,
    PoseConfigFile,
    SpecModel,
    SpecPath,
    check_input_shape,
    inputs_checked,
)

if TYPE_CHECKING:
    from bpnet.pose import Skeleton


class FinetuningConfig(SpecModel):
    is_finetune_exp: bool = False
    checkpoint_path: CheckpointPath | None = None
    ckpt_epoch_num: int = Field(0, ge=0, le=MAX_COUNT)

    @model_validator(mode="after")
    def _checkpoint_given(self) -> FinetuningConfig:
        if self.is_finetune_exp and not self.checkpoint_path:
            raise CrossFieldError("missing: is_finetune_exp is true", "checkpoint_path", "is_finetune_exp",
                                  source=self)
        return self


class BackboneAttributes(SpecModel):
    architecture: Literal["vgg"] = "vgg"
    mtype: Literal["default"] = "default"
    use_bias: bool = False
    add_final_c128_conv: bool = Field(
        False,
        description="TAO key (not in the guide): true ends the backbone with one more 3x3 conv of 128 filters "
                    "(batch norm, ReLU) before the channel reduction conv. TAO's published code never reads the "
                    "key, and every TAO spec sets it false; false builds exactly TAO's models.")


class ModelConfig(SpecModel):
    class_name: Literal["BpNetLiteModel", "BpNetModel"] = Field(
        "BpNetLiteModel", alias="__class_name__",
        description="BpNetLiteModel (the guide's model) or BpNetModel (TAO's OpenPose-style model with "
                    "separate heatmap and PAF trunks in every stage)")
    backbone_attributes: BackboneAttributes = Field(default_factory=BackboneAttributes)
    stages: int = Field(3, ge=2, le=6)
    heat_channels: int | None = Field(
        None, ge=3, le=1001,
        description="the pose config's joints + 1 (background); unset: taken from the pose config, "
                    "which it must match when set (19 for the default skeleton)")
    paf_channels: int | None = Field(
        None, ge=2, le=20_000,
        description="2 x the pose config's limbs; unset: taken from the pose config, which it must match "
                    "when set (38 for the default skeleton)")
    use_self_attention: bool = False
    data_format: Literal["channels_last"] = "channels_last"
    use_bias: bool = True
    regularization_type: Literal["l1", "l2", "l1_l2"] = "l1"
    kernel_regularization_factor: float = Field(5.0e-4, ge=0, le=1)
    bias_regularization_factor: float = Field(0.0, ge=0, le=1)
    kernel_initializer: Literal["random_normal"] = "random_normal"
    width_multiplier: float = Field(
        1.0, gt=0, le=1,
        description="Project extension (not in TLT): scales every hidden layer's filter count, e.g. 0.25 "
                    "for a CPU demo. The guide's specs never set it; 1.0 is the published model.")


class FocalLossParams(SpecModel):
    """TAO's focal L2 loss (not in the guide). Where the label is above ``bkg_thresh`` (foreground)
    the residual is scaled by ``|1 + alpha - pred| ** gamma``, elsewhere by ``|pred + beta| ** gamma``:
    confident mistakes weigh more, easy pixels less. Off unless ``use_focal_loss``; the defaults
    are the values of every TAO spec (TAO itself has no defaults).

    ``paf_sign_aware`` (project extension, default TAO's rule): TAO compares the signed PAF label
    with ``bkg_thresh``, so a negative component (a limb pointing left or up) is background, and
    a zero prediction on it is weighted by ``beta ** 2``: those limbs are barely learned
    (docs/real_training.md). When true a PAF component is scored toward its label's sign
    (``pred * sign(label)`` against ``|label|``), so both directions weigh alike."""

    use_focal_loss: bool = False
    alpha: float = 0.1
    beta: float = 0.02
    bkg_thresh: float = 0.01
    gamma: float = Field(1.0, ge=0)
    paf_sign_aware: bool = False


class LossConfig(SpecModel):
    class_name: Literal["BpNetLoss"] = Field("BpNetLoss", alias="__class_name__")
    focal_loss_params: FocalLossParams | None = None

    @property
    def focal(self) -> FocalLossParams | None:
        """The focal parameters when the focal loss is on, else None (plain masked L2)."""
        params = self.focal_loss_params
        return params if params is not None and params.use_focal_loss else None


class LearningRateSchedule(SpecModel):
    """Soft-start annealing: ramp up to base over soft_start, hold, anneal down from annealing."""

    class_name: Literal["SoftstartAnnealingLearningRateSchedule"] = Field(
        "SoftstartAnnealingLearningRateSchedule", alias="__class_name__"
    )
    soft_start: float = Field(0.05, ge=0, le=1)
    annealing: float = Field(0.5, ge=0, le=1)
    base_learning_rate: float = Field(2.0e-5, gt=0, le=10)
    min_learning_rate: float = Field(8.0e-8, gt=0, le=10)
    last_step: int | None = Field(None, ge=1, le=MAX_COUNT)

    @model_validator(mode="after")
    def _ordered(self) -> LearningRateSchedule:
        if self.soft_start > self.annealing:
            raise CrossFieldError(f"must not exceed annealing ({self.annealing})", "soft_start", "annealing",
                                  source=self)
        if self.min_learning_rate > self.base_learning_rate:
            raise CrossFieldError(f"must not exceed base_learning_rate ({self.base_learning_rate})",
                                  "min_learning_rate", "base_learning_rate", source=self)
        return self


class ExponentialDecaySchedule(SpecModel):
    """TAO's BpNetExponentialDecayLRSchedule (not in the guide)::

        lr(step) = max(learning_rate * decay_rate ** (step / decay_steps), min_learning_rate)

    with ``step / decay_steps`` floored when ``staircase``. ``decay_steps`` is ``decay_epochs``
    epochs of the run (TAO's trainer always derives it so); an explicit ``decay_steps`` (a project
    extension: TAO overwrites it) takes precedence.
    """

    class_name: Literal["BpNetExponentialDecayLRSchedule"] = Field(
        "BpNetExponentialDecayLRSchedule", alias="__class_name__")
    learning_rate: float = Field(gt=0)
    decay_epochs: float | None = Field(None, gt=0)
    decay_steps: int | None = Field(None, ge=1)
    decay_rate: float = Field(gt=0)
    staircase: bool = False
    min_learning_rate: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _decay_period(self) -> ExponentialDecaySchedule:
        if self.decay_epochs is None and self.decay_steps is None:
            raise ValueError("decay_epochs (or decay_steps) is required")
        return self


def _class_name(cls: type[SpecModel]) -> str:
    return get_args(cls.model_fields["class_name"].annotation)[0]


def _class_tag(value: Any, default: str) -> str:
    """The class a spec section names by ``__class_name__`` (``default`` when it is absent)."""
    if isinstance(value, dict):
        return str(value.get("__class_name__", value.get("class_name", default)))
    return getattr(value, "class_name", default)


def _class_choice(default: type[SpecModel], other: type[SpecModel], error_type: str) -> Any:
    """A union of two spec classes chosen by ``__class_name__`` (``default`` when it is absent), as
    pydantic field type; an unknown name is one error naming both."""
    first, second = _class_name(default), _class_name(other)
    return Annotated[Annotated[default, Tag(first)] | Annotated[other, Tag(second)],
                     Discriminator(lambda value: _class_tag(value, first), custom_error_type=error_type,
                                   custom_error_message=f"__class_name__ must be {first} or {second}")]


# soft-start annealing when __class_name__ is absent
ScheduleConfig = _class_choice(LearningRateSchedule, ExponentialDecaySchedule, "schedule_class")


def base_rate_field(schedule: Any) -> str:
    """The field holding a schedule's peak learning rate (its name differs between the classes)."""
    exponential = _class_tag(schedule, _class_name(LearningRateSchedule)) == _class_name(ExponentialDecaySchedule)
    return "learning_rate" if exponential else "base_learning_rate"


class _WeightedOptimizer(SpecModel):
    """What both optimizers share: the schedule and the per-layer learning-rate multipliers."""

    learning_rate_schedule: ScheduleConfig = Field(default_factory=LearningRateSchedule)
    grad_weights_dict: dict[str, float] | None = None
    weight_default_value: float = Field(1.0, ge=0, le=1e6)


class OptimizerConfig(_WeightedOptimizer):
    """The guide's optimizer: momentum SGD."""

    class_name: Literal["WeightedMomentumOptimizer"] = Field("WeightedMomentumOptimizer", alias="__class_name__")
    momentum: float = Field(0.9, ge=0, lt=1)
    use_nesterov: bool = False


class AdamOptimizerConfig(_WeightedOptimizer):
    """Extension (not in TLT): Adam with the same schedule and multipliers. A short CPU training
    (the demo's) reaches in 40 epochs what momentum SGD at the guide's rates does not."""

    class_name: Literal["WeightedAdamOptimizer"] = Field(alias="__class_name__")
    beta_1: float = Field(0.9, ge=0, lt=1)
    beta_2: float = Field(0.999, ge=0, lt=1)
    epsilon: float = Field(1e-7, gt=0, le=1)


# momentum SGD (the guide's) when __class_name__ is absent
AnyOptimizerConfig = _class_choice(OptimizerConfig, AdamOptimizerConfig, "optimizer_class")


class ImageDims(SpecModel):
    height: int = Field(256, gt=0, le=MAX_IMAGE_SIDE)
    width: int = Field(256, gt=0, le=MAX_IMAGE_SIDE)
    channels: Literal[3] = 3

    @field_validator("height", "width")
    @classmethod
    def _stride_multiple(cls, value: int) -> int:
        return check_input_shape((value, value))[0]


class ImageConfig(SpecModel):
    image_dims: ImageDims = Field(default_factory=ImageDims)
    image_encoding: Literal["jpg", "png"] = "jpg"


class PoseConfigRef(SpecModel):
    class_name: Literal["BpNetPoseConfig"] = Field("BpNetPoseConfig", alias="__class_name__")
    target_shape: tuple[int, int] = (32, 32)
    pose_config_path: PoseConfigFile


class DatasetConfig(SpecModel):
    root_data_path: SpecPath
    train_records_folder_path: SpecPath
    train_records_path: list[str] = Field(min_length=1, max_length=4096)
    val_records_folder_path: SpecPath | None = None
    val_records_path: list[str] = Field(default_factory=list, max_length=4096)
    dataset_specs: dict[str, InputFile] = Field(min_length=1, max_length=64)
    # Extension: train on past a record whose image or mask cannot be read (the sample gets zero
    # loss weight, with a warning naming it) instead of stopping with exit 1.
    skip_bad_images: bool = False

    @model_validator(mode="after")
    def _records_exist(self, info: ValidationInfo) -> DatasetConfig:
        """Training needs its records now (dataset_convert writes them beforehand); the val
        records are not read while training, so they are not required here."""
        missing = [n for n in self.train_records_path if not (Path(self.train_records_folder_path) / n).is_file()]
        if missing and inputs_checked(info):
            raise CrossFieldError(f"no such record file {missing[0]!r} in {self.train_records_folder_path} (run "
                                  "dataset_convert first, or fix the folder)", "train_records_path", source=self)
        return self


class NormalizationParams(SpecModel):
    """(data / scale) - offset, per channel."""

    image_scale: tuple[float, float, float] = (256.0, 256.0, 256.0)
    image_offset: tuple[float, float, float] = (0.5, 0.5, 0.5)
    mask_scale: tuple[float] = (255.0,)
    mask_offset: tuple[float] = (0.0,)

    @field_validator("image_scale", "mask_scale")
    @classmethod
    def _nonzero(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(v == 0 for v in value):
            raise ValueError("scales must be non-zero (data is divided by them)")
        return value


class SpatialAugParams(SpecModel):
    flip_lr_prob: float = Field(0.5, ge=0, le=1)
    flip_tb_prob: float = Field(0.0, ge=0, le=1)
    rotate_deg_max: float = Field(40.0, ge=-360, le=360)
    rotate_deg_min: float | None = Field(-40.0, ge=-360, le=360)
    zoom_prob: float = Field(0.0, ge=0, le=1)
    zoom_ratio_min: float = Field(1.0, gt=0, le=100)
    zoom_ratio_max: float = Field(1.0, gt=0, le=100)
    translate_max_x: float = 40.0
    translate_min_x: float = -40.0
    translate_max_y: float = 40.0
    translate_min_y: float = -40.0
    use_translate_ratio: bool = False
    translate_ratio_max: float = 0.2
    translate_ratio_min: float = -0.2
    target_person_scale: float = Field(0.6, gt=0, le=100)

    @model_validator(mode="after")
    def _ranges(self) -> SpatialAugParams:
        rot_min = -abs(self.rotate_deg_max) if self.rotate_deg_min is None else self.rotate_deg_min
        for low_name, low, high_name, high in (
            ("rotate_deg_min", rot_min, "rotate_deg_max", self.rotate_deg_max),
            ("zoom_ratio_min", self.zoom_ratio_min, "zoom_ratio_max", self.zoom_ratio_max),
            ("translate_min_x", self.translate_min_x, "translate_max_x", self.translate_max_x),
            ("translate_min_y", self.translate_min_y, "translate_max_y", self.translate_max_y),
            ("translate_ratio_min", self.translate_ratio_min, "translate_ratio_max", self.translate_ratio_max),
        ):
            if low > high:
                raise CrossFieldError(f"must not exceed {high_name} ({high})", low_name, high_name, source=self)
        return self

    @property
    def rotation_surprise(self) -> str | None:
        """A warning when ``rotate_deg_max`` was changed but ``rotate_deg_min`` left at the guide's
        default -40: ``rotate_deg_max: 0`` then still rotates by up to 40 degrees one way (it
        happened to this project's own overfit recipe: docs/real_training.md, section 7)."""
        if "rotate_deg_min" in self.model_fields_set or self.rotate_deg_max == 40.0:
            return None
        low, high = self.rotation_range
        return (f"spatial_aug_params: rotate_deg_max is {high:g} but rotate_deg_min is left at its default "
                f"{low:g}: rotations are drawn from [{low:g}, {high:g}] degrees; set rotate_deg_min "
                "(null for the symmetric range) to silence this")

    @property
    def rotation_range(self) -> tuple[float, float]:
        """A null rotate_deg_min means the symmetric range [-max, max] (guide note)."""
        low = -abs(self.rotate_deg_max) if self.rotate_deg_min is None else self.rotate_deg_min
        return low, self.rotate_deg_max


class AugmentationConfig(SpecModel):
    class_name: Literal["AugmentationConfig"] = Field("AugmentationConfig", alias="__class_name__")
    spatial_augmentation_mode: Literal["person_centric", "center_aug", "random_aug"] = "person_centric"
    spatial_aug_params: SpatialAugParams = Field(default_factory=SpatialAugParams)
    identity_spatial_aug_params: None = Field(
        None, description="Fixed spatial transformations: not supported by BodyPoseNet (guide); must be null."
    )


class LabelProcessorConfig(SpecModel):
    # Gaussians/limb widths in input pixels: beyond the largest image side they are flat planes.
    paf_gaussian_sigma: float = Field(0.03, gt=0, le=MAX_IMAGE_SIDE)
    heatmap_gaussian_sigma: float = Field(7.0, gt=0, le=MAX_IMAGE_SIDE)
    paf_ortho_dist_thresh: float = Field(1.0, gt=0, le=MAX_IMAGE_SIDE)


class DataloaderConfig(SpecModel):
    class_name: Literal["BpNetDataloader"] = Field("BpNetDataloader", alias="__class_name__")
    batch_size: int = Field(10, ge=1, le=MAX_BATCH)
    # records held in memory for shuffling: 5x the guide's 20000 is already several GB of JPEGs
    shuffle_buffer_size: int = Field(20000, ge=1, le=100_000)
    image_config: ImageConfig = Field(default_factory=ImageConfig)
    pose_config: PoseConfigRef
    dataset_config: DatasetConfig
    normalization_params: NormalizationParams = Field(default_factory=NormalizationParams)
    augmentation_config: AugmentationConfig = Field(default_factory=AugmentationConfig)
    label_processor_config: LabelProcessorConfig = Field(default_factory=LabelProcessorConfig)

    @model_validator(mode="after")
    def _target_shape_matches_stride(self) -> DataloaderConfig:
        dims = self.image_config.image_dims
        expected = (dims.height // MODEL_STRIDE, dims.width // MODEL_STRIDE)
        if tuple(self.pose_config.target_shape) != expected:
            raise CrossFieldError(
                f"must be image_config.image_dims {[dims.height, dims.width]} divided by the model stride "
                f"{MODEL_STRIDE}: {list(expected)}", "pose_config.target_shape", "image_config.image_dims", source=self)
        return self


# Sections the guide's trainer sample lists beside ``dataloader`` although they belong to it.
_DATALOADER_SECTIONS = ("augmentation_config", "label_processor_config")


class TrainSpec(SpecModel):
    """The whole train spec (``BpNetTrainer``)."""

    class_name: Literal["BpNetTrainer"] = Field("BpNetTrainer", alias="__class_name__")
    checkpoint_dir: SpecPath | None = None
    log_every_n_secs: int = Field(30, ge=0, le=MAX_COUNT)
    checkpoint_n_epoch: int = Field(5, ge=1, le=MAX_COUNT)
    num_epoch: int = Field(100, ge=1, le=100_000)
    summary_every_n_steps: int = Field(20, ge=0, le=MAX_COUNT)
    infrequent_summary_every_n_steps: int = Field(0, ge=0, le=MAX_COUNT)
    validation_every_n_epoch: int | None = Field(
        None, ge=0, le=MAX_COUNT,
        description="epochs between the learning curve's AP points (unset: checkpoint_n_epoch; 0: the last only)")
    max_ckpt_to_keep: int = Field(100, ge=1, le=10_000)
    random_seed: int = Field(42, ge=0, le=2**31 - 1, description="seeds numpy, Python and TensorFlow alike")
    pretrained_weights: InputFile | None = None
    partial_pretrained_weights: bool = Field(
        False, description="extension: a bpnet model as pretrained_weights may lack layers of this model (another "
                           "architecture); they train from scratch. Off: such a load is an error naming them")
    load_graph: bool = False
    compute_dtype: Literal["float32", "bfloat16"] = Field(
        "float32", description="extension: the dtype training computes the hidden layers in. bfloat16 (Keras mixed "
                               "precision: float32 weights, float32 output layers and loss) needs 1.4-1.7x less CPU "
                               "per step where the CPU has AVX512_BF16 or AMX (and suits Ampere and later GPUs); "
                               "elsewhere it is slower. The saved model is float32 either way")
    finetuning_config: FinetuningConfig = Field(default_factory=FinetuningConfig)
    use_stagewise_lr_multipliers: bool = False
    dataloader: DataloaderConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    optimizer: AnyOptimizerConfig = Field(default_factory=OptimizerConfig)
    loss: LossConfig = Field(default_factory=LossConfig)

    @property
    def skeleton(self) -> Skeleton:
        """The pose config's skeleton; the model section's channel counts, when set, must match it."""
        from bpnet.pose import load_pose_config

        path = self.dataloader.pose_config.pose_config_path
        skeleton = load_pose_config(path)
        for name, need in (("heat_channels", skeleton.heat_channels), ("paf_channels", skeleton.paf_channels)):
            given = getattr(self.model, name)
            if given is not None and given != need:
                raise SpecError([f"spec error: model.{name}: {given}, but the pose config {path} "
                                 f"('{skeleton.name}', {skeleton.num_joints} joints, {len(skeleton.limbs)} limbs) "
                                 f"needs {need}; leave it unset to follow the pose config"])
        return skeleton

    @model_validator(mode="before")
    @classmethod
    def _dataloader_sections_at_top(cls, data: Any) -> Any:
        """Accept augmentation/label configs written next to ``dataloader`` (the guide's trainer
        sample shows them there); they are moved into the dataloader, where they belong."""
        if not isinstance(data, dict):
            return data
        moved = {k: data[k] for k in _DATALOADER_SECTIONS if k in data}
        if not moved:
            return data
        data = {k: v for k, v in data.items() if k not in moved}
        loader = data.get("dataloader")
        if isinstance(loader, dict):
            clash = sorted(k for k in moved if k in loader)
            if clash:
                raise ValueError(f"{clash} given both at top level and inside dataloader; keep one")
            data["dataloader"] = {**loader, **moved}
        return data

    @property
    def regularization_enabled(self) -> bool:
        """Retraining a loaded (pruned) graph turns regularization off, as the guide states."""
        return not self.load_graph and (
            self.model.kernel_regularization_factor > 0 or self.model.bias_regularization_factor > 0
        )
