"""The BodyPoseNet DAG: data_version → dataset_convert → train → prune → retrain → export →
calibrate, with evaluate on the unpruned, pruned, retrained, ONNX fp32 and ONNX INT8 models (and
the retrained Keras model once more at the exported models' input size and padding mode, so the
export and INT8 losses read like with like) and inference with the retrained model; then the
promotion gate, the INT8 quality gate (INT8 engine targets are built only if INT8 AP >= fp32 AP -
``release.max_int8_ap_drop``), engine builds and the release.

``build_pipeline`` returns the ``@dsl.pipeline`` function for a run spec: images, GPU requests,
node pools, secrets, retries, timeouts and caching are compile-time choices taken from the spec;
the step specs, prune settings and data settings are run-time parameters (their defaults are the
spec's, so the compiled YAML can be run from the UI as is), and so are the typed run parameters
of ``bpnet.overrides`` (num_epoch, input size, min_ap ...), which the first step, resolve_specs,
lays over the specs every later step reads. The promotion gate, engine builds and releases slot
in after the evaluations.

Caching: every step's output is fully determined by its inputs once the raw data behind
``dataset_uri`` is identified. The first step after resolve_specs, data_version (never cached), returns the
``data_version`` parameter if set, else a fingerprint of the data's listing taken in the pod when
the run starts; dataset_convert has it as an input. The same data reuses a conversion (and, as
the artifacts are then the same, everything downstream); new data behind the same URI — what a
scheduled retraining run reads — is converted afresh and invalidates every later step.
"""

# No ``from __future__ import annotations`` here: kfp reads the pipeline's annotations as types.
import functools
import inspect
import json
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import yaml
from kfp import dsl, kubernetes
from kfp.dsl import HTML, Artifact, Dataset, Metrics, Model

from bpnet.deploy.platform import NODE_ENV
from bpnet.overrides import RunOverrides
from bpnet.release import KERAS_EXPORT, MODEL_LABELS, ONNX_FP32, ONNX_INT8, PROMOTE, PRUNED, RETRAINED, UNPRUNED
from bpnet.settings import NodePool, quantity_value
from components import component
from components.build_engine import build_engine
from components.calibrate import calibrate
from components.data_version import data_version as data_version_step
from components.dataset_convert import dataset_convert
from components.evaluate import evaluate
from components.export import export
from components.gate import gate, int8_gate
from components.inference import inference
from components.prune import prune
from components.publish import publish
from components.resolve_specs import resolve_specs
from components.retrain import retrain
from components.runtime import SPEC_PARAMETERS
from components.train import train
from pipelines.run_spec import RunSpec, StepSettings


class Outputs(NamedTuple):
    train_data: Dataset
    val_data: Dataset
    model: Model
    pruned_model: Model
    retrained_model: Model
    exported_model: Model
    int8_model: Model
    evaluation_unpruned: Artifact
    evaluation_pruned: Artifact
    evaluation: Artifact
    evaluation_keras_export: Artifact
    evaluation_fp32: Artifact
    evaluation_int8: Artifact
    metrics_unpruned: Metrics
    metrics_pruned: Metrics
    metrics: Metrics
    metrics_keras_export: Metrics
    metrics_fp32: Metrics
    metrics_int8: Metrics
    evaluation_report: HTML
    detections: Artifact
    inference_report: HTML
    ap: float
    promotion: str
    int8_verdict: str
    gpu_engine_targets: list  # the engine targets built if promoted: engine_targets' choice, minus INT8 on hold
    jetson_engine_targets: list


def _schedule(task: dsl.PipelineTask, name: str, step: StepSettings, spec: RunSpec) -> dsl.PipelineTask:
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
    return task


def _place(task: dsl.PipelineTask, pool: NodePool) -> None:
    for key, value in pool.node_selector.items():
        kubernetes.add_node_selector(task, label_key=key, label_value=value)
    for t in pool.tolerations:
        kubernetes.add_toleration(task, key=t.key, operator=t.operator, value=t.value, effect=t.effect)


def _schedule_engine(task: dsl.PipelineTask, pool: str, spec: RunSpec) -> None:
    """GPU targets: a GPU on the GPU pool. Jetson targets: the Jetson pool (arm64 + the admin's
    label and taint; the GPU Operator does not manage Jetson, so no accelerator is requested).
    $NODE_NAME is the node the pod runs on (the downward API's ``spec.nodeName``): the engine's
    build record names the node it was built on, not the pod (the hostname in a pod)."""
    step = spec.steps.build_engine
    _schedule(task, f"build_engine ({pool})", step.model_copy(update={"gpus": step.gpus if pool == "gpu" else 0}),
              spec)
    if pool == "jetson":
        _place(task, spec.gpu.jetson_pool)
    _with_model_key(task, spec)
    kubernetes.use_field_path_as_env(task, env_name=NODE_ENV, field_path="spec.nodeName")


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


def _one_line(value: Any) -> Any:
    """Spec text as one-line JSON (same content): kfp copies defaults into a comment header of the
    compiled YAML, and a multi-line default would break that file."""
    return json.dumps(yaml.safe_load(value)) if isinstance(value, str) and "\n" in value else value


