"""``make run``: the whole DAG on this machine through kfp.local, then a summary of what it made.

kfp.local's SubprocessRunner executes each lightweight component as a subprocess of this Python
environment (``use_venv=False``: bpnet is already installed here), in dependency order, writing
artifacts under the run spec's ``pipeline_root``. Kubernetes-side settings are ignored locally.
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from pathlib import Path
from typing import Any

from pipelines.arguments import load_run_spec, pipeline_arguments
from pipelines.dag import build_pipeline

log = logging.getLogger(__name__)

STEPS = (  # step, its main output, the metadata worth a column
    ("dataset_convert", "train_data", ("train_samples", "val_images")),
    ("train", "model", ("epochs", "last_loss", "images_per_second")),
    ("evaluate unpruned", "evaluation_unpruned", ("AP",)),
    ("prune", "pruned_model", ("parameters_kept",)),
    ("evaluate pruned", "evaluation_pruned", ("AP",)),
    ("retrain", "retrained_model", ("epochs", "last_loss", "images_per_second")),
    ("evaluate retrained", "evaluation", ("AP",)),
    ("evaluate Keras (export mode)", "evaluation_keras_export", ("AP",)),
    ("export", "exported_model", ("input_shape", "bytes")),
    ("evaluate ONNX fp32", "evaluation_fp32", ("AP",)),
    ("calibrate", "int8_model", ("cal_images", "calibrated_tensors")),
    ("evaluate ONNX INT8", "evaluation_int8", ("AP",)),
    ("inference", "detections", ("images", "people")),
)
MODELS = (("unpruned", "model", "metrics_unpruned"), ("pruned", "pruned_model", "metrics_pruned"),
          ("retrained", "retrained_model", "metrics"),
          ("Keras (export mode)", "retrained_model", "metrics_keras_export"),
          ("ONNX fp32", "exported_model", "metrics_fp32"),
          ("ONNX INT8", "int8_model", "metrics_int8"))


def run_local(spec_path: str | Path) -> dict[str, Any]:
    """Run the pipeline locally; return (and write beside the run) the summary."""
    from kfp import local

    spec = load_run_spec(spec_path)
    if not os.environ.get("BPNET_MODEL_KEY"):
        raise ValueError("BPNET_MODEL_KEY is not set: the model key is taken from the environment only")
    arguments = pipeline_arguments(spec)
    pipeline = build_pipeline(spec, arguments)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=spec.pipeline_root)
    start = time.perf_counter()
    with warnings.catch_warnings():
        # kfp warns when an image name lacks "python"; locally the image is not used at all.
        warnings.filterwarnings("ignore", message=".*non-Python base image.*", category=RuntimeWarning)
        # ... and that Kubernetes-side settings (display names included) do nothing locally: documented.
        warnings.filterwarnings("ignore", message=".*have no effect in the current local runner.*")
        task = pipeline()
    summary = summarize(task.outputs, time.perf_counter() - start)
    from bpnet.release import read_latest

    summary["promotion"] = task.outputs["promotion"]
    summary["int8"] = task.outputs["int8_verdict"]
    summary["same_mode"] = same_mode(summary["models"], spec.export.input_shape)
    latest = read_latest(spec.release.root) if summary["promotion"] == "promote" else None
    summary["release"] = latest["release"] if latest else None
    summary["release_uri"] = latest["uri"] if latest else None
    summary["engines"] = ("built: " + ", ".join(t.name for t in spec.engines.targets)) if spec.engines.enabled else \
        "not built: engines.enabled is false (kfp.local has no TensorRT or GPU; they build on the cluster)"
    run_dir = Path(task.outputs["model"].uri).parents[1]  # <root>/<run>/<task>/<output>
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    summary["run_dir"] = str(run_dir)
    return summary


def summarize(outputs: dict[str, Any], seconds: float) -> dict[str, Any]:
    """Per step: time, figures and where its artifacts are; the evaluation's metrics."""
    steps = []
    for name, key, fields in STEPS:
        artifact = outputs[key]
        steps.append({"step": name, "seconds": artifact.metadata.get("seconds"), "output": artifact.uri,
                      **{f: artifact.metadata[f] for f in fields if f in artifact.metadata}})
    pruned = outputs["pruned_model"].metadata
    models = []
    for name, model, metrics in MODELS:
        flops = pruned.get("gflops_before") if name == "unpruned" else pruned.get("gflops")
        parameters = outputs[model].metadata.get("parameters", outputs["retrained_model"].metadata.get("parameters"))
        models.append({"model": name, "parameters": parameters,
                       f"gflops_at_{pruned.get('flops_input_shape', '?')}": flops,
                       **{k: outputs[metrics].metadata.get(k) for k in ("AP", "AP50")}, "file": outputs[model].uri})
    return {"seconds": round(seconds, 1), "steps": steps, "models": models,
            "metrics": dict(outputs["metrics"].metadata),
            "reports": {"evaluation": outputs["evaluation_report"].uri,
                        "inference": outputs["inference_report"].uri}}


