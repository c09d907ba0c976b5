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
    EngineSettings,
    EngineTarget,
    ExportCalibrationSettings,
    MemoryQuantity,
    NodePool,
    PromotionSettings,
    PruneSettings,
    ReleaseServing,
    ServingSettings,
    Toleration,
    gpu_pool,
)
from bpnet.specs.base import CrossFieldError, PathContext, SpecModel, SpecPath
from bpnet.specs.loader import SpecError
from pipelines.cron import to_kfp_cron


class KfpSettings(SpecModel):
    """The Kubeflow Pipelines endpoint; unset ``host`` falls back to $KF_PIPELINES_ENDPOINT."""

    host: str | None = Field(None, description="KFP API endpoint; unset: $KF_PIPELINES_ENDPOINT")
    namespace: str | None = Field(None, description="profile namespace on multi-user clusters")
    experiment: str = Field("bpnet", min_length=1, description="the experiment runs are made in")
    pipeline_name: str = Field("bpnet", min_length=1, pattern=r"^[a-z0-9][a-z0-9-]*$",
                               description="the pipeline's name (a new version per upload)")


class Images(SpecModel):
    """Container images (pinned tags). ``gpu`` runs every x86_64 step, on GPU nodes or not."""

    gpu: str = Field(min_length=1, description="x86_64 image every step runs (GPU nodes or not)")
    jetson: str | None = Field(None, description="arm64 image for Jetson engine builds")


def _jetson_pool() -> NodePool:
    return NodePool(node_selector={"kubernetes.io/arch": "arm64"},
                    tolerations=[Toleration(key="nvidia.com/jetson")])


class GpuSettings(SpecModel):
    """Where GPU steps and Jetson engine builds run. KFP adds no node selector by itself: put the
    GPU pool's labels in ``pool.node_selector``; Jetson nodes carry a label and taint the cluster
    admin applies (the GPU Operator does not manage Jetson)."""

    accelerator_type: str = ReleaseServing.model_fields["accelerator_type"]
    pool: NodePool = Field(default_factory=gpu_pool, description="GPU steps' pool (default: tolerate the GPU "
                           "Operator's nvidia.com/gpu taint, no selector)")
    jetson_pool: NodePool = Field(default_factory=_jetson_pool, description="Jetson engine builds' pool (default: "
                                  "kubernetes.io/arch arm64 and a nvidia.com/jetson toleration)")


class StepSettings(SpecModel):
    """Per-step scheduling: GPUs (0 = CPU node), retries, timeout, caching, resource requests."""

    gpus: int = Field(0, ge=0, le=16, description="GPUs requested (0: a CPU node); train's and retrain's also "
                      "their --gpus")
    retries: int = Field(1, ge=0, le=10, description="retries, 30 s backoff doubling")
    timeout_seconds: int = Field(4 * 3600, ge=60, le=30 * 86400, description="the pod's deadline")
    caching: bool = Field(True, description="KFP caching of the step's outputs")
    cpu: CpuQuantity | None = Field(None, description="CPU request, a Kubernetes quantity ('4', '.5', '500m'); "
                                    "passed to kfp in millicores")
    memory: MemoryQuantity | None = Field(None, description="memory request and limit ('16Gi', '1.5Gi'); passed "
                                          "to kfp in bytes")


class TrainStepSettings(StepSettings):
    """train/retrain: ``workers`` > 1 trains on that many pods (``gpus`` each) through the
    ``distributed`` engine; the step itself is then the launcher (no GPU)."""

    workers: int = Field(1, ge=1, le=256, description="training pods (1: train inside the step's own pod)")


class DistributedSettings(SpecModel):
    """The engine of multi-worker training (docs/pipeline.md: installing each)."""

    engine: Literal["trainjob", "tfjob"] = Field("trainjob", description="trainjob: Kubeflow Trainer v2 with the "
                                                 "project's ClusterTrainingRuntime; tfjob: Training Operator v1")
    runtime: str = Field("bpnet-tensorflow", pattern=r"^[a-z0-9][a-z0-9-]*$",
                         description="name of the ClusterTrainingRuntime (python -m pipelines manifests)")
    service_account: str = Field("pipeline-runner", min_length=1, description="the pipeline pods' service account "
                                 "(the launcher's Role is bound to it; multi-user Kubeflow: default-editor)")
    poll_seconds: float = Field(15.0, ge=1, le=600, description="how often the launcher reads the job's status")


