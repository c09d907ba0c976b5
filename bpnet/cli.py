"""``bpnet``: the command line, a thin adapter over ``bpnet.steps`` mirroring ``tlt bpnet <sub_task>``.

argparse -> the step's settings model (``bpnet.settings``, whose fields the flags are derived from)
-> the step function -> an exit code. Values are checked by the settings models and the steps,
never here. Exit codes: 0 success, 1 the work failed (e.g. invalid input data), 2 a bad command
line or a bad spec (reported before any work starts, one line per problem). A failure is one line
(a BpnetError's message, or the OS's for a path that cannot be read or written); anything else
is a bug and is logged with its traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import typing
from collections.abc import Callable, Sequence
from typing import Any, Literal

from pydantic import BaseModel

from bpnet import __version__
from bpnet.errors import EXIT_FAILED, BpnetError, SpecError, UsageError
from bpnet.settings import (
    EXPORT_MAX_WORKSPACE,
    CacheReuse,
    CalibrationSettings,
    ConvertSettings,
    EngineSettings,
    EvaluateSettings,
    InferenceSettings,
    OutputSettings,
    PruneSettings,
    SynthSettings,
    TrainSettings,
    build,
)
from bpnet.specs.base import DEFAULT_INPUT_SHAPE

log = logging.getLogger("bpnet")

# TLT's short flags (and the names that differ from the settings fields), per settings field
CONVERT_FLAGS = {"mode": ("-m", "--mode")}
PRUNE_FLAGS = {"normalizer": ("-n", "--normalizer"), "equalization_criterion": ("-eq", "--equalization_criterion"),
               "pruning_granularity": ("-pg", "--pruning_granularity"),
               "pruning_threshold": ("-pth", "--pruning_threshold"), "min_num_filters": ("-nf", "--min_num_filters"),
               "excluded_layers": ("-el", "--excluded_layers")}
CALIBRATION_FLAGS = {"cal_batches": ("--batches",), "cal_batch_size": ("--batch_size",),
                     "cal_method": ("--cal_method",)}
ENGINE_FLAGS = {"data_type": ("-t", "--data_type"), "max_batch_size": ("-m", "--max_batch_size"),
                "max_workspace_size": ("-w", "--max_workspace_size"),
                "strict_type_constraints": ("-s", "--strict_type_constraints"), "dla_core": ("-u", "--dla_core")}


def _literal_choices(annotation: Any) -> tuple | None:
    if typing.get_origin(annotation) is Literal:
        return typing.get_args(annotation)
    return None


def add_settings(parser: argparse.ArgumentParser, model: type[BaseModel],
                 flags: dict[str, tuple[str, ...]] | None = None, only: Sequence[str] | None = None,
                 overrides: dict[str, dict] | None = None) -> None:
    """One flag per field of ``model``: name (``flags``, else ``--<field>``), default, help and
    choices from the field, so a setting is declared once, in the model."""
    for name, info in model.model_fields.items():
        if only is not None and name not in only:
            continue
        annotation = info.annotation
        args = typing.get_args(annotation)
        optional = type(None) in args
        inner = next((a for a in args if a is not type(None)), annotation) if optional else annotation
        kwargs: dict[str, Any] = {"dest": name}
        default = None if info.is_required() else info.get_default(call_default_factory=True)
        if info.is_required():
            kwargs["required"] = True
        else:
            kwargs["default"] = default
        if inner is bool:
            kwargs["action"] = "store_true"
        elif typing.get_origin(inner) is list:
            item = typing.get_args(inner)[0]
            kwargs.update(nargs="+" if optional else "*", type=item)
        elif choices := _literal_choices(inner):
            kwargs["choices"] = list(choices)
        else:
            kwargs["type"] = inner
        names = (flags or {}).get(name, (f"--{name}",))
        if inner is not bool and "choices" not in kwargs:
            kwargs["metavar"] = names[-1].lstrip("-").upper()
        shown = "" if default is None or default is False or default == [] else f" (default: {default})"
        kwargs["help"] = f"{info.description}{shown}"
        kwargs.update((overrides or {}).get(name, {}))
        parser.add_argument(*names, **kwargs)


def settings_of(model: type[BaseModel], args: argparse.Namespace, **values: Any):
    """The settings ``model`` from the flags of its fields (``values`` take precedence)."""
    return build(model, **{**{n: getattr(args, n) for n in model.model_fields if hasattr(args, n)}, **values})


def _common(parser: argparse.ArgumentParser, spec_paths: bool = True) -> None:
    parser.add_argument("-l", "--log_level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], help="logging level")
    if spec_paths:
        parser.add_argument("--spec_root", default=None,
                            help="directory that relative spec paths resolve against "
                                 "(default: $BPNET_SPEC_ROOT, else the spec file's folder)")
        parser.add_argument("--path_map", action="append", default=[], metavar="OLD=NEW",
                            help="remap an absolute path prefix in specs, e.g. /workspace=/data/ws "
                                 "(repeatable; also $BPNET_PATH_MAP, comma-separated)")


def _key_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-k", "--key", default=None,
                        help="model encryption key (or set $BPNET_MODEL_KEY, which keeps it out of process lists)")


def _paths(spec_file: str, args: argparse.Namespace, check_inputs: bool = False):
    """How a spec is read; with ``check_inputs`` its input files and folders must exist now, so a
    missing or garbage one stops the step with exit 2 before any output folder is created."""
    from bpnet.specs import default_path_context

    return default_path_context(spec_file, args.spec_root, args.path_map, check_inputs=check_inputs)


def _hw(text: str) -> tuple[int, int]:
    """``H,W`` (argparse type)."""
    try:
        height, width = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text} — expected H,W (e.g. 368,368)") from None
    return height, width


def _hwc(text: str) -> tuple[int, int]:
    """``H,W,C`` (the guide's -d) -> (H, W); C must be 3 (argparse type)."""
    try:
        height, width, channels = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text} — expected H,W,C, e.g. 368,368,3") from None
    if channels != 3:
        raise argparse.ArgumentTypeError(f"{text} — expected H,W,3 (RGB)")
    return height, width


