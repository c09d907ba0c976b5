"""The run spec: where and how the pipeline runs (``specs/pipeline/*.yaml``).

Validated by the same loader as every other spec, so a mistake reads
``spec error: <file>: <field.path>: <value> — <expected>`` and stops before any work or request.
It names the step specs by path (their content is inlined into the run's parameters at submit
time, so the Kubeflow UI shows exactly what a run used) but never holds a secret: MinIO keys and
the model key reach pods from Kubernetes secrets named here; the KFP token comes from the
environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic.fields import FieldInfo

from bpnet.settings import (
    ConvertSettings,
    CpuQuantity,
    DeploySettings,
    MemoryQuantity,
    NodePool,
    Precision,
    PromotionSettings,
    PruneSettings,
    Server,
    ServingOptions,
    ServingSettings,
    Toleration,
    gpu_pool,
)
from bpnet.settings import EngineSettings as BuildSettings
from bpnet.specs.base import CrossFieldError, PathContext, SpecModel, SpecPath
from bpnet.specs.loader import SpecError
from pipelines.cron import to_kfp_cron


class KfpSettings(SpecModel):
    """The Kubeflow Pipelines endpoint; unset ``host`` falls back to $KF_PIPELINES_ENDPOINT."""

    host: str | None = None
    namespace: str | None = Field(None, description="profile namespace on multi-user clusters")
    experiment: str = Field("bpnet", min_length=1)
    pipeline_name: str = Field("bpnet", min_length=1, pattern=r"^[a-z0-9][a-z0-9-]*$")


class Images(SpecModel):
    """Container images (pinned tags). ``gpu`` runs every x86_64 step, on GPU nodes or not."""

    gpu: str = Field(min_length=1)
    jetson: str | None = Field(None, description="arm64 image for Jetson engine builds")


def _jetson_pool() -> NodePool:
    return NodePool(node_selector={"kubernetes.io/arch": "arm64"},
                    tolerations=[Toleration(key="nvidia.com/jetson")])


class GpuSettings(SpecModel):
    accelerator_type: str = ServingOptions.model_fields["accelerator_type"]
    pool: NodePool = Field(default_factory=gpu_pool)
    jetson_pool: NodePool = Field(default_factory=_jetson_pool)


class StepSettings(SpecModel):
    """Per-step scheduling: GPUs (0 = CPU node), retries, timeout, caching, resource requests."""

    gpus: int = Field(0, ge=0, le=16)
    retries: int = Field(1, ge=0, le=10)
    timeout_seconds: int = Field(4 * 3600, ge=60, le=30 * 86400)
    caching: bool = True
    cpu: CpuQuantity | None = None
    memory: MemoryQuantity | None = None


class Steps(SpecModel):
    """Per step; ``evaluate`` applies to every evaluation (unpruned, pruned, retrained, ONNX fp32, INT8)."""

    resolve_specs: StepSettings = Field(
        default_factory=lambda: StepSettings(retries=0, timeout_seconds=600),
        description="the run's typed parameters laid over its specs and checked, before any other step")
    data_version: StepSettings = Field(
        default_factory=lambda: StepSettings(retries=2, timeout_seconds=600, caching=False),
        description="the first step after resolve_specs: fingerprints the dataset URI (never cached: it "
                    "detects new data)")
    dataset_convert: StepSettings = Field(default_factory=lambda: StepSettings(retries=2))
    train: StepSettings = Field(default_factory=lambda: StepSettings(gpus=1, retries=1, timeout_seconds=3 * 86400))
    prune: StepSettings = Field(default_factory=lambda: StepSettings(retries=2, timeout_seconds=3600))
    retrain: StepSettings = Field(default_factory=lambda: StepSettings(gpus=1, retries=1, timeout_seconds=3 * 86400))
    export: StepSettings = Field(default_factory=lambda: StepSettings(retries=2, timeout_seconds=3600))
    publish: StepSettings = Field(default_factory=lambda: StepSettings(retries=2, timeout_seconds=7200, caching=False))
    build_engine: StepSettings = Field(default_factory=lambda: StepSettings(gpus=1, retries=1, timeout_seconds=7200))
    calibrate: StepSettings = Field(default_factory=lambda: StepSettings(retries=2))
    evaluate: StepSettings = Field(default_factory=lambda: StepSettings(gpus=1, retries=2))
    promotion_gate: StepSettings = Field(
        default_factory=lambda: StepSettings(retries=2, timeout_seconds=600, caching=False),
        description="compares the retrained model's AP with the gate and the latest release (never cached)")
    int8_gate: StepSettings = Field(
        default_factory=lambda: StepSettings(retries=0, timeout_seconds=600, caching=False),
        description="keeps the INT8 engine targets only if INT8 AP >= fp32 AP - release.max_int8_ap_drop "
                    "(never cached; not retried: the same figures give the same verdict)")
    inference: StepSettings = Field(default_factory=lambda: StepSettings(gpus=1, retries=2))


class EngineTarget(SpecModel):
    """One TensorRT engine to build: where (the GPU pool or the Jetson pool), how precise, DLA, and
    what serves it (which export it is built from)."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    pool: Literal["gpu", "jetson"]
    precision: Precision = "fp16"
    max_batch_size: int = BuildSettings.model_fields["max_batch_size"]
    dla_core: int | None = BuildSettings.model_fields["dla_core"]
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