def build_pipeline(spec: RunSpec, arguments: dict[str, Any]):
    """The pipeline function for ``spec``; ``arguments`` become the parameters' defaults."""
    image = spec.images.gpu
    version_op, convert_op = component(data_version_step, image), component(dataset_convert, image)
    train_op, prune_op, retrain_op = component(train, image), component(prune, image), component(retrain, image)
    evaluate_op, inference_op = component(evaluate, image), component(inference, image)
    export_op, calibrate_op = component(export, image), component(calibrate, image)
    gate_op, publish_op = component(gate, image), component(publish, image)
    int8_gate_op = component(int8_gate, image)
    resolve_op = component(resolve_specs, image)
    engines = spec.engines
    targets = engines.by_pool()
    engine_ops = {"gpu": component(build_engine, image),
                  "jetson": component(build_engine, spec.images.jetson or image)}
    warm_start = spec.release.root if spec.release.warm_start == "latest" else ""
    a = {name: _one_line(value) for name, value in arguments.items()}

    def bpnet_pipeline(dataset_uri: str = a["dataset_uri"], data_version: str = a["data_version"],
                       dataset_spec: str = a["dataset_spec"], train_spec: str = a["train_spec"],
                       pose_config: str = a["pose_config"], retrain_spec: str = a["retrain_spec"],
                       inference_spec: str = a["inference_spec"], prune_settings: str = a["prune_settings"],
                       export_settings: str = a["export_settings"],
                       generate_masks: bool = a["generate_masks"], num_shards: int = a["num_shards"],
                       report_images: int = a["report_images"], **overrides: Any) -> Outputs:
        resolved = resolve_op(train_spec=train_spec, retrain_spec=retrain_spec, inference_spec=inference_spec,
                              prune_settings=prune_settings, export_settings=export_settings,
                              spec_min_ap=spec.release.min_ap, gpu_targets=targets["gpu"],
                              jetson_targets=targets["jetson"], **overrides)
        _schedule(resolved, "resolve specs", spec.steps.resolve_specs, spec)
        # every later step reads the specs as resolved (the run parameters laid over them)
        train_spec, retrain_spec, inference_spec, prune_settings, export_settings, min_ap = (
            resolved.outputs[name] for name in (*SPEC_PARAMETERS, "min_ap"))

        version = version_op(dataset_uri=dataset_uri, requested=data_version).after(resolved)
        _schedule(version, "data_version", spec.steps.data_version, spec)
        _with_storage(version, spec)

        convert = convert_op(dataset_uri=dataset_uri, data_version=version.output, dataset_spec=dataset_spec,
                             generate_masks=generate_masks, num_shards=num_shards)
        _schedule(convert, "dataset_convert", spec.steps.dataset_convert, spec)
        _with_storage(convert, spec)
        train_data, val_data = convert.outputs["train_data"], convert.outputs["val_data"]

        trained = train_op(train_data=train_data, val_data=val_data, train_spec=train_spec,  # val: the curve's AP
                           pose_config=pose_config, gpus=spec.steps.train.gpus, warm_start=warm_start)
        _schedule(trained, "train", spec.steps.train, spec)
        _with_model_key(trained, spec)
        if warm_start:
            _with_storage(trained, spec)

        pruned = prune_op(model=trained.outputs["model"], prune_settings=prune_settings,
                          inference_spec=inference_spec)
        _schedule(pruned, "prune", spec.steps.prune, spec)
        _with_model_key(pruned, spec)

        retrained = retrain_op(train_data=train_data, val_data=val_data, pruned=pruned.outputs["pruned"],
                               retrain_spec=retrain_spec, pose_config=pose_config,
                               gpus=spec.steps.retrain.gpus)
        _schedule(retrained, "retrain", spec.steps.retrain, spec)
        _with_model_key(retrained, spec)

        exported = export_op(model=retrained.outputs["model"], export_settings=export_settings)
        _schedule(exported, "export", spec.steps.export, spec)
        _with_model_key(exported, spec)

        calibrated = calibrate_op(exported=exported.outputs["exported"], train_data=train_data,
                                  export_settings=export_settings)
        _schedule(calibrated, "calibrate", spec.steps.calibrate, spec)
        _with_model_key(calibrated, spec)

        scores = {}
        for label, (model, at_export) in zip(MODEL_LABELS, (
                (trained.outputs["model"], ""), (pruned.outputs["pruned"], ""), (retrained.outputs["model"], ""),
                (retrained.outputs["model"], export_settings),  # Keras at the exported input size: like with like
                (exported.outputs["exported"], ""), (calibrated.outputs["int8"], "")), strict=True):
            scores[label] = evaluate_op(val_data=val_data, model=model, inference_spec=inference_spec,
                                        report_images=report_images, label=label, export_settings=at_export)
            _schedule(scores[label], f"evaluate {label}", spec.steps.evaluate, spec)
            _with_model_key(scores[label], spec)

        detected = inference_op(val_data=val_data, model=retrained.outputs["model"], inference_spec=inference_spec,
                                report_images=report_images)
        _schedule(detected, "inference", spec.steps.inference, spec)
        _with_model_key(detected, spec)

        final = scores[RETRAINED]
        decision = gate_op(ap=final.outputs["Output"], min_ap=min_ap, release_root=spec.release.root)
        _schedule(decision, "promotion gate", spec.steps.promotion_gate, spec)
        _with_storage(decision, spec)
        quality = int8_gate_op(fp32_ap=scores[ONNX_FP32].outputs["Output"],
                               int8_ap=scores[ONNX_INT8].outputs["Output"], max_drop=spec.release.max_int8_ap_drop,
                               gpu_targets=resolved.outputs["gpu_targets"],
                               jetson_targets=resolved.outputs["jetson_targets"])
        _schedule(quality, "INT8 gate", spec.steps.int8_gate, spec)
        with dsl.If(decision.output == PROMOTE, name="promoted"):
            built = {}
            for pool, pool_targets in targets.items():
                if not pool_targets:
                    continue
                with dsl.ParallelFor(quality.outputs[f"{pool}_targets"], name=f"{pool}-engines") as target:
                    task = engine_ops[pool](exported=exported.outputs["exported"], int8=calibrated.outputs["int8"],
                                            target=target, workspace_bytes=engines.workspace_bytes)
                    _schedule_engine(task, pool, spec)
                built[f"{pool}_engines"] = dsl.Collected(task.outputs["engine"])
            published = publish_op(release_root=spec.release.root, trained=trained.outputs["model"],
                                   retrained=retrained.outputs["model"],
                                   exported=exported.outputs["exported"], int8=calibrated.outputs["int8"],
                                   metrics_unpruned=scores[UNPRUNED].outputs["metrics"],
                                   metrics_pruned=scores[PRUNED].outputs["metrics"], metrics=final.outputs["metrics"],
                                   metrics_keras_export=scores[KERAS_EXPORT].outputs["metrics"],
                                   metrics_fp32=scores[ONNX_FP32].outputs["metrics"],
                                   metrics_int8=scores[ONNX_INT8].outputs["metrics"], dataset_uri=dataset_uri,
                                   data_version=version.output, prune_settings=prune_settings,
                                   export_settings=export_settings, inference_spec=inference_spec,
                                   serving=spec.serving_options().model_dump_json(),
                                   int8_verdict=quality.outputs["verdict"], min_ap=min_ap, **built)
            _schedule(published, "publish", spec.steps.publish, spec)
            _with_storage(published, spec)
            _with_model_key(published, spec)  # the Triton ONNX model and configs are read from the exported model

        return Outputs(train_data=train_data, val_data=val_data, model=trained.outputs["model"],
                       pruned_model=pruned.outputs["pruned"], retrained_model=retrained.outputs["model"],
                       exported_model=exported.outputs["exported"], int8_model=calibrated.outputs["int8"],
                       evaluation_keras_export=scores[KERAS_EXPORT].outputs["results"],
                       metrics_keras_export=scores[KERAS_EXPORT].outputs["metrics"],
                       evaluation_fp32=scores[ONNX_FP32].outputs["results"],
                       evaluation_int8=scores[ONNX_INT8].outputs["results"],
                       metrics_fp32=scores[ONNX_FP32].outputs["metrics"],
                       metrics_int8=scores[ONNX_INT8].outputs["metrics"],
                       evaluation_unpruned=scores[UNPRUNED].outputs["results"],
                       evaluation_pruned=scores[PRUNED].outputs["results"], evaluation=final.outputs["results"],
                       metrics_unpruned=scores[UNPRUNED].outputs["metrics"],
                       metrics_pruned=scores[PRUNED].outputs["metrics"], metrics=final.outputs["metrics"],
                       evaluation_report=final.outputs["report"], detections=detected.outputs["detections"],
                       inference_report=detected.outputs["report"], ap=final.outputs["Output"],
                       promotion=decision.output, int8_verdict=quality.outputs["verdict"],
                       gpu_engine_targets=quality.outputs["gpu_targets"],
                       jetson_engine_targets=quality.outputs["jetson_targets"])

    return dsl.pipeline(name=spec.kfp.pipeline_name, pipeline_root=spec.pipeline_root,
                        description="BodyPoseNet: dataset_convert → train → prune → retrain → export → calibrate, "
                                    "evaluated at each stage")(_with_overrides(bpnet_pipeline, a))


def _with_overrides(pipeline: Callable[..., Outputs], defaults: dict[str, Any]) -> Callable[..., Outputs]:
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
    def with_overrides(*args: Any) -> Outputs:
        return pipeline(**dict(zip(names, args, strict=True)))

    with_overrides.__signature__ = inspect.signature(pipeline).replace(parameters=[*base, *extra])
    with_overrides.__doc__ = "Run parameters.\n\nArgs:\n" + "".join(
        f"    {name}: {field.description}\n" for name, field in fields.items())
    return with_overrides
