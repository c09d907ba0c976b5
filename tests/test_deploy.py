"""Export (ONNX parity, encryption, the deployable variant), INT8 calibration (tensorfile, TensorRT
cache, QDQ model), the ONNX Runtime backend, and build_engine around a missing TensorRT."""

from __future__ import annotations

import importlib.util
import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from bpnet.cli import main
from bpnet.deploy.calibration import build_tensorfile, graph_tensors, read_trt_cache
from bpnet.deploy.engine import EnginePlan, cache_for_version, parse_profile, trt_version_code
from bpnet.errors import DataError, ModelError, UsageError
from bpnet.infer.predict import ModelMismatchError, OnnxBackend
from bpnet.layout import (
    CALIBRATION_CACHE,
    EXPORT_SETTINGS_FILE,
    EXPORTED_FILE,
    EXPORTED_MODE,
    SDK_CALIBRATION_CACHE,
    SDK_EXPORTED_FILE,
    engine_record,
)
from bpnet.model.exported import read_exported
from bpnet.model.io import ModelKeyError, load_model
from bpnet.settings import EngineSettings, EngineTarget

HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None


@pytest.fixture(scope="module")
def exported(tiny_model, synth_dir, tmp_path_factory) -> dict[str, Path]:
    """The tiny model exported at 64x96, fp32 and INT8 (4 batches of 2 val images)."""
    model, train_spec = tiny_model
    out = tmp_path_factory.mktemp("export")
    code = main(["export", "-m", str(model), "-k", "tiny", "-o", str(out / "m.etlt"), "-e", str(train_spec),
                 "-d", "64,96,3", "--data_type", "int8", "--cal_image_dir", str(synth_dir / "val2017"),
                 "--cal_data_file", str(out / "cal.npy"), "--cal_cache_file", str(out / "cal.bin"),
                 "--batches", "4", "--batch_size", "2"])
    assert code == 0
    return {"fp32": out / "m.etlt", "int8": out / "m.int8.etlt", "cache": out / "cal.bin",
            "tensorfile": out / "cal.npy", "dir": out, "model": model, "train_spec": train_spec}


@pytest.mark.parametrize("dims", [(64, 96), (96, 64)])
@pytest.mark.parametrize("batch", [1, 4])
def test_onnx_runtime_matches_keras(tiny_model, tmp_path, dims, batch):
    model_file, _ = tiny_model
    out = tmp_path / "m.etlt"
    assert main(["export", "-m", str(model_file), "-k", "tiny", "-o", str(out), "-d", f"{dims[0]},{dims[1]},3"]) == 0
    keras_model = load_model(model_file, key="tiny")
    x = np.random.default_rng(batch).uniform(-0.5, 0.5, (batch, *dims, 3)).astype(np.float32)
    outputs = [np.asarray(o) for o in keras_model(x, training=False)]
    stages = len(outputs) // 2
    heats, pafs = OnnxBackend(out, "tiny").predict(x)
    assert heats[0].shape == outputs[stages - 1].shape and pafs[0].shape == outputs[-1].shape
    assert np.abs(heats[0] - outputs[stages - 1]).max() < 1e-4
    assert np.abs(pafs[0] - outputs[-1]).max() < 1e-4


def test_exported_file_is_encrypted_and_describes_itself(exported):
    assert not exported["fp32"].read_bytes().startswith(b"\x08")  # not a bare ONNX protobuf
    with pytest.raises(ModelKeyError, match="wrong key"):
        read_exported(exported["fp32"], "not-the-key")
    _, info = read_exported(exported["fp32"], "tiny")
    assert (info.height, info.width, info.stage, info.stages, info.precision) == (64, 96, 2, 2, "fp32")
    assert read_exported(exported["int8"], "tiny")[1].precision == "int8"


def test_wrong_key_on_an_exported_file_is_a_clear_cli_error(exported, synth_dir, tmp_path, caplog):
    spec = tmp_path / "infer.yaml"
    spec.write_text(yaml.safe_dump({"input_shape": [64, 96], "keep_aspect_ratio_mode": "pad_image_input"}))
    code = main(["inference", "-i", str(spec), "-m", str(exported["fp32"]), "-k", "nope", "--input_type", "dir",
                 "--input", str(synth_dir / "val2017"), "-r", str(tmp_path / "out")])
    assert code == 1 and "wrong key" in caplog.text


def test_calibration_cache_is_trt_text_for_graph_tensors(exported):
    header, scales = read_trt_cache(exported["cache"])
    assert header.startswith("TRT-") and header.endswith("EntropyCalibration2")
    data, _ = read_exported(exported["fp32"], "tiny")
    names = graph_tensors(data)
    assert scales and set(scales) <= names and "input_1" in scales
    assert all(math.isfinite(s) and s > 0 for s in scales.values())
    lines = exported["cache"].read_text().splitlines()[1:]
    assert all(len(line.rpartition(": ")[2]) == 8 for line in lines)