def _default_targets() -> list[EngineTarget]:
    return [EngineTarget(name=f"{pool}-{p}", pool=pool, precision=p) for pool in ("gpu", "jetson")
            for p in ("fp16", "int8")]


class EngineSettings(SpecModel):
    """Engine builds after the gate (only promoted models), fanned out with dsl.ParallelFor: GPU
    targets on the GPU pool with the GPU image, Jetson targets on the Jetson pool with its image.
    Off locally: kfp.local has no TensorRT and no GPU."""

    enabled: bool = True
    workspace_bytes: int = BuildSettings.model_fields["max_workspace_size"]
    targets: list[EngineTarget] = Field(default_factory=_default_targets, max_length=64)

    def by_pool(self) -> dict[str, list[dict]]:
        """The targets to build as the build_engine component takes them, per pool (none when off)."""
        return {pool: [{"target": t.name, "precision": t.precision, "max_batch_size": t.max_batch_size,
                        "dla_core": -1 if t.dla_core is None else t.dla_core, "serves": t.serves}
                       for t in self.targets if t.pool == pool] if self.enabled else []
                for pool in ("gpu", "jetson")}


class ReleaseSettings(SpecModel):
    """Where promoted models are published, the gate's minimum, and warm starts."""

    root: str = Field(min_length=1, description="s3://bucket/prefix or a folder: <root>/<id>/, <root>/latest.json")
    min_ap: float = PromotionSettings.model_fields["min_ap"]
    warm_start: Literal["none", "latest"] = Field("none", description="latest: train starts from the latest release")
    max_int8_ap_drop: float = Field(0.02, ge=-1.0, le=1.0, description="INT8 engines only if INT8 AP >= fp32 AP - "
                                    "this (negative: INT8 must beat fp32 by that much)")
    plain_onnx: bool = ServingOptions.model_fields["plain_onnx"]

    @field_validator("root")
    @classmethod
    def _resolve_local(cls, value: str, info: ValidationInfo) -> str:
        return _resolve_unless_remote(value, info)


class StorageSettings(SpecModel):
    """MinIO/S3 for the dataset URI (and releases later). Keys come from ``credentials_secret``."""

    endpoint: str | None = Field(None, description="host:port or URL; unset = take $BPNET_S3_ENDPOINT as is")
    secure: bool = False
    credentials_secret: str = "mlpipeline-minio-artifact"
    access_key_field: str = "accesskey"
    secret_key_field: str = "secretkey"
    model_key_secret: str = "bpnet-model-key"
    model_key_field: str = "key"


class DatasetSource(SpecModel):
    uri: str = Field(min_length=1, description="s3://bucket/prefix of a COCO dataset, or a folder")
    version: str = Field("", description="cache key of the data; empty = fingerprint of the listing at submit")
    # masks on: the pipeline trains, and unmasked crowds would teach the model that unlabeled people are background
    generate_masks: bool = FieldInfo.merge_field_infos(ConvertSettings.model_fields["generate_masks"], default=True)
    num_shards: int = ConvertSettings.model_fields["num_shards"]

    @field_validator("uri")
    @classmethod
    def _resolve_local(cls, value: str, info: ValidationInfo) -> str:
        return _resolve_unless_remote(value, info)