SHAPE = ",".join(map(str, DEFAULT_INPUT_SHAPE))


def _add_dataset_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dataset_convert", help="convert a COCO keypoint dataset to TFRecords (+ masks)",
                       description="Convert COCO person keypoints to sharded TFRecords "
                                   "<output>-fold-NNN-of-NNN, optionally generating loss masks.")
    p.add_argument("-d", "--dataset_spec", required=True, help="path to the JSON dataset spec")
    p.add_argument("-o", "--output_filename", required=True,
                   help="output prefix; shards are named <output>-fold-<num>-of-<total>")
    add_settings(p, ConvertSettings, CONVERT_FLAGS)
    _common(p)
    p.set_defaults(func=_run_dataset_convert)


def _run_dataset_convert(args: argparse.Namespace) -> int:
    from bpnet.specs import DatasetSpec, load_spec
    from bpnet.steps.dataset_convert import dataset_convert

    settings = settings_of(ConvertSettings, args)
    spec = load_spec(args.dataset_spec, DatasetSpec, _paths(args.dataset_spec, args, check_inputs=True))
    for line in dataset_convert(spec, args.output_filename, settings).summary.lines():
        log.info("%s", line)
    return 0


def _add_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="generate the synthetic demo dataset (COCO format)",
                       description="Write a deterministic synthetic COCO keypoints dataset (people, or figures "
                                   "of any skeleton with --skeleton) and a dataset spec (DIR/coco_spec.json) that "
                                   "dataset_convert accepts.")
    p.add_argument("-o", "--output_dir", required=True, help="directory to write the dataset to")
    add_settings(p, SynthSettings)
    add_settings(p, OutputSettings, overrides={"overwrite": {"help": "replace an existing folder that is not a "
                                                                     "synth dataset (all its files are removed)"}})
    _common(p, spec_paths=False)
    p.set_defaults(func=_run_synth)