class Steps(SpecModel):
    """Scheduling per step (retries back off 30 s, doubling); ``evaluate`` applies to every evaluation
    (``pipelines/outputs.py`` ``EVALUATED``). Kubernetes settings do not apply to ``make run``."""

    resolve_specs: StepSettings = Field(
        default_factory=lambda: StepSettings(retries=0, timeout_seconds=600),
        description="the run's typed parameters laid over its specs and checked, before any other step")
    data_version: StepSettings = Field(
        default_factory=lambda: StepSettings(retries=2, timeout_seconds=600, caching=False),
        description="the first step after resolve_specs: fingerprints the dataset URI (never cached: it "
                    "detects new data)")
    dataset_convert: StepSettings = Field(default_factory=lambda: StepSettings(retries=2),
                                          description="fetches the raw data, converts both splits")
    calibration_data: StepSettings = Field(
        default_factory=lambda: StepSettings(retries=2, timeout_seconds=3600),
        description="fetches only the train images INT8 calibration reads (cal_batches x cal_batch_size)")
    train: TrainStepSettings = Field(
        default_factory=lambda: TrainStepSettings(gpus=1, retries=1, timeout_seconds=3 * 86400),
        description="trains the unpruned model")
    prune: StepSettings = Field(default_factory=lambda: StepSettings(retries=2, timeout_seconds=3600),
                                description="removes filters")
    retrain: TrainStepSettings = Field(
        default_factory=lambda: TrainStepSettings(gpus=1, retries=1, timeout_seconds=3 * 86400),
        description="retrains the pruned model")
    export: StepSettings = Field(default_factory=lambda: StepSettings(retries=2, timeout_seconds=3600),
                                 description="exports the retrained model (ONNX, standard and SDK-compatible)")
    publish: StepSettings = Field(default_factory=lambda: StepSettings(retries=2, timeout_seconds=7200, caching=False),
                                  description="publishes the release and moves latest.json (never cached)")
    build_engine: StepSettings = Field(default_factory=lambda: StepSettings(gpus=1, retries=1, timeout_seconds=7200),
                                       description="one TensorRT engine per target (Jetson targets request no GPU "
                                       "resource)")
    calibrate: StepSettings = Field(default_factory=lambda: StepSettings(retries=2),
                                    description="INT8 calibration of the export")
    evaluate: StepSettings = Field(default_factory=lambda: StepSettings(gpus=1, retries=2),
                                   description="every evaluation (pipelines/outputs.py EVALUATED)")
    promotion_gate: StepSettings = Field(
        default_factory=lambda: StepSettings(retries=2, timeout_seconds=600, caching=False),
        description="compares the retrained model's AP with the gate and the latest release (never cached)")
    int8_gate: StepSettings = Field(
        default_factory=lambda: StepSettings(retries=0, timeout_seconds=600, caching=False),
        description="keeps the INT8 engine targets only if INT8 AP >= fp32 AP - release.max_int8_ap_drop "
                    "(never cached; not retried: the same figures give the same verdict)")
    inference: StepSettings = Field(default_factory=lambda: StepSettings(gpus=1, retries=2),
                                    description="inference with drawings on the val images")


def _default_targets() -> list[EngineTarget]:
    return [EngineTarget(name=f"{pool}-{p}", pool=pool, precision=p) for pool in ("gpu", "jetson")
            for p in ("fp16", "int8")]


class EngineBuilds(SpecModel):
    """Engine builds after the gate (only promoted models), fanned out with dsl.ParallelFor: GPU
    targets on the GPU pool with the GPU image, Jetson targets on the Jetson pool with its image.
    Off locally: kfp.local has no TensorRT and no GPU."""

    enabled: bool = Field(True, description="build engines of promoted models (false locally: kfp.local has no "
                          "TensorRT)")
    workspace_bytes: int = EngineSettings.model_fields["max_workspace_size"]
    targets: list[EngineTarget] = Field(default_factory=_default_targets, max_length=64,
                                        description="the engines to build (default: fp16 and int8 on both pools); "
                                        "Jetson targets need images.jetson")

    def by_pool(self) -> dict[str, list[dict]]:
        """The targets to build, per pool (none when off), as the build step takes them: each
        EngineTarget as JSON, its fields unrenamed, an unset one (dla_core) left out: a KFP
        constant cannot hold a null."""
        return {pool: [t.model_dump(mode="json", exclude_none=True) for t in self.targets if t.pool == pool]
                if self.enabled else []
                for pool in ("gpu", "jetson")}


class ReleaseSettings(SpecModel):
    """Where promoted models are published, the gate's minimum, and warm starts."""

    root: str = Field(min_length=1, description="s3://bucket/prefix or a folder: <root>/<id>/, <root>/latest.json")
    min_ap: float = PromotionSettings.model_fields["min_ap"]
    warm_start: Literal["none", "latest"] = Field("none", description="latest: train starts from the latest release")
    max_int8_ap_drop: float = Field(0.02, ge=-1.0, le=1.0, description="INT8 engines only if INT8 AP >= fp32 AP - "
                                    "this (negative: INT8 must beat fp32 by that much)")
    plain_onnx: bool = ReleaseServing.model_fields["plain_onnx"]

    @field_validator("root")
    @classmethod
    def _resolve_local(cls, value: str, info: ValidationInfo) -> str:
        return _resolve_unless_remote(value, info)


