"""The BodyPoseNet DAG: dataset_convert → train → evaluate ∥ inference.

``build_pipeline`` returns the ``@dsl.pipeline`` function for a run spec: images, GPU requests,
node pools, secrets, retries, timeouts and caching are compile-time choices taken from the spec;
the step specs and data settings are run-time parameters (their defaults are the spec's, so the
compiled YAML can be run from the UI as is). Later steps (prune, retrain, export, calibrate,
engine builds) slot in between train and evaluate and after it.

Caching: every step's output is fully determined by its inputs, *provided* the raw data behind
``dataset_uri`` is identified: ``data_version`` (a fingerprint of the data's listing by default)
is an input of dataset_convert, and a scheduled pipeline feeds it the schedule time instead, so
a recurring run never reuses a conversion of older data. New dataset artifacts in turn change
the cache keys of every step downstream.
"""

# No ``from __future__ import annotations`` here: kfp reads the pipeline's annotations as types.
import json
from typing import Any, NamedTuple

import yaml
from kfp import dsl, kubernetes
from kfp.dsl import HTML, Artifact, Dataset, Metrics, Model

from components import component
from components.dataset_convert import dataset_convert
from components.evaluate import evaluate
from components.inference import inference
from components.train import train
from pipelines.run_spec import NodePool, RunSpec, StepSettings


class Outputs(NamedTuple):
    dataset: Dataset
    model: Model
    evaluation: Artifact
    metrics: Metrics
    evaluation_report: HTML
    detections: Artifact
    inference_report: HTML
    ap: float


def _schedule(task: dsl.PipelineTask, name: str, step: StepSettings, spec: RunSpec) -> dsl.PipelineTask:
    """Display name, caching, retries, timeout, resources; GPU request + pool when step.gpus > 0."""
    task.set_display_name(name)
    task.set_caching_options(step.caching)
    if step.retries:
        task.set_retry(step.retries, backoff_duration="30s", backoff_factor=2.0)
    kubernetes.set_timeout(task, step.timeout_seconds)
    kubernetes.set_security_context(task, run_as_non_root=True)
    if step.cpu:
        task.set_cpu_request(step.cpu)
    if step.memory:
        task.set_memory_request(step.memory).set_memory_limit(step.memory)
    if step.gpus:
        task.set_accelerator_type(spec.gpu.accelerator_type).set_accelerator_limit(step.gpus)
        _place(task, spec.gpu.pool)
    return task


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


def _one_line(value: Any) -> Any:
    """Spec text as one-line JSON (same content): kfp copies defaults into a comment header of the
    compiled YAML, and a multi-line default would break that file."""
    return json.dumps(yaml.safe_load(value)) if isinstance(value, str) and "\n" in value else value


def build_pipeline(spec: RunSpec, arguments: dict[str, Any], scheduled: bool = False):
    """The pipeline function for ``spec``; ``arguments`` become the parameters' defaults."""
    image = spec.images.gpu
    convert_op, train_op = component(dataset_convert, image), component(train, image)
    evaluate_op, inference_op = component(evaluate, image), component(inference, image)
    a = {name: _one_line(value) for name, value in arguments.items()}

    @dsl.pipeline(name=spec.kfp.pipeline_name, pipeline_root=spec.pipeline_root,
                  description="BodyPoseNet: dataset_convert → train → evaluate ∥ inference")
    def bpnet_pipeline(dataset_uri: str = a["dataset_uri"], data_version: str = a["data_version"],
                       dataset_spec: str = a["dataset_spec"], train_spec: str = a["train_spec"],
                       pose_config: str = a["pose_config"], inference_spec: str = a["inference_spec"],
                       generate_masks: bool = a["generate_masks"], num_shards: int = a["num_shards"],
                       report_images: int = a["report_images"]) -> Outputs:
        version = dsl.PIPELINE_JOB_SCHEDULE_TIME_UTC_PLACEHOLDER if scheduled else data_version
        convert = convert_op(dataset_uri=dataset_uri, data_version=version, dataset_spec=dataset_spec,
                             generate_masks=generate_masks, num_shards=num_shards)
        _schedule(convert, "dataset_convert", spec.steps.dataset_convert, spec)
        _with_storage(convert, spec)

        trained = train_op(dataset=convert.outputs["dataset"], train_spec=train_spec, pose_config=pose_config,
                           gpus=max(1, spec.steps.train.gpus))
        _schedule(trained, "train", spec.steps.train, spec)
        _with_model_key(trained, spec)

        scored = evaluate_op(dataset=convert.outputs["dataset"], model=trained.outputs["model"],
                             inference_spec=inference_spec, report_images=report_images)
        _schedule(scored, "evaluate", spec.steps.evaluate, spec)
        _with_model_key(scored, spec)

        detected = inference_op(dataset=convert.outputs["dataset"], model=trained.outputs["model"],
                                inference_spec=inference_spec, report_images=report_images)
        _schedule(detected, "inference", spec.steps.inference, spec)
        _with_model_key(detected, spec)

        return Outputs(dataset=convert.outputs["dataset"], model=trained.outputs["model"],
                       evaluation=scored.outputs["results"], metrics=scored.outputs["metrics"],
                       evaluation_report=scored.outputs["report"], detections=detected.outputs["detections"],
                       inference_report=detected.outputs["report"], ap=scored.outputs["Output"])

    return bpnet_pipeline