def _run_synth(args: argparse.Namespace) -> int:
    from bpnet.data.synth import generate

    counts = generate(args.output_dir, **settings_of(SynthSettings, args).model_dump(), overwrite=args.overwrite)
    for split, c in counts.items():
        log.info("%s: %d images, %d annotations", split, c["images"], c["annotations"])
    log.info("dataset spec: %s/coco_spec.json", args.output_dir)
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train (or retrain) a BodyPoseNet model; resumes automatically",
                       description="Train as the train spec says. Re-running the same command resumes from "
                                   "the latest checkpoint in the results directory.")
    p.add_argument("-e", "--experiment_spec_file", required=True, help="path to the train spec (YAML)")
    p.add_argument("-r", "--results_dir", required=True, help="folder for checkpoints, logs and the model")
    _key_argument(p)
    add_settings(p, TrainSettings, overrides={"dump_samples": {"metavar": "N"}})
    _common(p)
    p.set_defaults(func=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from bpnet.specs import TrainSpec, load_spec
    from bpnet.steps._common import model_key
    from bpnet.steps.train import dump_samples, train

    settings = settings_of(TrainSettings, args)
    if not settings.dump_samples:
        model_key(args.key)  # a missing key stops the run before the spec's data is read
    spec = load_spec(args.experiment_spec_file, TrainSpec, _paths(args.experiment_spec_file, args, check_inputs=True))
    if settings.dump_samples:
        written = dump_samples(spec, args.results_dir, settings).files
        log.info("wrote %d label visualizations to %s", len(written), written[0].parent if written else "-")
        return 0
    result = train(spec, args.results_dir, args.key, settings)
    log.info("model: %s (%d parameters, %.2f GFLOPs/image)", result.model, result.parameters,
             result.gflops_per_image)
    if result.first_loss is not None:
        log.info("loss %.5g -> %.5g over %d steps (%.1f images/s)", result.first_loss, result.last_loss,
                 result.steps, result.images_per_second)
    return 0


def _add_prune(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prune", help="remove low-norm filters; the narrower model needs retraining",
                       description="Prune a trained model's convolution filters by normalized kernel norm. "
                                   "Writes the pruned model and a report (<output_file>.json).")
    p.add_argument("-m", "--model", required=True, help="the trained model to prune")
    p.add_argument("-o", "--output_file", required=True, help="path of the pruned model")
    _key_argument(p)
    add_settings(p, PruneSettings, PRUNE_FLAGS)
    p.add_argument("--input_shape", type=_hw, default=SHAPE, metavar="H,W",
                   help=f"input size for the FLOPs in the report (extension; default: {SHAPE})")
    add_settings(p, OutputSettings)
    _common(p, spec_paths=False)
    p.set_defaults(func=_run_prune)


def _run_prune(args: argparse.Namespace) -> int:
    from bpnet.steps.prune import prune

    result = prune(args.model, args.output_file, args.key, settings_of(PruneSettings, args), args.input_shape,
                   args.overwrite)
    for layer in result.report["layers"]:
        log.info("%-24s %5d -> %5d", layer["layer"], layer["before"], layer["after"])
    p, f = result.parameters, result.flops
    log.info("parameters %d -> %d (%.1f%% kept); GFLOPs at %dx%d %.2f -> %.2f (%.1f%% kept) -> %s", p["before"],
             p["after"], 100 * p["kept"], *args.input_shape, f["before"] / 1e9, f["after"] / 1e9, 100 * f["kept"],
             result.model)
    return 0


def _calibration_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cal_image_dir", default=None, help="images to build the calibration tensorfile from")
    p.add_argument("--cal_data_file", default=None,
                   help="the calibration tensorfile (.npy); reused if it exists (default: <output>.tensorfile.npy)")
    p.add_argument("--cal_cache_file", default="./cal.bin",
                   help="TensorRT calibration cache; calibration is skipped if it exists (default: ./cal.bin)")
    add_settings(p, CalibrationSettings, CALIBRATION_FLAGS)
    add_settings(p, CacheReuse)


def _calibration_data(args: argparse.Namespace, output: str):
    from bpnet.deploy.export import CalibrationData

    return CalibrationData(args.cal_image_dir, args.cal_data_file or f"{output}.tensorfile.npy", args.cal_cache_file,
                           settings_of(CalibrationSettings, args), foreign_cache=args.foreign_cal_cache)


def _train_norm(spec_file: str | None, args: argparse.Namespace):
    """Normalization of the experiment spec (-e), else the defaults (what training used by default)."""
    from bpnet.specs import TrainSpec, load_spec
    from bpnet.specs.train import NormalizationParams

    if not spec_file:
        return NormalizationParams(), None
    spec = load_spec(spec_file, TrainSpec, _paths(spec_file, args))
    return spec.dataloader.normalization_params, spec


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export to (encrypted) ONNX; INT8 calibration; TensorRT engine if available",
                       description="Export a model to ONNX through tf2onnx, encrypted with the key (.etlt). "
                                   "--data_type int8 also writes the calibration tensorfile, the TensorRT "
                                   "calibration cache and an ONNX Runtime QDQ INT8 model (<output stem>.int8.etlt); "
                                   "with --sdk_compatible_model the cache is that of the SDK-compatible graph and "
                                   "no QDQ model is written. export.json beside the exported file records its input "
                                   "shape and padding mode; an engine built gets its build record (as build_engine).")
    p.add_argument("-m", "--model", required=True, help="the .tlt model to export")
    _key_argument(p)
    p.add_argument("-o", "--output_file", default=None, help="exported file (default: <model>.etlt)")
    p.add_argument("-e", "--experiment_spec", default=None,
                   help="the train spec (normalization for calibration; -d defaults to its image dims)")
    p.add_argument("-t", "--backend", default="tfonnx", choices=["tfonnx"], help="only tfonnx is supported")
    p.add_argument("-d", "--input_dims", type=_hwc, default=None,
                   help=f"H,W,C of the network input (e.g. {SHAPE},3)")
    add_settings(p, EngineSettings, {"data_type": ("--data_type",)}, only=("data_type",),
                 overrides={"data_type": {"help": "engine precision; int8 also calibrates: tensorfile (reused if "
                                                  "--cal_data_file exists), TensorRT cache of the exported graph "
                                                  "and, unless --sdk_compatible_model, a QDQ INT8 model"}})
    _calibration_arguments(p)
    add_settings(p, EngineSettings, {"max_batch_size": ("--max_batch_size",),
                                     "max_workspace_size": ("--max_workspace_size",)},
                 only=("max_batch_size", "max_workspace_size"),
                 overrides={"max_workspace_size": {"default": EXPORT_MAX_WORKSPACE, "help": "TensorRT workspace "
                                                   f"bytes (default: {EXPORT_MAX_WORKSPACE}, the guide's export "
                                                   "default; build_engine's -w is 1 GiB)"}})
    p.add_argument("--engine_file", default=None, help="also build a TensorRT engine here (needs TensorRT + GPU)")
    p.add_argument("--force_ptq", action="store_true", help="accepted for compatibility: calibration is PTQ here")
    add_settings(p, EngineSettings, {"strict_type_constraints": ("-s", "--strict_type_constraints")},
                 only=("strict_type_constraints",), overrides={"strict_type_constraints": {"help": "TensorRT strict "
                                                                                      "types (int8)"}})
    p.add_argument("--sdk_compatible_model", action="store_true",
                   help="add the deployable model's post-processing (PAFs upsampled to 1/2); deployment only "
                        "(bpnet inference/evaluate refuse it). With --data_type int8 the SDK graph itself is "
                        "calibrated (re-use the standard int8 export's --cal_data_file, give a new "
                        "--cal_cache_file) and no <stem>.int8.etlt is written")
    p.add_argument("--data_format", default="channels_last", choices=["channels_last"],
                   help="input layout: NHWC (channels_last) only")
    p.add_argument("--output_stage", type=int, default=None, help="stage to export (extension; default: last)")
    p.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    add_settings(p, OutputSettings)
    _common(p)
    p.set_defaults(func=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from bpnet.settings import ExportSettings
    from bpnet.steps.export import export

    if args.verbose:
        logging.getLogger().setLevel(logging.DEBUG)
    norm, spec = _train_norm(args.experiment_spec, args)
    if args.input_dims:
        dims = args.input_dims
    elif spec is not None:
        dims = (spec.dataloader.image_config.image_dims.height, spec.dataloader.image_config.image_dims.width)
    else:
        raise UsageError("missing — give H,W,C or an experiment spec (-e) to take them from", field="input_dims")
    settings = build(ExportSettings, input_shape=dims)
    engine = settings_of(EngineSettings, args)
    output = args.output_file or str(Path(args.model).with_suffix(".etlt"))
    calibration = _calibration_data(args, output) if args.data_type == "int8" else None
    result = export(args.model, output, args.key, settings, norm, engine.data_type, args.output_stage,
                    args.sdk_compatible_model, calibration, args.engine_file, engine, args.overwrite)
    if result.engine_skipped:
        log.warning("the ONNX model%s written; no engine: %s",
                    " and calibration outputs were" if calibration else " was", result.engine_skipped)
    return 0


def _add_calibrate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("calibrate", help="INT8 calibration of an exported model (cache + QDQ INT8 model)",
                       description="Build (or reuse) the calibration tensorfile, compute activation ranges with "
                                   "ONNX Runtime, write the TensorRT calibration cache and a QDQ INT8 model.")
    p.add_argument("-m", "--model", required=True, help="an exported fp32 model (.etlt / .onnx)")
    _key_argument(p)
    p.add_argument("-o", "--output_file", default=None, help="QDQ INT8 model (default: <model stem>.int8.etlt)")
    p.add_argument("-e", "--experiment_spec", default=None, help="the train spec (normalization)")
    _calibration_arguments(p)
    add_settings(p, OutputSettings)
    _common(p)
    p.set_defaults(func=_run_calibrate)


def _run_calibrate(args: argparse.Namespace) -> int:
    from bpnet.steps.calibrate import calibrate

    norm, _ = _train_norm(args.experiment_spec, args)
    calibrate(args.model, args.output_file, args.key, _calibration_data(args, args.model), norm, args.overwrite)
    return 0


def _add_build_engine(sub: argparse._SubParsersAction) -> None:
    from bpnet.model.exported import HEAT_NAME, PAF_NAME

    p = sub.add_parser("build_engine", help="TensorRT engine from an exported model (as tlt-converter)",
                       description="Build a TensorRT engine on this machine's GPU (needs TensorRT). Flags as "
                                   "tlt-converter. Beside the engine <name>.engine goes its build record "
                                   "<name>.engine.json (precision, max batch, what serves it, TensorRT/CUDA/JetPack "
                                   "versions, node: $NODE_NAME or the hostname), which a release needs.")
    p.add_argument("input_file", help="the exported model (.etlt / .onnx)")
    _key_argument(p)
    p.add_argument("-d", "--input_dims", type=_hwc, default=None, help="H,W,C (default: the exported input size)")
    p.add_argument("-o", "--outputs", default=f"{HEAT_NAME},{PAF_NAME}", help="output node names (comma-separated)")
    p.add_argument("-c", "--cal_cache", default=None, help="calibration cache (int8)")
    p.add_argument("-e", "--engine_file", required=True, help="where the engine is written")
    p.add_argument("-b", "--batch_size", type=int, default=1,
                   help="accepted for tlt-converter compatibility and unused: int8 engines read the calibration "
                        "cache (-c), so no calibration batches run")
    add_settings(p, EngineSettings, ENGINE_FLAGS)
    p.add_argument("-i", "--input_order", default="nhwc", choices=["nhwc"], help="input order: nhwc only")
    p.add_argument("-p", "--profile", action="append", default=[],
                   help="optimization profile <input>,<min>,<opt>,<max> with shapes like 1x368x368x3 (repeatable)")
    _common(p, spec_paths=False)
    p.set_defaults(func=_run_build_engine)


def _run_build_engine(args: argparse.Namespace) -> int:
    from bpnet.steps.build_engine import build_engine

    result = build_engine(args.input_file, args.engine_file, args.key, settings_of(EngineSettings, args),
                          args.cal_cache, args.profile, args.input_dims, args.outputs.split(","))
    log.info("engine: %s", result.engine)
    return 0


def _add_inference(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inference", help="detect people in images; write detection.json (+ drawings)",
                       description="Run a model on an image, a directory or a COCO-style JSON of images.")
    p.add_argument("-i", "--inference_spec", required=True, help="the inference spec (YAML)")
    p.add_argument("-m", "--model_filename", default=None, help="model file; overrides the spec's model_path")
    add_settings(p, InferenceSettings, only=("input_type",))
    p.add_argument("--input", required=True, help="an image, a directory of images, or a COCO-style JSON")
    p.add_argument("--image_root_path", default=None, help="root of relative image paths in a json input")
    p.add_argument("--results_dir", "-r", required=True, help="where detection.json is written")
    add_settings(p, InferenceSettings, only=("dump_visualizations",))
    _key_argument(p)
    _common(p)
    p.set_defaults(func=_run_inference)


def _run_inference(args: argparse.Namespace) -> int:
    from bpnet.specs import InferenceSpec, load_spec
    from bpnet.steps.inference import inference

    paths = _paths(args.inference_spec, args)
    spec = load_spec(args.inference_spec, InferenceSpec, paths)
    inference(spec, args.input, args.model_filename, args.key, args.results_dir, settings_of(InferenceSettings, args),
              args.image_root_path, paths)
    return 0


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="COCO keypoint AP/AR on the dataset spec's test_data",
                       description="Evaluate a model on the test_data of a dataset spec with pycocotools.")
    p.add_argument("-i", "--inference_spec", required=True, help="the inference spec (YAML)")
    p.add_argument("-d", "--dataset_spec", required=True, help="the dataset spec (JSON); test_data is used")
    p.add_argument("-m", "--model_filename", default=None, help="model file; overrides the spec's model_path")
    p.add_argument("-r", "--results_dir", required=True, help="where metrics.json is written")
    add_settings(p, EvaluateSettings, overrides={"num_visualizations": {"metavar": "N"}})
    _key_argument(p)
    _common(p)
    p.set_defaults(func=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    from bpnet.specs import DatasetSpec, InferenceSpec, load_spec
    from bpnet.steps.evaluate import evaluate

    dataset = load_spec(args.dataset_spec, DatasetSpec, _paths(args.dataset_spec, args, check_inputs=True))
    settings = settings_of(EvaluateSettings, args)
    paths = _paths(args.inference_spec, args)
    spec = load_spec(args.inference_spec, InferenceSpec, paths)
    evaluate(spec, dataset, args.model_filename, args.key, args.results_dir, settings, paths)
    return 0


SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_dataset_convert, _add_train, _add_prune, _add_export, _add_calibrate, _add_build_engine, _add_evaluate,
    _add_inference, _add_synth]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bpnet", description="BodyPoseNet: TLT-compatible sub-tasks.")
    parser.add_argument("--version", action="version", version=f"bpnet {__version__}")
    sub = parser.add_subparsers(dest="sub_task", required=True, metavar="<sub_task>")
    for add in SUBCOMMANDS:
        add(sub)
    return parser