def test_tensorfile_holds_the_preprocessed_batches(exported):
    tensors = np.load(exported["tensorfile"])
    assert tensors.shape == (4, 2, 64, 96, 3) and tensors.dtype == np.float32
    assert -0.6 < tensors.min() and tensors.max() < 0.6  # (pixel / 256) - 0.5


def test_existing_cache_and_tensorfile_are_reused(exported, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    cache_before = exported["cache"].read_bytes()
    out = tmp_path / "again.int8.etlt"
    code = main(["calibrate", "-m", str(exported["fp32"]), "-k", "tiny", "-o", str(out),
                 "--cal_data_file", str(exported["tensorfile"]), "--cal_cache_file", str(exported["cache"]),
                 "--batches", "4", "--batch_size", "2"])  # no image dir: the tensorfile must be reused
    assert code == 0 and out.is_file()
    assert exported["cache"].read_bytes() == cache_before
    assert "calibration skipped" in caplog.text and "reusing tensorfile" in caplog.text


def test_too_few_calibration_images_is_a_clear_error(exported, synth_dir, tmp_path, caplog):
    code = main(["calibrate", "-m", str(exported["fp32"]), "-k", "tiny", "--cal_image_dir",
                 str(synth_dir / "val2017"), "--cal_data_file", str(tmp_path / "t.npy"), "--cal_cache_file",
                 str(tmp_path / "c.bin"), "--batches", "5", "--batch_size", "2"])
    assert code == 1
    assert "8 usable (.jpg/.jpeg/.png/.bmp), but cal_batches x cal_batch_size = 10 are needed" in caplog.text
    assert "--batches/--batch_size, or export.cal_batches/cal_batch_size in a run spec" in caplog.text
    assert not (tmp_path / "t.npy").exists() and not (tmp_path / "c.bin").exists()


def test_mismatched_tensorfile_is_refused(tmp_path):
    np.save(tmp_path / "t.npy", np.zeros((2, 1, 8, 8, 3), np.float32))
    with pytest.raises(DataError, match=r"holds float32 \(2, 1, 8, 8, 3\), expected float32 \(4, 1, 8, 8, 3\)"):
        build_tensorfile(None, tmp_path / "t.npy", 4, 1, 8, 8, (256.0,) * 3, (0.5,) * 3)
    for garbage in (b"", b"not a tensorfile"):
        (tmp_path / "t.npy").write_bytes(garbage)
        with pytest.raises(DataError, match="t.npy: not a NumPy .npy tensorfile; remove it"):
            build_tensorfile(None, tmp_path / "t.npy", 4, 1, 8, 8, (256.0,) * 3, (0.5,) * 3)
    with open(tmp_path / "t.npy", "wb") as archive:  # an .npz archive under the tensorfile's name
        np.savez(archive, data=np.zeros((4, 1, 8, 8, 3), np.float32))
    with pytest.raises(DataError, match="t.npy: not a NumPy .npy tensorfile; remove it"):
        build_tensorfile(None, tmp_path / "t.npy", 4, 1, 8, 8, (256.0,) * 3, (0.5,) * 3)


def test_inference_and_evaluate_run_exported_fp32_and_int8_models(exported, synth_dir, tmp_path):
    spec = tmp_path / "infer.yaml"
    spec.write_text(yaml.safe_dump({"train_spec": str(exported["train_spec"]), "input_shape": [64, 96],
                                    "keep_aspect_ratio_mode": "pad_image_input", "heatmap_threshold": 0.1}))
    for name in ("fp32", "int8"):
        out = tmp_path / name
        assert main(["evaluate", "-i", str(spec), "-d", str(synth_dir / "coco_spec.json"), "-m",
                     str(exported[name]), "-r", str(out), "-k", "tiny"]) == 0
        assert 0.0 <= json.loads((out / "metrics.json").read_text())["AP"] <= 1.0
    assert main(["inference", "-i", str(spec), "-m", str(exported["int8"]), "-k", "tiny", "--input_type", "dir",
                 "--input", str(synth_dir / "val2017"), "-r", str(tmp_path / "inf")]) == 0


@pytest.mark.parametrize(("change", "message"), [
    ({"keep_aspect_ratio_mode": "adjust_network_input"}, "adjust_network_input changes the network input size"),
    ({"input_shape": [96, 96]}, "the model was exported for 64x96"),
    ({"output_stage_to_use": 1}, "carries stage 2 only"),
])
def test_exported_models_without_export_json_refuse_what_they_cannot_do(exported, synth_dir, tmp_path, caplog,
                                                                        change, message):
    """An exported file away from its export.json is fed as the spec says, and refuses what it cannot do."""
    alone = tmp_path / "alone" / "m.etlt"
    alone.parent.mkdir()
    alone.write_bytes(exported["fp32"].read_bytes())
    spec = tmp_path / "infer.yaml"
    spec.write_text(yaml.safe_dump({"input_shape": [64, 96], "keep_aspect_ratio_mode": "pad_image_input",
                                    **change}))
    code = main(["inference", "-i", str(spec), "-m", str(alone), "-k", "tiny", "--input_type", "dir",
                 "--input", str(synth_dir / "val2017"), "-r", str(tmp_path / "out")])
    assert code == 1 and message in caplog.text


def test_evaluate_and_inference_feed_an_exported_model_as_its_export_json_says(exported, synth_dir, tmp_path,
                                                                              caplog):
    """``bpnet evaluate`` and ``inference`` of an exported model take its input size and padding mode
    from the export.json beside it (the spec here says 368x368, adjust_network_input, multi-scale,
    stage 1: none of which the 64x96 export can do), as the pipeline's steps do."""
    spec = tmp_path / "infer.yaml"
    spec.write_text(yaml.safe_dump({"train_spec": str(exported["train_spec"]), "multi_scale_inference": True,
                                    "output_stage_to_use": 1, "heatmap_threshold": 0.2}))
    caplog.set_level("INFO")
    assert main(["evaluate", "-i", str(spec), "-d", str(synth_dir / "coco_spec.json"), "-m", str(exported["fp32"]),
                 "-r", str(tmp_path / "eval"), "-k", "tiny"]) == 0
    assert main(["inference", "-i", str(spec), "-m", str(exported["int8"]), "-k", "tiny", "--input_type", "dir",
                 "--input", str(synth_dir / "val2017"), "-r", str(tmp_path / "inf")]) == 0
    for out in ("eval", "inf"):
        used = yaml.safe_load((tmp_path / out / "inference_spec.resolved.yaml").read_text())
        assert (used["input_shape"], used["keep_aspect_ratio_mode"]) == ([64, 96], EXPORTED_MODE), out
        assert (used["multi_scale_inference"], used["output_stage_to_use"], used["heatmap_threshold"]) == (
            False, None, 0.2), out  # the spec's other fields apply
    assert "fed as" in caplog.text and "export.json" in caplog.text


@pytest.fixture(scope="module")
def sdk_export(exported) -> Path:
    """The same tiny model's SDK-compatible export at 64x96 (another tf2onnx run: other tensor names)."""
    out = exported["dir"] / "m.sdk.etlt"
    assert main(["export", "-m", str(exported["model"]), "-k", "tiny", "-o", str(out), "-d", "64,96,3",
                 "--sdk_compatible_model"]) == 0
    return out


def test_sdk_compatible_model_upsamples_pafs_and_is_refused_for_inference(sdk_export):
    import onnxruntime as ort

    out = sdk_export
    data, info = read_exported(out, "tiny")
    assert info.sdk_compatible
    heat, paf = ort.InferenceSession(data).run(None, {"input_1": np.zeros((1, 64, 96, 3), np.float32)})
    assert heat.shape[1:3] == (8, 12) and paf.shape[1:3] == (32, 48)  # 1/8 and 1/2 of the input
    with pytest.raises(ModelMismatchError, match="for deployment only"):
        OnnxBackend(out, "tiny")


def test_the_guides_deployable_int8_export_calibrates_the_sdk_graph(exported, synth_dir, tmp_path, caplog):
    """The TLT guide's SDK-compatible INT8 export (its flags; fewer batches): the standard export's
    tensorfile is reused untouched, the cache is a calibration of the SDK graph itself (the upsampled
    PAFs included) that the pipeline's fitted cache matches (bounds on the upsampled PAFs), no QDQ
    model is written, and without TensorRT the engine is skipped, not failed."""
    import onnx

    from bpnet.deploy.calibration import activation_ranges, trt_scale
    from bpnet.steps.calibrate import fit_calibration

    caplog.set_level(logging.INFO)
    tensorfile = exported["tensorfile"]
    before = tensorfile.stat().st_mtime_ns, tensorfile.read_bytes()
    out, cache, engine = tmp_path / "m.deploy.etlt", tmp_path / "calibration.64.96.deploy.bin", tmp_path / "m.engine"
    assert main(["export", "-m", str(exported["model"]), "-o", str(out), "-k", "tiny", "-d", "64,96,3",
                 "-e", str(exported["train_spec"]), "-t", "tfonnx", "--data_type", "int8",
                 "--cal_image_dir", str(synth_dir / "val2017"), "--cal_cache_file", str(cache),
                 "--cal_data_file", str(tensorfile), "--batch_size", "2", "--batches", "4", "--max_batch_size", "1",
                 "--data_format", "channels_last", "--engine_file", str(engine), "--sdk_compatible_model"]) == 0
    assert (tensorfile.stat().st_mtime_ns, tensorfile.read_bytes()) == before and "reusing tensorfile" in caplog.text
    sdk, info = read_exported(out, "tiny")
    assert info.sdk_compatible and info.precision == "fp32"
    _, scales = read_trt_cache(cache)
    measured = {n: trt_scale(*r) for n, r in activation_ranges(sdk, "input_1", np.load(tensorfile), "entropy").items()}
    assert set(scales) == set(measured) and set(scales) <= graph_tensors(sdk)
    assert scales == pytest.approx(measured, rel=1e-5)
    upsampled = [o for n in onnx.load_model_from_string(sdk).graph.node if n.op_type == "ConvTranspose"
                 for o in n.output]
    assert len(upsampled) == 1 and upsampled[0] in scales and "paf_out" in scales
    fitted = fit_calibration(exported["fp32"], out, exported["cache"], tmp_path / "fitted.bin", "tiny")
    _, route = read_trt_cache(fitted.cache)  # the pipeline's route: the standard cache fitted to this export
    assert set(route) == set(scales)
    for name in scales:
        if name in (upsampled[0], "paf_out"):  # the fitted scale bounds the measured one
            assert route[name] >= scales[name] * (1 - 1e-6), name
        else:
            assert route[name] == pytest.approx(scales[name], rel=1e-5), name
    assert not (tmp_path / "m.deploy.int8.etlt").exists() and "no ONNX Runtime QDQ INT8 model" in caplog.text
    assert exported["int8"].is_file()  # the standard int8 export still writes its QDQ model
    if not HAS_TENSORRT:
        assert not engine.exists() and "engine NOT built" in caplog.text
        assert "TensorRT is not installed here" in caplog.text


def test_calibrate_refuses_the_sdk_compatible_model(exported, sdk_export, tmp_path, caplog):
    code = main(["calibrate", "-m", str(sdk_export), "-k", "tiny", "--cal_data_file", str(exported["tensorfile"]),
                 "--cal_cache_file", str(tmp_path / "c.bin"), "--batches", "4", "--batch_size", "2"])
    assert code == 1 and "refuse SDK-compatible models" in caplog.text and not (tmp_path / "c.bin").exists()


def test_engine_plan_and_profiles_are_checked_without_tensorrt(tmp_path):
    profile = parse_profile("input_1,1x224x320x3,4x224x320x3,8x224x320x3")
    assert (profile.min, profile.opt, profile.max) == ((1, 224, 320, 3), (4, 224, 320, 3), (8, 224, 320, 3))
    for bad in ("input_1,1x224x320x3,4x224x320x3", "input_1,4x224x320x3,1x224x320x3,8x224x320x3",
                "input_1,1x224x320,4x224x320x3,8x224x320x3", "input_1,1by224,1x1,1x1"):
        with pytest.raises(UsageError):
            parse_profile(bad)
    with pytest.raises(UsageError, match="needs a calibration cache"):
        EnginePlan(EngineSettings(data_type="int8"))
    plan = EnginePlan(EngineSettings(data_type="fp16", max_batch_size=4, dla_core=0))
    assert plan.default_profile("input_1", (368, 368, 3))[0].max == (4, 368, 368, 3)
    assert "DLA core 0 (GPU fallback)" in plan.describe()


@pytest.mark.skipif(HAS_TENSORRT, reason="TensorRT is installed: the missing-TensorRT path cannot be exercised")
def test_build_engine_without_tensorrt_is_a_clear_error(exported, tmp_path, caplog):
    code = main(["build_engine", str(exported["fp32"]), "-k", "tiny", "-e", str(tmp_path / "m.engine"), "-t", "int8",
                 "-c", str(exported["cache"]), "-p", "input_1,1x64x96x3,1x64x96x3,2x64x96x3"])
    assert code == 1 and "TensorRT is not installed here" in caplog.text
    assert not (tmp_path / "m.engine").exists() and not engine_record(tmp_path / "m.engine").exists()


@pytest.mark.skipif(HAS_TENSORRT, reason="TensorRT is installed: export builds the engine")
def test_export_without_tensorrt_writes_onnx_and_says_why_no_engine(exported, tmp_path, caplog):
    out = tmp_path / "m.etlt"
    assert main(["export", "-m", str(exported["model"]), "-k", "tiny", "-o", str(out), "-d", "64,96,3",
                 "--data_type", "fp16", "--engine_file", str(tmp_path / "m.engine")]) == 0
    assert out.is_file() and not (tmp_path / "m.engine").exists()
    assert not engine_record(tmp_path / "m.engine").exists()  # no engine: no record claiming its versions
    assert json.loads((tmp_path / EXPORT_SETTINGS_FILE).read_text())["input_shape"] == [64, 96]
    assert "engine NOT built" in caplog.text and "TensorRT is not installed here" in caplog.text


def test_int8_model_keeps_the_output_heads_in_float(exported):
    import onnx

    from bpnet.deploy.calibration import output_heads

    fp32, _ = read_exported(exported["fp32"], "tiny")
    heads = output_heads(fp32)
    assert len(heads) == 2 and all(h.split("/")[-2].startswith(("heatmap_out", "paf_out")) for h in heads)
    int8 = onnx.load_model_from_string(read_exported(exported["int8"], "tiny")[0])
    ops = {n.op_type for n in int8.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # the rest is quantized
    head_inputs = [i for n in int8.graph.node if n.name in heads for i in n.input]
    producers = {o: n.op_type for n in int8.graph.node for o in n.output}
    weights = [i for n in int8.graph.node if n.name in heads for i in n.input[1:]]
    assert weights and all(producers.get(w) != "DequantizeLinear" for w in weights)  # float weights and bias
    assert head_inputs


def test_the_engine_build_path_imports_no_tensorflow_or_keras():
    """The Jetson image has TensorRT and ONNX but no TensorFlow: build_engine must not need it."""
    import subprocess
    import sys

    code = ("import sys; from bpnet.cli import build_parser; build_parser(); "
            "from bpnet.deploy import engine, onnx_export, calibration; import bpnet.crypto; "
            "from components import runtime; "
            "bad = sorted(m for m in ('tensorflow', 'keras', 'tf2onnx') if m in sys.modules); "
            "print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr[-1000:]


def test_calibration_cache_header_follows_the_building_tensorrt(exported):
    assert (trt_version_code("8.6.1"), trt_version_code("10.3.0"), trt_version_code("10.16.1.11")) == (
        8601, 100300, 101601)
    cache = exported["cache"].read_bytes()
    rewritten = cache_for_version(cache, "10.16.1.11")
    assert rewritten.split(b"\n", 1)[0] == b"TRT-101601-EntropyCalibration2"
    assert rewritten.split(b"\n", 1)[1] == cache.split(b"\n", 1)[1]  # the scales are untouched


def test_cache_lines_hold_the_big_endian_float32_scale(tmp_path):
    from bpnet.deploy.calibration import write_trt_cache

    write_trt_cache({"t": (-1.27, 1.0)}, tmp_path / "c.bin", header="TRT-100300-EntropyCalibration2")
    assert (tmp_path / "c.bin").read_text() == "TRT-100300-EntropyCalibration2\nt: 3c23d70a\n"  # 0.01


# entropy is the costly one (a histogram search per tensor, ~1 min on 2 cores): make test-all
@pytest.mark.parametrize("method", [pytest.param("entropy", marks=pytest.mark.slow), "percentile", "minmax"])
def test_every_calibration_method_gives_ranges_for_the_graph(exported, method):
    from bpnet.deploy.calibration import activation_ranges

    data, _ = read_exported(exported["fp32"], "tiny")
    ranges = activation_ranges(data, "input_1", np.load(exported["tensorfile"]), method)
    assert ranges and set(ranges) <= graph_tensors(data)
    assert all(math.isfinite(lo) and math.isfinite(hi) and lo <= hi for lo, hi in ranges.values())


def test_entropy_clips_heavy_tails_that_minmax_keeps():
    import onnx
    from onnx import TensorProto, helper

    from bpnet.deploy.calibration import activation_ranges

    graph = helper.make_graph([helper.make_node("Relu", ["input_1"], ["y"])], "g",
                              [helper.make_tensor_value_info("input_1", TensorProto.FLOAT, [None, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 64])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    data = np.abs(np.random.default_rng(0).standard_normal((20, 8, 64))).astype(np.float32)
    data[0, 0, 0] = 100.0  # one outlier
    proto = onnx.shape_inference.infer_shapes(model).SerializeToString()
    entropy = activation_ranges(proto, "input_1", data, "entropy")["y"][1]
    minmax = activation_ranges(proto, "input_1", data, "minmax")["y"][1]
    assert minmax == pytest.approx(100.0) and entropy < 20.0


def test_a_cache_of_another_model_is_refused(exported, tmp_path, caplog):
    foreign = tmp_path / "foreign.bin"
    foreign.write_text("TRT-100300-EntropyCalibration2\nsome/other/tensor: 3c23d70a\n")
    code = main(["calibrate", "-m", str(exported["fp32"]), "-k", "tiny", "-o", str(tmp_path / "x.etlt"),
                 "--cal_data_file", str(exported["tensorfile"]), "--cal_cache_file", str(foreign),
                 "--batches", "4", "--batch_size", "2"])
    assert code == 1 and "not a cache of this model" in caplog.text


@pytest.mark.parametrize(("content", "why"), [(b"\xff\xfe\x00", "not text"), (b"hello\n", "no TRT-... header"),
                                            (b"TRT-1\nconv: zzzzzzzz\n", "line 2: expected '<tensor>: <8 hex")])
def test_a_cache_that_is_not_tensorrt_text_is_a_model_error(tmp_path, content, why):
    (tmp_path / "c.bin").write_bytes(content)
    with pytest.raises(ModelError, match=why):
        read_trt_cache(tmp_path / "c.bin")


def test_int8_model_uses_the_cache_scales(exported):
    import onnx
    from onnx import numpy_helper

    _, scales = read_trt_cache(exported["cache"])
    int8 = onnx.load_model_from_string(read_exported(exported["int8"], "tiny")[0])
    init = {i.name: numpy_helper.to_array(i) for i in int8.graph.initializer}
    q_scales = {n.input[0]: float(init[n.input[1]]) for n in int8.graph.node
                if n.op_type == "QuantizeLinear" and n.input[1] in init and init[n.input[1]].size == 1}
    # Every activation scale in the QDQ model comes from the cache: the tensor's own, or (a conv output
    # fused with its ReLU, as TensorRT does too) the scale of the ReLU's output.
    cache_values = sorted(scales.values())
    assert q_scales and all(any(v == pytest.approx(c, rel=1e-6) for c in cache_values) for v in q_scales.values())
    same = [t for t in set(q_scales) & set(scales) if q_scales[t] == pytest.approx(scales[t], rel=1e-6)]
    assert len(same) >= len(q_scales) // 2


def test_full_bpnet_model_exports_and_calibrates(synth_dir, tmp_path):
    """BpNetModel (tiny width, attention, the c128 conv) through export, ONNX Runtime and INT8 calibration."""
    from bpnet.model.architecture import FULL, Architecture, default_filters
    from bpnet.model.bpnet import build_model
    from bpnet.model.io import save_model

    arch = Architecture(stages=2, class_name=FULL, use_self_attention=True, add_final_c128_conv=True,
                        filters=default_filters(2, True, 0.125, class_name=FULL, add_final_c128_conv=True))
    keras_model = build_model(arch, seed=5)
    model_file = save_model(keras_model, tmp_path / "full.tlt", key="full")
    out = tmp_path / "full.etlt"
    assert main(["export", "-m", str(model_file), "-k", "full", "-o", str(out), "-d", "64,96,3",
                 "--data_type", "int8", "--cal_image_dir", str(synth_dir / "val2017"),
                 "--cal_data_file", str(tmp_path / "cal.npy"), "--cal_cache_file", str(tmp_path / "cal.bin"),
                 "--batches", "2", "--batch_size", "2", "--cal_method", "percentile"]) == 0
    x = np.random.default_rng(0).uniform(-0.5, 0.5, (2, 64, 96, 3)).astype(np.float32)
    expected = [np.asarray(o) for o in keras_model(x, training=False)]
    heats, pafs = OnnxBackend(out, "full").predict(x)
    assert np.abs(heats[0] - expected[1]).max() < 1e-4 and np.abs(pafs[0] - expected[3]).max() < 1e-4
    _, scales = read_trt_cache(tmp_path / "cal.bin")
    assert "input_1" in scales and all(math.isfinite(s) and s > 0 for s in scales.values())
    int8_heats, int8_pafs = OnnxBackend(tmp_path / "full.int8.etlt", "full").predict(x)
    assert int8_heats[0].shape == heats[0].shape and int8_pafs[0].shape == pafs[0].shape
    assert np.isfinite(int8_heats[0]).all() and np.isfinite(int8_pafs[0]).all()


def test_the_fitted_cache_bounds_a_calibration_of_the_sdk_model_itself(exported, sdk_export, tmp_path):
    """The standard export's cache (minmax here, to compare like with like) fitted to the SDK export
    has the tensor set of a minmax calibration of the SDK export on the same images, equal scales
    where the graphs compute the same, and upper bounds on the added (upsampled) PAF tensors."""
    import onnx

    from bpnet.deploy.calibration import activation_ranges, trt_scale, write_trt_cache
    from bpnet.steps.calibrate import fit_calibration

    tensors = np.load(exported["tensorfile"])
    standard, _ = read_exported(exported["fp32"], "tiny")
    sdk, _ = read_exported(sdk_export, "tiny")
    write_trt_cache(activation_ranges(standard, "input_1", tensors, "minmax"), tmp_path / "std.bin")
    fitted = fit_calibration(exported["fp32"], sdk_export, tmp_path / "std.bin", tmp_path / "sdk.bin", "tiny")
    header, derived = read_trt_cache(fitted.cache)
    measured = {n: trt_scale(*r) for n, r in activation_ranges(sdk, "input_1", tensors, "minmax").items()}
    assert header == read_trt_cache(tmp_path / "std.bin")[0] and set(derived) == set(measured)
    assert fitted.tensors == len(derived) and set(derived) <= graph_tensors(sdk)
    assert fitted.derived == 2 and fitted.renamed > 0  # upsampling + its Transpose; tf2onnx renamed some
    producer = {o: n.op_type for n in onnx.load_model_from_string(sdk).graph.node for o in n.output}
    added = {n for n in derived if producer.get(n) == "ConvTranspose"}
    added.add("paf_out")  # same name as in the standard export, but another tensor (1/2, not 1/8)
    assert len(added) == 2
    for name in derived:
        if name in added:
            assert derived[name] >= measured[name] * (1 - 1e-6), name
        else:
            assert derived[name] == pytest.approx(measured[name], rel=1e-5), name


def _graph(nodes, weights=()):
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input_1", TensorProto.FLOAT, [1, 2, 4, 4])],
                              [helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(w, name) for name, w in weights])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


@pytest.mark.parametrize(("node", "weights", "message"), [
    # stride 2: 2 channels x 1 tap x 2
    ("ConvTranspose", 2.0, "ConvTranspose whose taps per output position sum to 4 > 1"),
    ("Mul", 3.0, "Mul is not known to keep the range of its input"),
])
def test_derive_scales_refuses_an_op_that_could_widen_the_range(node, weights, message):
    from onnx import helper

    from bpnet.deploy.calibration import derive_scales

    relu = helper.make_node("Relu", ["input_1"], ["r"], name="relu_std")
    standard = _graph([relu])
    w = np.full((2, 2, 2, 2) if node == "ConvTranspose" else (1,), weights, np.float32)
    extra = helper.make_node(node, ["r_sdk", "w"], ["y"], name="added",
                             **({"strides": [2, 2]} if node == "ConvTranspose" else {}))
    sdk = _graph([helper.make_node("Relu", ["input_1"], ["r_sdk"], name="relu_sdk"), extra], [("w", w)])
    scales = {"input_1": 0.004, "r": 0.002}
    with pytest.raises(ModelError, match=message):
        derive_scales(standard, scales, sdk)
    bilinear = np.full((2, 2, 2, 2), 0.25 / 2, np.float32)  # taps of a phase sum to 1 over 2 input channels
    ok = _graph([helper.make_node("Relu", ["input_1"], ["r_sdk"], name="relu_sdk"),
                 helper.make_node("ConvTranspose", ["r_sdk", "w"], ["y"], strides=[1, 1])], [("w", bilinear)])
    fitted = derive_scales(standard, scales, ok)
    assert fitted.scales == {"input_1": 0.004, "r_sdk": 0.002, "y": 0.002}
    assert (fitted.derived, fitted.renamed) == ({"y"}, 1)


def test_a_cache_is_fitted_only_to_the_sdk_export_of_its_own_model(exported, tmp_path):
    from bpnet.steps.calibrate import fit_calibration

    with pytest.raises(ModelError, match="not the SDK-compatible fp32 export of"):
        fit_calibration(exported["fp32"], exported["fp32"], exported["cache"], tmp_path / "x.bin", "tiny")
    assert not (tmp_path / "x.bin").exists()


PLATFORM = {"tensorrt": "10.3.0", "node": "gpu-node-1"}  # BPNET_PLATFORM: what the stubbed machine has


def _stub_tensorrt(monkeypatch) -> list[tuple[EnginePlan, tuple[int, ...]]]:
    """Stand in for the TensorRT build only (absent here; everything around it runs): each call's
    plan and input dims are kept, and a stand-in plan is written where the engine goes."""
    from bpnet.deploy import engine

    calls = []

    def build(onnx_bytes: bytes, plan: EnginePlan, dims: tuple[int, ...], dest, input_name: str = "input_1") -> Path:
        calls.append((plan, dims))
        Path(dest).write_bytes(b"not a real plan")
        return Path(dest)

    monkeypatch.setattr(engine, "build_engine", build)
    monkeypatch.setenv("BPNET_PLATFORM", json.dumps(PLATFORM))
    return calls


def _fake_export(path: Path, height: int, width: int, sdk_compatible: bool) -> Path:
    """An exported file as the engine build reads it before TensorRT: an empty graph with bpnet's
    metadata (input size, SDK-compatible or not), unencrypted."""
    import onnx

    from bpnet.model.exported import ExportInfo, set_metadata, write_exported

    proto = onnx.helper.make_model(onnx.helper.make_graph([], "g", [], []))
    set_metadata(proto, ExportInfo(height, width, 2, 2, sdk_compatible))
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_exported(proto, path, None)


@pytest.mark.parametrize(("serves", "precision", "dims", "cache"), [
    ("triton", "int8", (64, 96, 3), CALIBRATION_CACHE),
    ("deepstream", "int8", (32, 48, 3), SDK_CALIBRATION_CACHE),
    ("deepstream", "fp16", (32, 48, 3), None),
])
def test_build_engine_builds_what_serves_it_from_its_export_and_cache(tmp_path, monkeypatch, serves, precision,
                                                                       dims, cache):
    """The pipeline's build_engine around TensorRT (absent here: only the build itself is stubbed):
    the export (the standard one is 64x96 here, the SDK-compatible one 32x48) and cache it picks by
    ``serves``, and the build record the step writes, which says what the engine serves."""
    from components import runtime

    calls = _stub_tensorrt(monkeypatch)
    _fake_export(tmp_path / "exported" / EXPORTED_FILE, 64, 96, sdk_compatible=False)
    _fake_export(tmp_path / "exported" / SDK_EXPORTED_FILE, 32, 48, sdk_compatible=True)
    (tmp_path / "int8").mkdir()
    for name in (CALIBRATION_CACHE, SDK_CALIBRATION_CACHE):
        (tmp_path / "int8" / name).write_text("TRT-8600-EntropyCalibration2\n")
    target = EngineTarget(name="t", pool="gpu", precision=precision, max_batch_size=2, serves=serves)
    out = runtime.build_engine(tmp_path / "exported", tmp_path / "int8", target.model_dump(mode="json"), 1 << 30,
                               tmp_path / "out")
    [(plan, built_dims)] = calls
    assert built_dims == dims and (plan.calibration_cache and Path(plan.calibration_cache).name) == cache
    assert out["serves"] == serves
    record = json.loads(engine_record(tmp_path / "out/t.engine").read_text())
    assert {k: record[k] for k in ("target", "precision", "max_batch_size", "serves")} == {
        "target": "t", "precision": precision, "max_batch_size": 2, "serves": serves}
    assert {k: record["platform"][k] for k in PLATFORM} == PLATFORM


def test_an_engine_built_by_hand_has_its_record_and_the_release_takes_it(tmp_path, monkeypatch):
    """``bpnet build_engine`` writes the build record the pipeline's engines have (the step writes
    it, not the component), so a release takes an engine built by hand; TensorRT is stubbed."""
    from bpnet.release import EngineBuild

    _stub_tensorrt(monkeypatch)
    exported = _fake_export(tmp_path / "m.sdk.etlt", 64, 96, sdk_compatible=True)
    engine = tmp_path / "ds-fp16.engine"
    assert main(["build_engine", str(exported), "-e", str(engine), "-t", "fp16", "-m", "4"]) == 0
    built = EngineBuild.from_file(engine)
    assert (built.target, built.precision, built.max_batch_size, built.serves) == ("ds-fp16", "fp16", 4, "deepstream")
    assert {k: built.platform[k] for k in PLATFORM} == PLATFORM


def test_the_release_refuses_an_engine_without_its_build_record_naming_it(tmp_path):
    from bpnet.artifacts import ArtifactError
    from bpnet.release import EngineBuild

    engine = tmp_path / "gpu-fp16.engine"
    engine.write_bytes(b"not a real plan")
    with pytest.raises(ArtifactError, match=r"gpu-fp16\.engine: no readable build record .*gpu-fp16\.engine\.json.*"
                                         r"bpnet build_engine"):
        EngineBuild.from_file(engine)


def test_bpnet_export_writes_the_export_json_the_pipeline_export_writes(exported, tmp_path, monkeypatch):
    """The export step writes ``export.json`` (how the exported model is fed), so ``bpnet export``
    (the fixture's, at 64x96) and the pipeline's export leave the same file."""
    from components import runtime

    monkeypatch.setenv("BPNET_MODEL_KEY", "tiny")
    runtime.export(exported["model"].parent, json.dumps({"input_shape": [64, 96]}), tmp_path / "exported")
    by_hand = json.loads((exported["dir"] / EXPORT_SETTINGS_FILE).read_text())
    assert by_hand == json.loads((tmp_path / "exported" / EXPORT_SETTINGS_FILE).read_text())
    assert by_hand == {"input_shape": [64, 96], "keep_aspect_ratio_mode": EXPORTED_MODE}
