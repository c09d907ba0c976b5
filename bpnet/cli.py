"""``bpnet``: the command line, a thin layer over the library mirroring ``tlt bpnet <sub_task>``.

Exit codes: 0 success, 1 the work failed (e.g. invalid input data), 2 a bad command line or a bad
spec (reported before any work starts, one line per problem).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence

from bpnet import __version__

log = logging.getLogger("bpnet")

EXIT_FAILED = 1
EXIT_BAD_SPEC = 2
MAX_SHARDS = 4096  # as the run spec's dataset.num_shards


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


def _add_dataset_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dataset_convert", help="convert a COCO keypoint dataset to TFRecords (+ masks)",
                       description="Convert COCO person keypoints to sharded TFRecords "
                                   "<output>-fold-NNN-of-NNN, optionally generating loss masks.")
    p.add_argument("-d", "--dataset_spec", required=True, help="path to the JSON dataset spec")
    p.add_argument("-o", "--output_filename", required=True,
                   help="output prefix; shards are named <output>-fold-<num>-of-<total>")
    p.add_argument("-m", "--mode", default="train", choices=["train", "test"],
                   help="which split of the spec to convert: train_data or test_data (default: train)")
    p.add_argument("--generate_masks", action="store_true",
                   help="generate and save masks of regions with unlabeled people and crowds")
    p.add_argument("--check_files", action="store_true",
                   help="check that images decode at their annotated size and that masks exist")
    p.add_argument("--skip_invalid", action="store_true",
                   help="skip and count images with invalid data instead of failing")
    p.add_argument("--num_shards", type=int, default=1, help="number of TFRecord shards (default: 1)")
    _common(p)
    p.set_defaults(func=_run_dataset_convert)


def _add_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="generate the synthetic demo dataset (COCO format)",
                       description="Write a deterministic synthetic COCO person-keypoints dataset "
                                   "and a dataset spec (DIR/coco_spec.json) that dataset_convert accepts.")
    p.add_argument("-o", "--output_dir", required=True, help="directory to write the dataset to")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--train_images", type=int, default=128, help="number of training images (default: 128)")
    p.add_argument("--val_images", type=int, default=32, help="number of validation images (default: 32)")
    _common(p, spec_paths=False)
    p.set_defaults(func=_run_synth)


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train (or retrain) a BodyPoseNet model; resumes automatically",
                       description="Train as the train spec says. Re-running the same command resumes from "
                                   "the latest checkpoint in the results directory.")
    p.add_argument("-e", "--experiment_spec_file", required=True, help="path to the train spec (YAML)")
    p.add_argument("-r", "--results_dir", required=True, help="folder for checkpoints, logs and the model")
    _key_argument(p)
    p.add_argument("--gpus", type=int, default=1, help="number of GPUs to train on (default: 1)")
    p.add_argument("--gpu_index", type=int, nargs="+", default=None, help="indices of the GPUs to use")
    p.add_argument("--dump_samples", type=int, default=0, metavar="N",
                   help="write N training samples with their heatmaps/PAFs/masks drawn on them to "
                        "<results_dir>/label_samples and exit (checks the labels by eye)")
    _common(p)
    p.set_defaults(func=_run_train)


def _key_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-k", "--key", default=None,
                        help="model encryption key (or set $BPNET_MODEL_KEY, which keeps it out of process lists)")


def _resolve_key(args: argparse.Namespace) -> str:
    key = args.key or os.environ.get("BPNET_MODEL_KEY")
    if not key:
        raise _Usage("-k/--key: missing — pass the model key or set $BPNET_MODEL_KEY")
    return key


def _inputs_context(spec_file: str, args: argparse.Namespace):
    """How a step's own spec is read: its input files and folders must exist now, so a missing
    or garbage one stops the step with exit 2 before any output folder is created."""
    from bpnet.specs import default_path_context

    return default_path_context(spec_file, args.spec_root, args.path_map, check_inputs=True)


def _output_dir(flag: str, path: str) -> None:
    """Refuse an output folder that is (or lies under) a file before any work starts."""
    from pathlib import Path

    for candidate in (Path(path), *Path(path).parents):
        if candidate.exists():
            if not candidate.is_dir():
                raise _Usage(f"{flag}: {path} — {candidate} is a file; expected a folder")
            return


def _output_file(flag: str, path: str) -> None:
    from pathlib import Path

    if Path(path).is_dir():
        raise _Usage(f"{flag}: {path} — is a folder; expected a file path")
    _output_dir(flag, str(Path(path).parent))


def _run_train(args: argparse.Namespace) -> int:
    from bpnet.specs import TrainSpec, load_spec

    if args.gpus < 1:
        raise _Usage(f"--gpus: {args.gpus} — expected a positive integer")
    key = _resolve_key(args)
    spec = load_spec(args.experiment_spec_file, TrainSpec, _inputs_context(args.experiment_spec_file, args))
    _output_dir("-r/--results_dir", args.results_dir)
    if args.dump_samples:
        from bpnet.data.label_viz import dump_samples

        written = dump_samples(spec, args.results_dir, args.dump_samples)
        log.info("wrote %d label visualizations to %s", len(written), written[0].parent if written else "-")
        return 0
    from bpnet.train import train

    result = train(spec, args.results_dir, key, gpus=args.gpus, gpu_index=args.gpu_index)
    log.info("model: %s (%d parameters, %.2f GFLOPs/image)", result.model_path, result.parameters,
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
    p.add_argument("-n", "--normalizer", default="max", choices=["max", "L2"],
                   help="divide each filter norm by the layer's max norm or by the L2 norm of all its norms "
                        "(default: max)")
    p.add_argument("-eq", "--equalization_criterion", default="union",
                   choices=["union", "intersection", "arithmetic_mean", "geometric_mean"],
                   help="how layers that must keep the same channels combine their statistics (default: union)")
    p.add_argument("-pg", "--pruning_granularity", type=int, default=8,
                   help="number of filters to remove at a time (default: 8)")
    p.add_argument("-pth", "--pruning_threshold", type=float, default=0.1,
                   help="threshold to compare the normalized norm against (default: 0.1)")
    p.add_argument("-nf", "--min_num_filters", type=int, default=16,
                   help="minimum number of filters to keep per layer (default: 16)")
    p.add_argument("-el", "--excluded_layers", nargs="*", default=[], help="layers not to prune (default: none)")
    p.add_argument("--input_shape", default="368,368", metavar="H,W",
                   help="input size for the FLOPs in the report (extension; default: 368,368)")
    _common(p, spec_paths=False)
    p.set_defaults(func=_run_prune)


def _run_prune(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    if not 0.0 <= args.pruning_threshold <= 1.0:
        raise _Usage(f"-pth/--pruning_threshold: {args.pruning_threshold} — expected a value in [0, 1]")
    for flag, value in (("-pg/--pruning_granularity", args.pruning_granularity),
                        ("-nf/--min_num_filters", args.min_num_filters)):
        if value < 1:
            raise _Usage(f"{flag}: {value} — expected a positive integer")
    try:
        height, width = (int(v) for v in args.input_shape.split(","))
    except ValueError:
        raise _Usage(f"--input_shape: {args.input_shape} — expected H,W (e.g. 368,368)") from None
    from bpnet.artifacts import atomic_write_text
    from bpnet.model.io import load_model, save_model
    from bpnet.prune import PruneSettings, prune

    key = _resolve_key(args)
    _output_file("-o/--output_file", args.output_file)
    settings = PruneSettings(args.normalizer, args.equalization_criterion, args.pruning_granularity,
                             args.pruning_threshold, args.min_num_filters, tuple(args.excluded_layers))
    result = prune(load_model(args.model, key), settings, (height, width))
    save_model(result.model, args.output_file, key)
    report = {"model": str(args.model), "output_file": str(args.output_file), **result.report}
    atomic_write_text(Path(f"{args.output_file}.json"), json.dumps(report, indent=2) + "\n")
    for layer in report["layers"]:
        log.info("%-24s %5d -> %5d", layer["layer"], layer["before"], layer["after"])
    p, f = report["parameters"], report["flops"]
    log.info("parameters %d -> %d (%.1f%% kept); GFLOPs at %dx%d %.2f -> %.2f (%.1f%% kept) -> %s", p["before"],
             p["after"], 100 * p["kept"], height, width, f["before"] / 1e9, f["after"] / 1e9, 100 * f["kept"],
             args.output_file)
    return 0


def _dims(text: str, flag: str) -> tuple[int, int]:
    """H,W,C (the guide's -d) -> (H, W); C must be 3."""
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise _Usage(f"{flag}: {text} — expected H,W,C, e.g. 368,368,3") from None
    if len(values) != 3 or values[2] != 3 or values[0] % 8 or values[1] % 8:
        raise _Usage(f"{flag}: {text} — expected H,W,3 with H and W multiples of 8")
    return values[0], values[1]


def _calibration_arguments(p: argparse.ArgumentParser) -> None:
    from bpnet.deploy.calibration import METHODS

    p.add_argument("--cal_image_dir", default=None, help="images to build the calibration tensorfile from")
    p.add_argument("--cal_data_file", default=None,
                   help="the calibration tensorfile (.npy); reused if it exists (default: <output>.tensorfile.npy)")
    p.add_argument("--cal_cache_file", default="./cal.bin",
                   help="TensorRT calibration cache; calibration is skipped if it exists (default: ./cal.bin)")
    p.add_argument("--batches", type=int, default=10, help="number of calibration batches (default: 10)")
    p.add_argument("--batch_size", type=int, default=1, help="calibration batch size (default: 1)")
    p.add_argument("--cal_method", default="entropy", choices=METHODS,
                   help="ONNX Runtime calibrator (extension; default: entropy)")


def _train_norm(spec_file: str | None, args: argparse.Namespace):
    """Normalization of the experiment spec (-e), else the defaults (what training used by default)."""
    from bpnet.specs import TrainSpec, default_path_context, load_spec
    from bpnet.specs.train import NormalizationParams

    if not spec_file:
        return NormalizationParams(), None
    spec = load_spec(spec_file, TrainSpec, default_path_context(spec_file, args.spec_root, args.path_map))
    return spec.dataloader.normalization_params, spec


def _add_export(sub: argparse._SubParsersAction) -> None:
    from bpnet.deploy.engine import PRECISIONS

    p = sub.add_parser("export", help="export to (encrypted) ONNX; INT8 calibration; TensorRT engine if available",
                       description="Export a model to ONNX through tf2onnx, encrypted with the key (.etlt). "
                                   "--data_type int8 also writes the calibration tensorfile, the TensorRT "
                                   "calibration cache and an ONNX Runtime QDQ INT8 model (<output stem>.int8.etlt).")
    p.add_argument("-m", "--model", required=True, help="the .tlt model to export")
    _key_argument(p)
    p.add_argument("-o", "--output_file", default=None, help="exported file (default: <model>.etlt)")
    p.add_argument("-e", "--experiment_spec", default=None,
                   help="the train spec (normalization for calibration; -d defaults to its image dims)")
    p.add_argument("-t", "--backend", default="tfonnx", choices=["tfonnx"], help="only tfonnx is supported")
    p.add_argument("-d", "--input_dims", default=None, help="H,W,C of the network input (e.g. 368,368,3)")
    p.add_argument("--data_type", default="fp32", choices=PRECISIONS, help="engine data type")
    _calibration_arguments(p)
    p.add_argument("--max_batch_size", type=int, default=1, help="TensorRT max batch size (default: 1)")
    p.add_argument("--max_workspace_size", type=int, default=2 * (1 << 30),
                   help="TensorRT workspace bytes (default: 2 GiB)")
    p.add_argument("--engine_file", default=None, help="also build a TensorRT engine here (needs TensorRT + GPU)")
    p.add_argument("--force_ptq", action="store_true", help="accepted for compatibility: calibration is PTQ here")
    p.add_argument("-s", "--strict_type_constraints", action="store_true", help="TensorRT strict types (int8)")
    p.add_argument("--sdk_compatible_model", action="store_true",
                   help="add the deployable model's post-processing (PAFs upsampled to 1/2); deployment only")
    p.add_argument("--data_format", default="channels_last", choices=["channels_last"],
                   help="input layout: NHWC (channels_last) only")
    p.add_argument("--output_stage", type=int, default=None, help="stage to export (extension; default: last)")
    p.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    _common(p)
    p.set_defaults(func=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from bpnet.deploy.export import CalibrationSettings, export

    if args.verbose:
        logging.getLogger().setLevel(logging.DEBUG)
    key = _resolve_key(args)
    norm, spec = _train_norm(args.experiment_spec, args)
    if args.input_dims:
        dims = _dims(args.input_dims, "-d/--input_dims")
    elif spec is not None:
        dims = (spec.dataloader.image_config.image_dims.height, spec.dataloader.image_config.image_dims.width)
    else:
        raise _Usage("-d/--input_dims: missing — give H,W,C or an experiment spec (-e) to take them from")
    output = args.output_file or str(Path(args.model).with_suffix(".etlt"))
    _output_file("-o/--output_file", output)
    cal = None
    if args.data_type == "int8":
        if not (args.cal_image_dir or args.cal_data_file):
            raise _Usage("--data_type int8: needs --cal_image_dir (or an existing --cal_data_file)")
        cal = CalibrationSettings(args.cal_image_dir, args.cal_data_file or f"{output}.tensorfile.npy",
                                  args.cal_cache_file, args.batches, args.batch_size, args.cal_method)
    engine_options = {"max_batch_size": args.max_batch_size, "workspace_bytes": args.max_workspace_size,
                      "strict_types": args.strict_type_constraints}
    result = export(args.model, key, output, dims, norm, args.data_type, args.output_stage,
                    args.sdk_compatible_model, cal, args.engine_file, engine_options)
    if result.engine_skipped:
        log.warning("the ONNX model%s written; no engine: %s", " and calibration outputs were" if cal else " was",
                    result.engine_skipped)
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
    _common(p)
    p.set_defaults(func=_run_calibrate)


def _run_calibrate(args: argparse.Namespace) -> int:
    from bpnet.deploy.export import CalibrationSettings, calibrate, int8_path

    key = _resolve_key(args)
    norm, _ = _train_norm(args.experiment_spec, args)
    if not (args.cal_image_dir or args.cal_data_file):
        raise _Usage("needs --cal_image_dir (or an existing --cal_data_file)")
    cal = CalibrationSettings(args.cal_image_dir, args.cal_data_file or f"{args.model}.tensorfile.npy",
                              args.cal_cache_file, args.batches, args.batch_size, args.cal_method)
    calibrate(args.model, key, cal, norm, args.output_file or int8_path(args.model))
    return 0


def _add_build_engine(sub: argparse._SubParsersAction) -> None:
    from bpnet.deploy.engine import PRECISIONS

    p = sub.add_parser("build_engine", help="TensorRT engine from an exported model (as tlt-converter)",
                       description="Build a TensorRT engine on this machine's GPU (needs TensorRT). Flags as "
                                   "tlt-converter.")
    p.add_argument("input_file", help="the exported model (.etlt / .onnx)")
    _key_argument(p)
    p.add_argument("-d", "--input_dims", default=None, help="H,W,C (default: the exported input size)")
    p.add_argument("-o", "--outputs", default="heatmap_out,paf_out", help="output node names (comma-separated)")
    p.add_argument("-c", "--cal_cache", default=None, help="calibration cache (int8)")
    p.add_argument("-e", "--engine_file", required=True, help="where the engine is written")
    p.add_argument("-b", "--batch_size", type=int, default=1,
                   help="accepted for tlt-converter compatibility and unused: int8 engines read the calibration "
                        "cache (-c), so no calibration batches run")
    p.add_argument("-m", "--max_batch_size", type=int, default=1, help="max batch size (default: 1)")
    p.add_argument("-t", "--data_type", default="fp32", choices=PRECISIONS, help="engine precision")
    p.add_argument("-w", "--max_workspace_size", type=int, default=1 << 30, help="workspace bytes (default: 1 GiB)")
    p.add_argument("-i", "--input_order", default="nhwc", choices=["nhwc"], help="input order: nhwc only")
    p.add_argument("-p", "--profile", action="append", default=[],
                   help="optimization profile <input>,<min>,<opt>,<max> with shapes like 1x368x368x3 (repeatable)")
    p.add_argument("-s", "--strict_type_constraints", action="store_true", help="obey precision constraints")
    p.add_argument("-u", "--dla_core", type=int, default=None, help="DLA core (Jetson), with GPU fallback")
    _common(p, spec_paths=False)
    p.set_defaults(func=_run_build_engine)


def _run_build_engine(args: argparse.Namespace) -> int:
    from bpnet.deploy.engine import EnginePlan, build_engine, parse_profile
    from bpnet.model.exported import HEAT_NAME, PAF_NAME, read_exported

    if args.outputs.split(",") != [HEAT_NAME, PAF_NAME]:
        raise _Usage(f"-o/--outputs: {args.outputs} — the exported model's outputs are {HEAT_NAME},{PAF_NAME}")
    try:
        profiles = tuple(parse_profile(p) for p in args.profile)
        plan = EnginePlan(precision=args.data_type, max_batch_size=args.max_batch_size,
                          workspace_bytes=args.max_workspace_size, profiles=profiles, calibration_cache=args.cal_cache,
                          strict_types=args.strict_type_constraints, dla_core=args.dla_core)
    except ValueError as exc:
        raise _Usage(str(exc)) from None
    data, info = read_exported(args.input_file, args.key or os.environ.get("BPNET_MODEL_KEY"))
    dims = _dims(args.input_dims, "-d/--input_dims") if args.input_dims else (info.height, info.width)
    log.info("engine plan: %s, input %dx%d", plan.describe(), *dims)
    build_engine(data, plan, (dims[0], dims[1], 3), args.engine_file)
    log.info("engine: %s", args.engine_file)
    return 0


def _add_inference(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inference", help="detect people in images; write detection.json (+ drawings)",
                       description="Run a model on an image, a directory or a COCO-style JSON of images.")
    p.add_argument("-i", "--inference_spec", required=True, help="the inference spec (YAML)")
    p.add_argument("-m", "--model_filename", default=None, help="model file; overrides the spec's model_path")
    p.add_argument("--input_type", required=True, choices=["image", "dir", "json"], help="what --input is")
    p.add_argument("--input", required=True, help="an image, a directory of images, or a COCO-style JSON")
    p.add_argument("--image_root_path", default=None, help="root of relative image paths in a json input")
    p.add_argument("--results_dir", "-r", required=True, help="where detection.json is written")
    p.add_argument("--dump_visualizations", action="store_true",
                   help="save skeleton drawings to <results_dir>/images_annotated")
    _key_argument(p)
    _common(p)
    p.set_defaults(func=_run_inference)


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="COCO keypoint AP/AR on the dataset spec's test_data",
                       description="Evaluate a model on the test_data of a dataset spec with pycocotools.")
    p.add_argument("-i", "--inference_spec", required=True, help="the inference spec (YAML)")
    p.add_argument("-d", "--dataset_spec", required=True, help="the dataset spec (JSON); test_data is used")
    p.add_argument("-m", "--model_filename", default=None, help="model file; overrides the spec's model_path")
    p.add_argument("-r", "--results_dir", required=True, help="where metrics.json is written")
    p.add_argument("--num_visualizations", type=int, default=0, metavar="N",
                   help="draw the detections of the first N images into <results_dir>/images_annotated "
                        "(extension; default 0)")
    _key_argument(p)
    _common(p)
    p.set_defaults(func=_run_evaluate)


def _predictor(args: argparse.Namespace):
    """Specs, model and backend for inference/evaluate; all spec problems surface before any work."""
    from pathlib import Path

    from bpnet.infer.predict import Predictor, open_backend
    from bpnet.specs import InferenceSpec, TrainSpec, default_path_context, load_spec, write_resolved_spec

    ctx = default_path_context(args.inference_spec, args.spec_root, args.path_map)
    spec = load_spec(args.inference_spec, InferenceSpec, ctx)
    train_spec = None
    if spec.train_spec:
        if not Path(spec.train_spec).is_file():
            raise _Usage(f"train_spec: {spec.train_spec} — not found (fix the path or use --path_map)")
        # only its normalization is used: the data it was trained on need not be here
        train_spec = load_spec(spec.train_spec, TrainSpec, ctx)
    _output_dir("-r/--results_dir", args.results_dir)
    model = args.model_filename or spec.model_path
    if not model:
        raise _Usage("-m/--model_filename: missing — and the inference spec has no model_path")
    predictor = Predictor(open_backend(model, args.key or os.environ.get("BPNET_MODEL_KEY")), spec, train_spec)
    write_resolved_spec(spec, Path(args.results_dir) / "inference_spec.resolved.yaml")
    return predictor


def _run_inference(args: argparse.Namespace) -> int:
    from bpnet.infer.run import list_inputs, run_inference

    predictor = _predictor(args)
    inputs = list_inputs(args.input_type, args.input, args.image_root_path)
    report = run_inference(predictor, inputs, args.results_dir, args.dump_visualizations)
    log.info("%d images, %d people -> %s/detection.json", report.images, report.people, args.results_dir)
    if report.errors:
        log.error("%d image(s) could not be read (listed in detection.json under 'errors')", len(report.errors))
        return EXIT_FAILED
    return 0


def _run_evaluate(args: argparse.Namespace) -> int:
    from bpnet.evaluate import evaluate
    from bpnet.specs import DatasetSpec, load_spec

    dataset = load_spec(args.dataset_spec, DatasetSpec, _inputs_context(args.dataset_spec, args))
    if args.num_visualizations < 0:
        raise _Usage(f"--num_visualizations: {args.num_visualizations} — expected 0 or a positive integer")
    metrics = evaluate(_predictor(args), dataset, args.results_dir, args.num_visualizations)
    log.info("AP %.4f AP50 %.4f AP75 %.4f APm %.4f APl %.4f AR %.4f -> %s/metrics.json", metrics["AP"],
             metrics["AP50"], metrics["AP75"], metrics["AP_medium"], metrics["AP_large"], metrics["AR"],
             args.results_dir)
    if metrics["errors"]:
        log.error("%d image(s) could not be read", len(metrics["errors"]))
        return EXIT_FAILED
    return 0


def _run_dataset_convert(args: argparse.Namespace) -> int:
    from pathlib import Path

    from bpnet.data.convert import ConvertError, ConvertOptions, convert_dataset
    from bpnet.specs import DatasetSpec, load_spec

    if not 1 <= args.num_shards <= MAX_SHARDS:
        raise _Usage(f"--num_shards: {args.num_shards} — expected an integer in [1, {MAX_SHARDS}]")
    spec = load_spec(args.dataset_spec, DatasetSpec, _inputs_context(args.dataset_spec, args))
    _output_dir("-o/--output_filename", str(Path(args.output_filename).parent))
    options = ConvertOptions(mode=args.mode, generate_masks=args.generate_masks, check_files=args.check_files,
                             skip_invalid=args.skip_invalid, num_shards=args.num_shards)
    try:
        summary = convert_dataset(spec, args.output_filename, options)
    except ConvertError as exc:
        log.error("%s", exc)
        log.error("nothing was written; fix the data or pass --skip_invalid to skip and count it")
        return EXIT_FAILED
    for line in summary.lines():
        log.info("%s", line)
    return 0


def _run_synth(args: argparse.Namespace) -> int:
    from bpnet.data.synth import generate

    counts = generate(args.output_dir, seed=args.seed, train_images=args.train_images, val_images=args.val_images)
    for split, c in counts.items():
        log.info("%s: %d images, %d annotations", split, c["images"], c["annotations"])
    log.info("dataset spec: %s/coco_spec.json", args.output_dir)
    return 0


class _Usage(Exception):
    """A bad command-line value discovered after parsing."""


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


def main(argv: Sequence[str] | None = None) -> int:
    from bpnet.specs import SpecError

    args = build_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ banner is not our log
    logging.getLogger("absl").setLevel(logging.WARNING)  # per-checkpoint chatter from TF's saver
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except SpecError as exc:
        for line in exc.lines:
            print(line, file=sys.stderr)
        return EXIT_BAD_SPEC
    except (ValueError, OSError, RuntimeError) as exc:  # failures found while working: no traceback
        if args.log_level == "DEBUG":
            raise
        log.error("%s", exc)
        return EXIT_FAILED
    except MemoryError:
        log.error("out of memory")
        return EXIT_FAILED
    except _Usage as exc:
        print(f"bpnet {args.sub_task}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_SPEC


if __name__ == "__main__":
    sys.exit(main())