class StepSpecs(SpecModel):
    """The TLT-format specs of the steps, inlined as pipeline parameters when a run is made."""

    dataset: SpecPath
    train: SpecPath
    retrain: SpecPath = Field(description="train spec of the retrain; pretrained_weights/load_graph are bound")
    inference: SpecPath
    pose_config: SpecPath | None = Field(
        None, description="the pose config train and retrain use (docs/skeletons.md); unset: the one the train "
                          "spec's pose_config_path names")


class Schedule(SpecModel):
    """A recurring run (``make pipeline-schedule``); ``cron`` takes 5 or 6 fields."""

    cron: str
    name: str = Field("bpnet-scheduled", min_length=1)
    max_concurrency: int = Field(1, ge=1, le=10)
    catchup: bool = False

    @field_validator("cron")
    @classmethod
    def _six_fields(cls, value: str) -> str:
        return to_kfp_cron(value)


class RunSpec(SpecModel):
    name: str = Field("bpnet", min_length=1, description="prefix of run names")
    kfp: KfpSettings = Field(default_factory=KfpSettings)
    pipeline_root: str | None = Field(None, description="where KFP keeps artifacts (minio://, s3://, gs:// or a "
                                      "folder); unset = the namespace's default (kfp-launcher config)")
    images: Images
    gpu: GpuSettings = Field(default_factory=GpuSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    dataset: DatasetSource
    specs: StepSpecs
    steps: Steps = Field(default_factory=Steps)
    prune: PruneSettings = Field(default_factory=PruneSettings)
    export: DeploySettings = Field(default_factory=DeploySettings)
    release: ReleaseSettings
    serving: ServingSettings = Field(default_factory=ServingSettings)
    engines: EngineSettings = Field(default_factory=EngineSettings)
    run_as_user: int | None = Field(1000, ge=1, description="uid of step containers (runAsNonRoot); null = image's")
    report_images: int = Field(4, ge=0, le=64, description="annotated images in the HTML reports")
    path_map: list[str] = Field(default_factory=list,
                                description="OLD=NEW prefixes for absolute paths inside the step specs")
    schedule: Schedule | None = None

    @model_validator(mode="after")
    def _jetson_image(self) -> RunSpec:
        if self.engines.enabled and any(t.pool == "jetson" for t in self.engines.targets) and not self.images.jetson:
            raise CrossFieldError("engines.targets has Jetson targets: set images.jetson (or engines.enabled: "
                                  "false)", "images.jetson", "engines.targets", source=self)
        return self

    def serving_options(self) -> ServingOptions:
        """What the release's serving files are written from: ``serving``, ``release.plain_onnx``
        and the GPU resource name of ``gpu.accelerator_type``."""
        return ServingOptions(**self.serving.model_dump(), plain_onnx=self.release.plain_onnx,
                              accelerator_type=self.gpu.accelerator_type)

    def for_local_run(self, spec_file: str | Path) -> RunSpec:
        """This spec as ``make run`` uses it: the dataset folder must exist (checked now, before
        the DAG starts, not by the first step) and steps are not retried — kfp.local runs each
        step once, as the README says; retrying a failure of local code only repeats it."""
        uri = self.dataset.uri
        if "://" not in uri and not Path(uri).is_dir():
            raise SpecError([f"spec error: {spec_file}: dataset.uri: {uri} — an existing dataset folder "
                             "(locally; e.g. run `make demo-data`)"])
        steps = Steps(**{name: getattr(self.steps, name).model_copy(update={"retries": 0})
                         for name in Steps.model_fields})
        return self.model_copy(update={"steps": steps})

    @field_validator("pipeline_root")
    @classmethod
    def _resolve_root(cls, value: str | None, info: ValidationInfo) -> str | None:
        return value if value is None else _resolve_unless_remote(value, info)

    @field_validator("path_map")
    @classmethod
    def _resolve_targets(cls, value: list[str], info: ValidationInfo) -> list[str]:
        """``OLD=NEW`` with NEW relative to this spec file (as every path in it)."""
        out = []
        for item in value:
            old, sep, new = item.partition("=")
            if not sep or not old.strip() or not new.strip():
                raise ValueError(f"'{item}' is not OLD_PREFIX=NEW_PREFIX")
            out.append(f"{old.strip()}={_resolve_unless_remote(new.strip(), info)}")
        return out


def _resolve_unless_remote(value: str, info: ValidationInfo) -> str:
    """URIs stay as written; a plain path resolves like any spec path (relative to the spec file)."""
    if "://" in value:
        return value
    ctx = (info.context or {}).get("paths")
    return ctx.resolve(value) if isinstance(ctx, PathContext) else value