class StorageSettings(SpecModel):
    """MinIO/S3 for the dataset URI (and releases later). Keys come from ``credentials_secret``."""

    endpoint: str | None = Field(None, description="host:port or URL; unset = take $BPNET_S3_ENDPOINT as is")
    secure: bool = Field(False, description="TLS to the endpoint")
    credentials_secret: str = Field("mlpipeline-minio-artifact", description="Kubernetes secret with the MinIO keys")
    access_key_field: str = Field("accesskey", description="its key holding the access key")
    secret_key_field: str = Field("secretkey", description="its key holding the secret key")
    model_key_secret: str = Field("bpnet-model-key", description="Kubernetes secret with the model key")
    model_key_field: str = Field("key", description="its key holding the model key")


class DatasetSource(SpecModel):
    """The raw dataset a run converts, and its cache key."""

    uri: str = Field(min_length=1, description="s3://bucket/prefix of a COCO dataset, or a folder")
    version: str = Field("", description="cache key of the data; empty = the data_version step fingerprints the "
                         "listing (names, sizes, etags) when the run starts")
    # masks on: the pipeline trains, and unmasked crowds would teach the model that unlabeled people are background
    generate_masks: bool = FieldInfo.merge_field_infos(ConvertSettings.model_fields["generate_masks"], default=True)
    num_shards: int = ConvertSettings.model_fields["num_shards"]

    @field_validator("uri")
    @classmethod
    def _resolve_local(cls, value: str, info: ValidationInfo) -> str:
        return _resolve_unless_remote(value, info)


class StepSpecs(SpecModel):
    """The TLT-format specs of the steps, inlined as pipeline parameters when a run is made."""

    dataset: SpecPath = Field(description="dataset spec (JSON); its root becomes the fetched copy of dataset.uri")
    train: SpecPath = Field(description="train spec; its data paths are bound to the converted dataset")
    retrain: SpecPath = Field(description="train spec of the retrain; pretrained_weights/load_graph are bound")
    inference: SpecPath = Field(description="inference spec of the evaluations and inference; model_path and "
                                "train_spec are bound to each model")
    pose_config: SpecPath | None = Field(
        None, description="the pose config train and retrain use (docs/skeletons.md); unset: the one the train "
                          "spec's pose_config_path names")


class Schedule(SpecModel):
    """A recurring run (``make pipeline-schedule``); ``cron`` takes 5 or 6 fields."""

    cron: str = Field(description="5 fields ('0 2 * * *') or KFP's 6 (seconds first); descriptors like @daily")
    name: str = Field("bpnet-scheduled", min_length=1, description="the recurring run's name")
    max_concurrency: int = Field(1, ge=1, le=10, description="runs at a time")
    catchup: bool = Field(False, description="catch up missed runs")

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
    distributed: DistributedSettings = Field(default_factory=DistributedSettings)
    prune: PruneSettings = Field(default_factory=PruneSettings)
    export: ExportCalibrationSettings = Field(default_factory=ExportCalibrationSettings)
    release: ReleaseSettings
    serving: ServingSettings = Field(default_factory=ServingSettings)
    engines: EngineBuilds = Field(default_factory=EngineBuilds)
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

    @model_validator(mode="after")
    def _shards_per_worker(self) -> RunSpec:
        """Each worker of a multi-worker train/retrain reads whole record shards of its own
        (bpnet.data.partition): the shard count must divide among the workers (checked again
        by the launcher, before any job, against the shards the run actually converted)."""
        for step in ("train", "retrain"):
            workers = getattr(self.steps, step).workers
            if self.dataset.num_shards % workers:
                raise CrossFieldError(f"steps.{step}.workers is {workers}: each worker reads whole record shards of "
                                      f"its own, so num_shards must be a multiple of {workers}", "dataset.num_shards",
                                      f"steps.{step}.workers", source=self)
        return self

    def serving_options(self) -> ReleaseServing:
        """What the release's serving files are written from: ``serving``, ``release.plain_onnx``
        and the GPU resource name of ``gpu.accelerator_type``."""
        return ReleaseServing(**self.serving.model_dump(), plain_onnx=self.release.plain_onnx,
                              accelerator_type=self.gpu.accelerator_type)

    def for_local_run(self, spec_file: str | Path) -> RunSpec:
        """This spec as ``make run`` uses it: the dataset folder must exist (checked now, before
        the DAG starts, not by the first step) and steps are not retried — kfp.local runs each
        step once, as the README says; retrying a failure of local code only repeats it. Training
        runs in one process (kfp.local has no cluster to start workers on)."""
        uri = self.dataset.uri
        if "://" not in uri and not Path(uri).is_dir():
            raise SpecError([f"spec error: {spec_file}: dataset.uri: {uri} — an existing dataset folder "
                             "(locally; e.g. run `make demo-data`)"])
        steps = Steps(**{name: getattr(self.steps, name).model_copy(
            update={"retries": 0, **({"workers": 1} if isinstance(getattr(self.steps, name), TrainStepSettings)
                                      else {})}) for name in Steps.model_fields})
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
