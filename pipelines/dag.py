"""The BodyPoseNet DAG: data_version → dataset_convert → train → prune → retrain → export →
calibrate (on the few images calibration_data fetches beside dataset_convert), an evaluation of
every model ``pipelines.outputs.EVALUATED`` declares and inference with the retrained model; then
the promotion gate, the INT8 quality gate (INT8 engine targets are built only if INT8 AP >= fp32
AP - ``release.max_int8_ap_drop``), engine builds and the release.

``build_pipeline`` returns the ``@dsl.pipeline`` function for a run spec: images, GPU requests,
node pools, secrets, retries, timeouts and caching are compile-time choices taken from the spec
(applied in one place, ``Steps``); the step specs, prune settings and data settings are run-time
parameters (their defaults are the spec's, so the compiled YAML can be run from the UI as is),
and so are the typed run parameters of ``bpnet.overrides`` (num_epoch, input size, min_ap ...).
The first step, resolve_specs, checks them against every spec before any work; each later step
takes its spec as the run holds it and lays the checked parameters over it itself.

Caching: every step's output is fully determined by its inputs once the raw data behind
``dataset_uri`` is identified. The first step after resolve_specs, data_version (never cached), returns the
``data_version`` parameter if set, else a fingerprint of the data's listing taken in the pod when
the run starts; dataset_convert (and calibration_data) have it as an input. The same data reuses a
conversion (and, as the artifacts are then the same, everything downstream); new data behind the
same URI — what a scheduled retraining run reads — is converted afresh and invalidates every later
step.
"""

# No ``from __future__ import annotations`` here: kfp reads the pipeline's annotations as types.
import functools
import inspect
import json
import math
from collections.abc import Callable
from typing import Any

import yaml
from kfp import dsl, kubernetes

from bpnet.deploy.platform import NODE_ENV
from bpnet.overrides import RunOverrides
from bpnet.release import PROMOTE
from bpnet.settings import NodePool, quantity_value
from components import component
from components.build_engine import build_engine
from components.calibrate import calibrate
from components.calibration_data import calibration_data
from components.data_version import data_version
from components.dataset_convert import dataset_convert
from components.evaluate import evaluate
from components.export import export
from components.gate import int8_gate, promotion_gate
from components.inference import inference
from components.prune import prune
from components.publish import publish_component
from components.resolve_specs import resolve_specs
from components.retrain import retrain
from components.train import train
from pipelines.outputs import (
    EVALUATED,
    GATED,
    GATED_OUTPUTS,
    ONNX_FP32,
    ONNX_INT8,
    STEP_OUTPUTS,
    Evaluated,
    outputs_type,
)
from pipelines.run_spec import RunSpec, StepSettings

STEP_COMPONENTS = {f.__name__: f for f in (resolve_specs, data_version, dataset_convert, calibration_data, train,
                                           prune, retrain, export, calibrate, evaluate, inference, promotion_gate,
                                           int8_gate, build_engine)}
"""The steps (named as the run spec's ``steps`` section names them) and their component functions;
publish's is made per pipeline (``components.publish.publish_component``)."""

STORAGE, MODEL_KEY, NODE_NAME = "storage", "model key", "node name"
ACCESS = {"data_version": {STORAGE}, "dataset_convert": {STORAGE}, "calibration_data": {STORAGE},
          "train": {MODEL_KEY}, "prune": {MODEL_KEY}, "retrain": {MODEL_KEY}, "export": {MODEL_KEY},
          "calibrate": {MODEL_KEY}, "evaluate": {MODEL_KEY},
          "inference": {MODEL_KEY}, "promotion_gate": {STORAGE}, "build_engine": {MODEL_KEY, NODE_NAME},
          "publish": {STORAGE, MODEL_KEY}}  # publish: the Triton model and configs come from the exported model
"""What a step's pod reads besides its inputs: MinIO (the data, the release root), the model key,
the node it runs on. Steps not listed read none of these."""