def same_mode(models: list[dict[str, Any]], input_shape: tuple[int, int]) -> dict[str, Any]:
    """Keras, ONNX fp32 and INT8 AP at the exported models' input size and padding mode: the
    export loss and the INT8 drop, like with like."""
    ap = {m["model"]: m["AP"] for m in models}
    keras, fp32, int8 = ap["Keras (export mode)"], ap["ONNX fp32"], ap["ONNX INT8"]
    return {"mode": f"pad_image_input {input_shape[0]}x{input_shape[1]}", "Keras": keras, "ONNX fp32": fp32,
            "ONNX INT8": int8, "export_loss": None if None in (keras, fp32) else round(keras - fp32, 4),
            "int8_drop": None if None in (fp32, int8) else round(fp32 - int8, 4)}


METRIC_ORDER = ("AP", "AP50", "AP75", "AP_medium", "AP_large", "AR")


def _figure(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():  # KFP metadata stores every number as a float
        value = int(value)
    return f"{value:,}" if isinstance(value, int) else f"{value:.4g}" if isinstance(value, float) else str(value)


def _short(path: str) -> str:
    """A path relative to the working directory when it is below it (as make run prints them)."""
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return path


def format_summary(summary: dict[str, Any]) -> str:
    metrics = summary["metrics"]
    lines = [f"{'step':<18}{'seconds':>9}  figures", "-" * 72]
    for step in summary["steps"]:
        figures = {k: v for k, v in step.items() if k not in ("step", "seconds", "output")}
        text = ", ".join(f"{k} {_figure(v)}" for k, v in figures.items())
        lines.append(f"{step['step']:<18}{step['seconds'] or 0:>9.1f}  {text}")
    lines.append(f"{'total':<18}{summary['seconds']:>9.1f}")
    flops_key = next(k for k in summary["models"][0] if k.startswith("gflops_at_"))
    lines += ["", f"{'model':<12}{'parameters':>12}{'GFLOPs @' + flops_key[10:]:>18}{'AP':>8}{'AP50':>8}"]
    for m in summary["models"]:
        lines.append(f"{m['model']:<12}{_figure(m['parameters']):>12}{_figure(m[flops_key]):>18}"
                     f"{m['AP'] or 0:>8.3f}{m['AP50'] or 0:>8.3f}")
    if "same_mode" in summary:
        m = summary["same_mode"]
        lines += ["", f"same aspect-ratio mode ({m['mode']}):  Keras AP {m['Keras'] or 0:.3f}  "
                      f"ONNX fp32 AP {m['ONNX fp32'] or 0:.3f}  ONNX INT8 AP {m['ONNX INT8'] or 0:.3f}",
                  f"INT8 gate: {summary['int8']}"]
    ordered = [k for k in METRIC_ORDER if k in metrics]
    lines += ["", "retrained model, val split: " + "  ".join(f"{k} {metrics[k]:.3f}" for k in ordered), "",
              "artifacts:"]
    lines += [f"  {s['step']:<20}{_short(s['output'])}" for s in summary["steps"]]
    lines += [f"  {name + ' report':<20}{_short(uri)}" for name, uri in summary["reports"].items()]
    if "engines" in summary:
        lines.append(f"  {'TensorRT engines':<20}{summary['engines']}")
    if summary.get("release"):
        lines.append(f"  {'release (latest)':<20}{_short(summary['release_uri'])}")
    elif "promotion" in summary:
        lines.append(f"  {'release':<20}none — {summary['promotion']}")
    if "run_dir" in summary:
        lines.append(f"  {'summary':<20}{_short(summary['run_dir'])}/summary.json")
    return "\n".join(lines)