EXIT_INTERRUPTED = 130  # as a shell reports a command stopped by SIGINT
INTERRUPTED = {"": "outputs are written whole or not at all: rerun the command",
               "train": "rerun the same command to resume from the last checkpoint"}
_FULL = ("No space left on device", "File too large", "Disk quota exceeded")


def storage_full(exc: BaseException) -> str | None:
    """One line for a write that failed because the disk (or a quota or file-size limit) is full,
    whatever library raised it; None for anything else."""
    text = str(exc)
    reason = next((r for r in _FULL if r in text), None)
    if reason is None:
        return None
    where = next((line.strip() for line in text.splitlines() if reason in line), text)
    return f"cannot write: {reason}: {where[:300]}; nothing half-written was kept: free space and rerun"


def _failed(parser: argparse.ArgumentParser, args: argparse.Namespace, exc: BpnetError) -> int:
    """Report a BpnetError as the user reads it: usage and spec errors on stderr (exit 2), other
    failures as one log line (exit 1)."""
    if isinstance(exc, UsageError):
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[args.sub_task]
        flags = next(("/".join(a.option_strings) for a in sub._actions if a.dest == exc.field and a.option_strings),
                     exc.field)
        print(f"bpnet {args.sub_task}: error: {flags + ': ' if flags else ''}{exc.detail}", file=sys.stderr)
    elif isinstance(exc, SpecError):
        for line in exc.lines:
            print(line, file=sys.stderr)
    else:
        log.error("%s", exc)
    return exc.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ banner is not our log
    logging.getLogger("absl").setLevel(logging.WARNING)  # per-checkpoint chatter from TF's saver
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except BpnetError as exc:
        return _failed(parser, args, exc)
    except OSError as exc:  # a path given cannot be read or written (missing, no permission, disk full)
        log.error("%s", exc)  # the OS's message names the path
        log.debug("where it was raised", exc_info=True)
        return EXIT_FAILED
    except MemoryError:
        log.error("out of memory")
        return EXIT_FAILED
    except KeyboardInterrupt:
        log.error("bpnet %s: interrupted; %s", args.sub_task, INTERRUPTED.get(args.sub_task, INTERRUPTED[""]))
        return EXIT_INTERRUPTED
    except Exception as exc:  # anything else is a bug: its traceback is what a report needs
        if full := storage_full(exc):  # TensorFlow's writers report a full disk as their own error types
            log.error("%s", full)
            return EXIT_FAILED
        log.exception("bpnet %s failed (a bug, not a data or settings problem)", args.sub_task)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