def _schedule(task: dsl.PipelineTask, name: str, step: StepSettings, spec: RunSpec) -> None:
    """Display name, caching, retries, timeout, resources; GPU request + pool when step.gpus > 0."""
    task.set_display_name(name)
    task.set_caching_options(step.caching)
    if step.retries:
        task.set_retry(step.retries, backoff_duration="30s", backoff_factor=2.0)
    kubernetes.set_timeout(task, step.timeout_seconds)
    if spec.run_as_user is not None:
        kubernetes.set_security_context(task, run_as_user=spec.run_as_user, run_as_non_root=True)
    if step.cpu:  # in millicores and bytes: kfp takes a subset of Kubernetes' quantities (no '1.5Gi', no 'k')
        task.set_cpu_request(f"{math.ceil(quantity_value(step.cpu) * 1000)}m")
    if step.memory:
        memory = str(math.ceil(quantity_value(step.memory)))
        task.set_memory_request(memory).set_memory_limit(memory)
    if step.gpus:
        task.set_accelerator_type(spec.gpu.accelerator_type).set_accelerator_limit(step.gpus)
        _place(task, spec.gpu.pool)


def _place(task: dsl.PipelineTask, pool: NodePool) -> None:
    for key, value in pool.node_selector.items():
        kubernetes.add_node_selector(task, label_key=key, label_value=value)
    for t in pool.tolerations:
        kubernetes.add_toleration(task, key=t.key, operator=t.operator, value=t.value, effect=t.effect)


def _with_storage(task: dsl.PipelineTask, spec: RunSpec) -> None:
    """MinIO endpoint as plain env, keys as references to the Kubernetes secret (never values)."""
    s = spec.storage
    if s.endpoint:
        task.set_env_variable("BPNET_S3_ENDPOINT", s.endpoint)
        task.set_env_variable("BPNET_S3_SECURE", "true" if s.secure else "false")
    kubernetes.use_secret_as_env(task, secret_name=s.credentials_secret,
                                 secret_key_to_env={s.access_key_field: "BPNET_S3_ACCESS_KEY",
                                                    s.secret_key_field: "BPNET_S3_SECRET_KEY"})


def _with_model_key(task: dsl.PipelineTask, spec: RunSpec) -> None:
    kubernetes.use_secret_as_env(task, secret_name=spec.storage.model_key_secret,
                                 secret_key_to_env={spec.storage.model_key_field: "BPNET_MODEL_KEY"})


class Steps:
    """Makes the DAG's tasks, each configured from the run spec in this one place: the step's
    image, scheduling (``steps.<step>``), secrets and environment (``ACCESS``). Jetson engine builds
    run the Jetson image on the Jetson pool (arm64 + the admin's label and taint; the GPU Operator
    does not manage Jetson, so no accelerator is requested). $NODE_NAME is the node the pod runs
    on (the downward API's ``spec.nodeName``): an engine's build record names the node it was built
    on, not the pod."""

    def __init__(self, spec: RunSpec, evaluated: tuple[Evaluated, ...]):
        self.spec, image = spec, spec.images.gpu
        self.ops = {step: component(func, image) for step, func in STEP_COMPONENTS.items()}
        self.ops["publish"] = component(publish_component({e.metrics: e.label for e in evaluated}), image)
        self.jetson_engine = component(build_engine, spec.images.jetson or image)
        self.warm_start = spec.release.root if spec.release.warm_start == "latest" else ""

    def __call__(self, step: str, name: str = "", jetson: bool = False, **arguments: Any) -> dsl.PipelineTask:
        spec = self.spec
        settings = getattr(spec.steps, step)
        workers = getattr(settings, "workers", 1)  # > 1: the step launches the training job and waits (no GPU)
        task = (self.jetson_engine if jetson else self.ops[step])(
            **arguments, **(_job_arguments(spec, step) if workers > 1 else {}))
        _schedule(task, name or step, settings.model_copy(update={"gpus": 0}) if jetson or workers > 1 else settings,
                  spec)
        if jetson:
            _place(task, spec.gpu.jetson_pool)
        access = ACCESS.get(step, set()) | ({STORAGE} if (step == "train" and self.warm_start) or workers > 1
                                             else set())
        if STORAGE in access:
            _with_storage(task, spec)
        if MODEL_KEY in access:
            _with_model_key(task, spec)
        if NODE_NAME in access:
            kubernetes.use_field_path_as_env(task, env_name=NODE_ENV, field_path="spec.nodeName")
        return task


def _job_arguments(spec: RunSpec, step: str) -> dict[str, Any]:
    """The launcher's arguments: the job template (engine, image, GPUs per worker, pool, the MinIO
    and model-key secrets by reference, timeout) and the placeholders that name the job."""
    from components.distributed import JobTemplate

    settings, s = getattr(spec.steps, step), spec.storage
    env = {"BPNET_S3_ENDPOINT": s.endpoint, "BPNET_S3_SECURE": "true" if s.secure else "false"} if s.endpoint else {}
    template = JobTemplate(
        engine=spec.distributed.engine, image=spec.images.gpu, workers=settings.workers,
        gpus_per_worker=settings.gpus, accelerator_type=spec.gpu.accelerator_type,
        pool=spec.gpu.pool.model_dump() if settings.gpus else {}, env=env,
        secret_env=[["BPNET_S3_ACCESS_KEY", s.credentials_secret, s.access_key_field],
                    ["BPNET_S3_SECRET_KEY", s.credentials_secret, s.secret_key_field],
                    ["BPNET_MODEL_KEY", s.model_key_secret, s.model_key_field]],
        run_as_user=spec.run_as_user, runtime=spec.distributed.runtime, namespace=spec.kfp.namespace or "",
        timeout_seconds=settings.timeout_seconds, poll_seconds=spec.distributed.poll_seconds)
    return {"workers": settings.workers, "job": template.to_json(), "run_id": dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            "task_name": dsl.PIPELINE_TASK_NAME_PLACEHOLDER}


def _one_line(value: Any) -> Any:
    """Spec text as one-line JSON (same content): kfp copies defaults into a comment header of the
    compiled YAML, and a multi-line default would break that file."""
    return json.dumps(yaml.safe_load(value)) if isinstance(value, str) and "\n" in value else value


def build_pipeline(spec: RunSpec, arguments: dict[str, Any], evaluated: tuple[Evaluated, ...] = EVALUATED):
    """The pipeline function for ``spec``; ``arguments`` become the parameters' defaults;
    ``evaluated`` are the models it evaluates (``pipelines.outputs``)."""
    run = Steps(spec, evaluated)
    targets = spec.engines.by_pool()
    a = {name: _one_line(value) for name, value in arguments.items()}
    outputs = outputs_type(evaluated)

    def bpnet_pipeline(dataset_uri: str = a["dataset_uri"], data_version: str = a["data_version"],
                       dataset_spec: str = a["dataset_spec"], train_spec: str = a["train_spec"],
                       pose_config: str = a["pose_config"], retrain_spec: str = a["retrain_spec"],
                       inference_spec: str = a["inference_spec"], prune_settings: str = a["prune_settings"],
                       export_settings: str = a["export_settings"],
                       generate_masks: bool = a["generate_masks"], num_shards: int = a["num_shards"],
                       report_images: int = a["report_images"], **overrides: Any) -> outputs:
        resolved = run("resolve_specs", "resolve specs", train_spec=train_spec, retrain_spec=retrain_spec,
                       inference_spec=inference_spec, prune_settings=prune_settings, export_settings=export_settings,
                       spec_min_ap=spec.release.min_ap, target_names=[t["name"] for ts in targets.values() for t in ts],
                       **overrides)
        # every later step lays the checked run parameters over the spec it reads
        ran, min_ap = resolved.outputs["overrides"], resolved.outputs["min_ap"]

        version = run("data_version", dataset_uri=dataset_uri, requested=data_version).after(resolved)
        convert = run("dataset_convert", dataset_uri=dataset_uri, data_version=version.output,
                      dataset_spec=dataset_spec, generate_masks=generate_masks, num_shards=num_shards)
        train_data, val_data = convert.outputs["train_data"], convert.outputs["val_data"]
        cal_images = run("calibration_data", "calibration data", dataset_uri=dataset_uri,
                         data_version=version.output, dataset_spec=dataset_spec, export_settings=export_settings,
                         overrides=ran)
        trained = run("train", train_data=train_data, val_data=val_data, train_spec=train_spec,  # val: curve's AP
                      pose_config=pose_config, gpus=spec.steps.train.gpus, overrides=ran, warm_start=run.warm_start)
        pruned = run("prune", model=trained.outputs["model"], prune_settings=prune_settings,
                     inference_spec=inference_spec, overrides=ran)
        retrained = run("retrain", train_data=train_data, val_data=val_data, pruned=pruned.outputs["pruned"],
                        retrain_spec=retrain_spec, pose_config=pose_config, gpus=spec.steps.retrain.gpus,
                        overrides=ran)
        exported = run("export", model=retrained.outputs["model"], export_settings=export_settings, overrides=ran)
        calibrated = run("calibrate", exported=exported.outputs["exported"],
                         calibration_images=cal_images.outputs["calibration_images"],
                         export_settings=export_settings, overrides=ran)
        tasks = {"dataset_convert": convert, "calibration_data": cal_images, "train": trained, "prune": pruned,
                 "retrain": retrained, "export": exported, "calibrate": calibrated}
        out = {o.name: tasks[o.step].outputs[o.key] for o in STEP_OUTPUTS if o.step in tasks}

        scores = {e.label: run("evaluate", f"evaluate {e.label}", val_data=val_data, model=out[e.model],
                               inference_spec=inference_spec, report_images=report_images, overrides=ran,
                               label=e.label, export_settings=export_settings if e.mode == "export" else "")
                  for e in evaluated}
        tasks["inference"] = run("inference", val_data=val_data, model=out["retrained_model"],
                                 inference_spec=inference_spec, report_images=report_images, overrides=ran)
        tasks["promotion_gate"] = decision = run(
            "promotion_gate", "promotion gate", ap=scores[GATED].outputs["Output"], min_ap=min_ap,
            release_root=spec.release.root)
        tasks["int8_gate"] = quality = run(
            "int8_gate", "INT8 gate", fp32_ap=scores[ONNX_FP32].outputs["Output"],
            int8_ap=scores[ONNX_INT8].outputs["Output"], max_drop=spec.release.max_int8_ap_drop,
            gpu_targets=targets["gpu"], jetson_targets=targets["jetson"], chosen=resolved.outputs["engine_targets"])
        out.update({o.name: tasks[o.step].outputs[o.key] for o in STEP_OUTPUTS})
        for e in evaluated:
            out.update({e.results: scores[e.label].outputs["results"], e.metrics: scores[e.label].outputs["metrics"]})
        out.update({name: scores[GATED].outputs[key] for name, key, _ in GATED_OUTPUTS})

        with dsl.If(decision.output == PROMOTE, name="promoted"):
            built = {}
            for pool, pool_targets in targets.items():
                if not pool_targets:
                    continue
                with dsl.ParallelFor(quality.outputs[f"{pool}_targets"], name=f"{pool}-engines") as target:
                    task = run("build_engine", f"build_engine ({pool})", jetson=pool == "jetson",
                               exported=out["exported_model"], int8=out["int8_model"], target=target,
                               workspace_bytes=spec.engines.workspace_bytes)
                built[f"{pool}_engines"] = dsl.Collected(task.outputs["engine"])
            run("publish", release_root=spec.release.root, trained=out["model"], retrained=out["retrained_model"],
                exported=out["exported_model"], int8=out["int8_model"], dataset_uri=dataset_uri,
                data_version=version.output, prune_settings=prune_settings, export_settings=export_settings,
                inference_spec=inference_spec, serving=spec.serving_options().model_dump_json(),
                int8_verdict=quality.outputs["verdict"], min_ap=min_ap, overrides=ran,
                **{e.metrics: out[e.metrics] for e in evaluated}, **built)

        return outputs(**out)

    return dsl.pipeline(name=spec.kfp.pipeline_name, pipeline_root=spec.pipeline_root,
                        description="BodyPoseNet: dataset_convert → train → prune → retrain → export → calibrate, "
                                    "evaluated at each stage")(_with_overrides(bpnet_pipeline, a))


def _with_overrides(pipeline: Callable[..., tuple], defaults: dict[str, Any]) -> Callable[..., tuple]:
    """``pipeline`` with the typed run parameters (``RunOverrides``' fields: their names, types and
    descriptions, ``defaults`` as their defaults) as parameters of its own, after the spec ones.
    kfp reads a pipeline's parameters from its signature and their descriptions from its
    docstring's Args, and passes them positionally; ``pipeline`` takes them as ``**overrides``."""
    base = [p for p in inspect.signature(pipeline).parameters.values() if p.kind is not p.VAR_KEYWORD]
    fields = RunOverrides.model_fields
    extra = [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=defaults[name],
                               annotation=field.annotation) for name, field in fields.items()]
    names = [p.name for p in (*base, *extra)]

    @functools.wraps(pipeline)
    def with_overrides(*args: Any) -> tuple:
        return pipeline(**dict(zip(names, args, strict=True)))

    with_overrides.__signature__ = inspect.signature(pipeline).replace(parameters=[*base, *extra])
    with_overrides.__doc__ = "Run parameters.\n\nArgs:\n" + "".join(
        f"    {name}: {field.description}\n" for name, field in fields.items())
    return with_overrides
