"""The deployable parts of a release in their real formats: Triton's model config protobuf, the
KServe CRD schema, DeepStream's documented config keys, the Python-backend decoder against
``bpnet inference``, and the runtime check of engine versions."""

from __future__ import annotations

import configparser
import json
import os
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import yaml

from bpnet.cli import main
from bpnet.layout import (
    EXPORT_SETTINGS_FILE,
    EXPORTED_FILE,
    EXPORTED_MODE,
    MODEL_FILE,
    SDK_CALIBRATION_CACHE,
    SDK_EXPORTED_FILE,
    TRAIN_SPEC_FILE,
)
from bpnet.model.exported import HEAT_NAME, INPUT_NAME, PAF_NAME, read_exported
from bpnet.pose import BPNET_SKELETON
from bpnet.release import int8_decision, read_latest
from bpnet.storage import open_store
from components import runtime
from tests.conftest import REPO

HERE = Path(__file__).parent
INFER = {"input_shape": [64, 96], "keep_aspect_ratio_mode": "pad_image_input", "heatmap_threshold": 0.02,
         "paf_threshold": 0.0, "min_parts": 1, "min_person_score": 0.0, "paf_min_fraction": 0.5}
# Gst-nvinfer's [property] keys (DeepStream Gst-nvinfer "configuration file properties" table)
NVINFER_KEYS = {
    "num-detected-classes", "net-scale-factor", "model-file", "proto-file", "int8-calib-file", "batch-size",
    "model-engine-file", "uff-file", "onnx-file", "enable-dbscan", "labelfile-path", "mean-file", "gie-unique-id",
    "operate-on-gie-id", "operate-on-class-ids", "interval", "input-object-min-width", "input-object-min-height",
    "input-object-max-width", "input-object-max-height", "uff-input-dims", "uff-input-blob-name", "network-mode",
    "offsets", "output-blob-names", "parse-bbox-func-name", "custom-lib-path", "model-color-format",
    "classifier-async-mode", "process-mode", "classifier-threshold", "secondary-reinfer-interval",
    "output-tensor-meta", "enable-dla", "use-dla-core", "network-type", "maintain-aspect-ratio",
    "symmetric-padding", "parse-classifier-func-name", "custom-network-config", "tlt-encoded-model",
    "tlt-model-key", "segmentation-threshold", "workspace-size", "force-implicit-batch-dim", "infer-dims",
    "engine-create-func-name", "cluster-mode", "filter-out-class-ids", "scaling-filter", "scaling-compute-hw",
    "output-io-formats", "layer-device-precision", "network-input-order", "gpu-id", "uff-input-order",
    "classifier-type", "crop-objects-to-roi-boundary", "output-instance-mask", "disable-output-host-copy"}
CLASS_ATTRS_KEYS = {"threshold", "pre-cluster-threshold", "post-cluster-threshold", "eps", "group-threshold",
                    "minBoxes", "dbscan-min-score", "nms-iou-threshold", "topk", "roi-top-offset",
                    "roi-bottom-offset", "detected-min-w", "detected-min-h", "detected-max-w", "detected-max-h",
                    "border-color", "bg-color"}
# deepstream_tao_apps configs/nvinfer/bodypose2d_tao/sample_bodypose2d_model_config.txt
BODYPOSE2D_KEYS = {"nmsWindowSize", "featUpsamplingFactor", "threshHeat", "threshVectorScore", "threshVectorCnt1",
                   "threshPartCnt", "threshHumanScore", "batchSize", "imageType", "numJoints", "jointEdges",
                   "connections"}


def _folder(root: Path, files: dict[str, Path | str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, src in files.items():
        if isinstance(src, Path):
            shutil.copy2(src, root / name)
        else:
            (root / name).write_text(src)
    return root


@pytest.fixture(scope="module")
def built(tiny_model, synth_dir, tmp_path_factory) -> dict[str, Path]:
    """The tiny model exported at 64x96 (fp32 + INT8, and SDK-compatible with the fitted cache)
    laid out as pipeline artifacts, and fake engines with their build records: two serving Triton,
    two (x86 DeepStream) serving DeepStream."""
    from bpnet.steps.calibrate import fit_calibration

    model, train_spec = tiny_model
    out = tmp_path_factory.mktemp("serving")
    assert main(["export", "-m", str(model), "-k", "tiny", "-o", str(out / "m.etlt"), "-e", str(train_spec),
                 "-d", "64,96,3", "--data_type", "int8", "--cal_image_dir", str(synth_dir / "val2017"),
                 "--cal_data_file", str(out / "cal.npy"), "--cal_cache_file", str(out / "cal.bin"),
                 "--batches", "2", "--batch_size", "2"]) == 0
    assert main(["export", "-m", str(model), "-k", "tiny", "-o", str(out / "m.sdk.etlt"), "-d", "64,96,3",
                 "--sdk_compatible_model"]) == 0
    fit_calibration(out / "m.etlt", out / "m.sdk.etlt", out / "cal.bin", out / "cal.sdk.bin", "tiny")
    spec = {MODEL_FILE: model, TRAIN_SPEC_FILE: train_spec}
    trained = _folder(out / "trained", spec)
    exported = _folder(out / "exported", {EXPORTED_FILE: out / "m.etlt", SDK_EXPORTED_FILE: out / "m.sdk.etlt",
                                          EXPORT_SETTINGS_FILE:
                                          json.dumps({"input_shape": [64, 96], "keep_aspect_ratio_mode":
                                                      EXPORTED_MODE})})
    int8 = _folder(out / "int8", {EXPORTED_FILE: out / "m.int8.etlt", "calibration.bin": out / "cal.bin",
                                  "calibration.tensorfile.npy": out / "cal.npy",
                                  SDK_CALIBRATION_CACHE: out / "cal.sdk.bin"})
    platform = {"tensorrt": "10.3.0", "cuda": "12.6", "l4t": None, "jetpack": None, "arch": "x86_64", "node": "gpu-1"}
    engines = _folder(out / "engines", {
        "gpu-fp16.engine": "not a real plan (no TensorRT here)", "gpu-fp16.engine.json": json.dumps(
            {"target": "gpu-fp16", "precision": "fp16", "max_batch_size": 4, "platform": platform}),
        "gpu-int8.engine": "not a real plan", "gpu-int8.engine.json": json.dumps(
            {"target": "gpu-int8", "precision": "int8", "max_batch_size": 2, "platform": platform})})
    streams = _folder(out / "ds_engines", {
        "ds-fp16.engine": "not a real plan", "ds-fp16.engine.json": json.dumps(
            {"target": "ds-fp16", "precision": "fp16", "max_batch_size": 1, "serves": "deepstream",
             "platform": platform}),
        "ds-int8.engine": "not a real plan", "ds-int8.engine.json": json.dumps(
            {"target": "ds-int8", "precision": "int8", "max_batch_size": 1, "serves": "deepstream",
             "platform": platform})})
    return {"trained": trained, "exported": exported, "int8": int8, "engines": engines, "ds_engines": streams,
            "out": out}


EVALS = {name: {"AP": ap, "AP50": ap, "AP75": ap, "AP_medium": ap, "AP_large": ap, "AR": ap}
         for name, ap in (("unpruned", 0.4), ("pruned", 0.3), ("retrained", 0.4), ("Keras (export mode)", 0.35),
                          ("ONNX fp32", 0.35), ("ONNX INT8", 0.1))}


def publish(built, root: Path, monkeypatch, int8_gate: str = "release int8", engines=("engines", "ds_engines"),
            **serving) -> Path:
    monkeypatch.setenv("BPNET_MODEL_KEY", "tiny")
    serving_options = {"plain_onnx": True, "memory": "4Gi", "accelerator_type": "gpu.example.com/a100",
                       "pool": {"node_selector": {"pool": "gpu"}, "tolerations": [
                           {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]},
                       **serving}
    pointer = runtime.publish(str(root), built["trained"], built["trained"], built["exported"], built["int8"], EVALS,
                              {"dataset_uri": "s3://d/coco"}, {}, [built[e] for e in engines], json.dumps(INFER),
                              json.dumps(serving_options), int8_gate)
    assert pointer["promoted"]
    return Path(pointer["uri"])


@pytest.fixture(scope="module")
def release(built, tmp_path_factory) -> Path:
    with pytest.MonkeyPatch.context() as mp:
        return publish(built, tmp_path_factory.mktemp("rel") / "releases", mp)


def parse_pbtxt(path: Path):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def test_every_triton_config_parses_and_matches_the_onnx_graph(release, built):
    import onnxruntime as ort
    from tritonclient.grpc import model_config_pb2 as mc

    onnx_bytes, _ = read_exported(built["exported"] / EXPORTED_FILE, "tiny")
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    onnx_io = {t.name: tuple(t.shape[1:]) for t in (*session.get_inputs(), *session.get_outputs())}
    configs = {p.parent.name: parse_pbtxt(p) for p in (release / "triton").glob("*/config.pbtxt")}
    assert set(configs) == {"bpnet_gpu_fp16", "bpnet_gpu_int8", "bpnet_onnx", "bpnet_preprocess", "bpnet_decode",
                            "bpnet_pose_gpu_fp16", "bpnet_pose_gpu_int8", "bpnet_pose_onnx"}
    for name, config in configs.items():
        assert config.name == name
    expected = {"bpnet_gpu_fp16": ("tensorrt_plan", 4, "model.plan"),
                "bpnet_gpu_int8": ("tensorrt_plan", 2, "model.plan"),
                "bpnet_onnx": ("onnxruntime_onnx", 8, "model.onnx")}
    for name, (platform, batch, file) in expected.items():
        config = configs[name]
        assert (config.platform, config.max_batch_size, config.HasField("dynamic_batching")) == (platform, batch, True)
        tensors = {t.name: tuple(t.dims) for t in (*config.input, *config.output)}
        assert tensors == onnx_io and set(onnx_io) == {INPUT_NAME, HEAT_NAME, PAF_NAME}
        assert all(t.data_type == mc.TYPE_FP32 for t in (*config.input, *config.output))
        assert (release / "triton" / name / "1" / file).is_file()
    assert (release / "triton/bpnet_onnx/1/model.onnx").read_bytes() == onnx_bytes
    for name in ("bpnet_preprocess", "bpnet_decode"):
        assert configs[name].backend == "python" and configs[name].parameters["stage"].string_value in name
        assert (release / "triton" / name / "1/model.py").read_text().startswith('"""The Triton Python-backend')
    for network in expected:
        ensemble = configs["bpnet_pose" + network.removeprefix("bpnet")]
        assert ensemble.platform == "ensemble" and [i.name for i in ensemble.input] == ["IMAGE"]
        steps = ensemble.ensemble_scheduling.step
        assert [s.model_name for s in steps] == ["bpnet_preprocess", network, "bpnet_decode"]
        produced = {"IMAGE"}
        for step in steps:  # every step reads tensors an earlier step made, under the model's own names
            model = configs[step.model_name]
            assert set(step.input_map) == {t.name for t in model.input}
            assert set(step.output_map) <= {t.name for t in model.output}
            assert set(step.input_map.values()) <= produced
            produced |= set(step.output_map.values())
        assert {o.name for o in ensemble.output} <= produced
        assert ensemble.max_batch_size <= min(configs[s.model_name].max_batch_size for s in steps)


KSERVE_TYPES = json.loads((HERE / "data/kserve/inferenceservice-v1beta1.types.json").read_text())
# Kubernetes resource.Quantity, the pattern of the CRD's quantity fields (int-or-string)
QUANTITY = re.compile(r"(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
                      r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?")
SCALARS = {"str": lambda v: isinstance(v, str), "bool": lambda v: isinstance(v, bool),
           "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
           "float": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
           "quantity": lambda v: (isinstance(v, int) and not isinstance(v, bool))
           or (isinstance(v, str) and QUANTITY.fullmatch(v) is not None),
           "object": lambda v: True}


def type_errors(value, type_string: str, where: str = "") -> list[str]:
    """Where ``value`` breaks KServe's generated type ``type_string`` (strict: every key must be a
    field of its type; the type strings are the OpenAPI generator's: list[T], dict(str, T), names)."""
    if type_string in SCALARS:
        return [] if SCALARS[type_string](value) else [f"{where}: {value!r} is not {type_string}"]
    if type_string.startswith("list["):
        if not isinstance(value, list):
            return [f"{where}: {value!r} is not a list"]
        return [e for k, item in enumerate(value) for e in type_errors(item, type_string[5:-1], f"{where}[{k}]")]
    if type_string.startswith("dict("):
        inner = type_string[5:-1].split(", ", 1)[1]
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            return [f"{where}: {value!r} is not a map of strings"]
        return [e for k, item in value.items() for e in type_errors(item, inner, f"{where}.{k}")]
    fields = KSERVE_TYPES["types"].get(type_string)
    if fields is None:
        return [f"{where}: type {type_string} is not in the vendored schema"]
    if not isinstance(value, dict):
        return [f"{where}: {value!r} is not a {type_string} object"]
    unknown = [f"{where}.{k}: not a field of {type_string}" for k in value if k not in fields]
    return unknown + [e for k, item in value.items() if k in fields
                      for e in type_errors(item, fields[k], f"{where}.{k}")]


def test_kserve_manifest_checks_against_kserve_published_types(release):
    """Every key of the manifest is a field of its KServe / Kubernetes type and every value has that
    field's type (types generated from KServe 0.21's OpenAPI models: tools/kserve_schema.py)."""
    service = yaml.safe_load((release / "kserve/inferenceservice.yaml").read_text())
    assert KSERVE_TYPES["kserve"] == "0.21.0" and KSERVE_TYPES["root"] == "V1beta1InferenceService"
    assert type_errors(service, "V1beta1InferenceService") == []
    assert (service["apiVersion"], service["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")
    assert set(service) == {"apiVersion", "kind", "metadata", "spec"}
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", service["metadata"]["name"])  # RFC 1123 label
    assert all(isinstance(v, str) for v in service["metadata"]["annotations"].values())
    predictor = service["spec"]["predictor"]
    assert predictor["model"]["storageUri"] == f"{release}/triton" and predictor["nodeSelector"] == {"pool": "gpu"}
    assert predictor["model"]["resources"]["limits"] == {"gpu.example.com/a100": "1", "memory": "4Gi"}
    assert predictor["model"]["modelFormat"]["name"] == "triton"
    assert predictor["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


@pytest.mark.parametrize("where, change, expected", [
    (("spec", "predictor", "model"), ("storageURI", "s3://x"), "spec.predictor.model.storageURI: not a field of "
                                                                "V1beta1ModelSpec"),
    (("spec", "predictor"), ("nodeSelectors", {"pool": "gpu"}), "not a field of V1beta1PredictorSpec"),
    (("spec", "predictor", "model", "resources", "limits"), ("memory", "4 gigs"), "is not quantity"),
    (("spec", "predictor"), ("minReplicas", "1"), "spec.predictor.minReplicas: '1' is not int"),
    (("spec", "predictor", "tolerations", 0), ("tolerationSeconds", True), "is not int"),
    (("metadata", "labels"), ("app", 3), "metadata.labels.app: 3 is not str"),
])
def test_kserve_type_check_catches_misspelt_keys_and_wrong_values(release, where, change, expected):
    service = yaml.safe_load((release / "kserve/inferenceservice.yaml").read_text())
    node = service
    for key in where:
        node = node[key]
    node[change[0]] = change[1]
    errors = type_errors(service, "V1beta1InferenceService")
    assert len(errors) == 1 and expected in errors[0]


def test_deepstream_configs_hold_only_documented_keys_and_the_model_facts(release):
    folders = sorted(p.name for p in (release / "deepstream").iterdir() if p.is_dir())
    assert folders == ["ds-fp16", "ds-int8", "onnx"]  # the engines serving DeepStream, and the plain ONNX
    for target in folders:
        parser = configparser.ConfigParser(strict=True)
        parser.read(release / "deepstream" / target / "pgie_config.txt")
        assert set(parser.sections()) == {"property", "class-attrs-all"}
        prop = parser["property"]
        assert set(prop) <= NVINFER_KEYS and set(parser["class-attrs-all"]) <= CLASS_ATTRS_KEYS
        assert prop["infer-dims"] == "3;64;96" and prop["network-input-order"] == "1"
        assert prop["output-blob-names"].split(";") == [PAF_NAME, HEAT_NAME]
        assert float(prop["net-scale-factor"]) == 1 / 256 and prop["offsets"] == "128.0;128.0;128.0"
        for key in ("model-engine-file", "onnx-file", "int8-calib-file"):
            if key in prop:
                assert (release / "deepstream" / target / prop[key]).resolve().is_file(), key
        assert ("int8-calib-file" in prop) == (target == "ds-int8")
        files = {k: (release / "deepstream" / target / prop[k]).resolve().relative_to(release.resolve()).as_posix()
                 for k in ("model-engine-file", "onnx-file", "int8-calib-file") if k in prop}
        assert files == {"ds-fp16": {"model-engine-file": "engines/ds-fp16.engine"},
                         "ds-int8": {"model-engine-file": "engines/ds-int8.engine",
                                     "int8-calib-file": f"calibration/{SDK_CALIBRATION_CACHE}"},
                         "onnx": {"onnx-file": "deepstream/onnx/model.onnx"}}[target]
        lines = (release / "deepstream" / target / "bodypose2d_model_config.txt").read_text().splitlines()
        pairs = [line.split("=", 1) for line in lines if line and not line.startswith("#")]
        assert {k for k, _ in pairs} <= BODYPOSE2D_KEYS
        edges = [tuple(int(v) for v in value.split(",")) for k, value in pairs if k == "jointEdges"]
        assert edges == list(BPNET_SKELETON.limbs)  # PAF-channel order, from bpnet.pose
        assert dict(pairs)["numJoints"] == str(BPNET_SKELETON.num_joints)
        assert dict(pairs)["threshHeat"] == str(INFER["heatmap_threshold"])
    readme = (release / "deepstream/README.md").read_text()
    assert "deepstream-bodypose2d-app" in readme and "SDK-compatible model" in readme
    assert "Note:" not in readme  # no caveat: the engines are built from the SDK-compatible export


def test_deepstream_gets_the_sdk_compatible_model_and_triton_the_standard_one(release, built):
    import onnxruntime as ort

    sdk, info = read_exported(built["exported"] / SDK_EXPORTED_FILE, "tiny")
    assert info.sdk_compatible and (release / "deepstream/onnx/model.onnx").read_bytes() == sdk
    session = ort.InferenceSession(str(release / "deepstream/onnx/model.onnx"), providers=["CPUExecutionProvider"])
    heat, paf = session.run([HEAT_NAME, PAF_NAME], {INPUT_NAME: np.zeros((1, 64, 96, 3), np.float32)})
    assert heat.shape[1:3] == (8, 12) and paf.shape[1:3] == (32, 48)  # what the app's parser expects
    assert (release / f"calibration/{SDK_CALIBRATION_CACHE}").read_bytes() == \
        (built["int8"] / SDK_CALIBRATION_CACHE).read_bytes()
    assert (release / f"onnx/{SDK_EXPORTED_FILE}").is_file()
    assert not any("ds" in p.name for p in (release / "triton").iterdir())  # Triton serves its engines only
    metadata = json.loads((release / "MANIFEST.json").read_text())["metadata"]
    assert metadata["served"]["deepstream"] == ["ds-fp16", "ds-int8", "onnx"]
    assert {t: e["serves"] for t, e in metadata["engines"].items()} == {
        "gpu-fp16": "triton", "gpu-int8": "triton", "ds-fp16": "deepstream", "ds-int8": "deepstream"}
    assert "- DeepStream (SDK-compatible model): ds-fp16, ds-int8, onnx" in (release / "MODEL_CARD.md").read_text()


@pytest.mark.parametrize(("engines", "present", "absent"), [
    (("engines",), {"triton", "kserve"}, {"deepstream"}),
    (("ds_engines",), {"deepstream"}, {"triton", "kserve"}),
])
def test_a_release_writes_the_configs_of_what_its_engines_serve_only(built, tmp_path, monkeypatch, engines, present,
                                                                      absent):
    release = publish(built, tmp_path / "releases", monkeypatch, engines=engines, plain_onnx=False)
    assert all((release / d).exists() for d in present) and not any((release / d).exists() for d in absent)
    card = (release / "MODEL_CARD.md").read_text()
    assert ("Triton ensembles" in card) == ("triton" in present) and ("DeepStream (" in card) == (
        "deepstream" in present)


def _stand_in_pb_utils() -> types.ModuleType:
    """A thin stand-in for Triton's triton_python_backend_utils (only what the model calls)."""
    pb = types.ModuleType("triton_python_backend_utils")

    class Tensor:
        def __init__(self, name: str, array: np.ndarray):
            self.name, self.array = name, array

        def as_numpy(self) -> np.ndarray:
            return self.array

    class InferenceResponse:
        def __init__(self, output_tensors, error=None):
            self.outputs, self.error = {t.name: t.array for t in output_tensors}, error

    class TritonError:
        def __init__(self, message: str):
            self.message = message

    pb.Tensor, pb.InferenceResponse, pb.TritonError = Tensor, InferenceResponse, TritonError
    pb.get_input_tensor_by_name = lambda request, name: request.get(name)
    return pb


def _load_stage(release: Path, name: str, monkeypatch):
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", _stand_in_pb_utils())
    source = release / "triton" / name / "1/model.py"
    module = types.ModuleType(f"triton_{name}")
    exec(compile(source.read_text(), str(source), "exec"), module.__dict__)  # as Triton loads model.py
    config = parse_pbtxt(release / "triton" / name / "config.pbtxt")
    from google.protobuf import json_format

    model = module.TritonPythonModel()
    model.initialize({"model_config": json.dumps(json_format.MessageToDict(config, preserving_proto_field_name=True))})
    return model


def test_python_backend_decoder_gives_the_keypoints_of_bpnet_inference(release, built, synth_dir, tmp_path,
                                                                       monkeypatch):
    import onnxruntime as ort

    from bpnet.preprocess import read_image

    image = sorted((synth_dir / "val2017").glob("*.jpg"))[0]
    pre, post = (_load_stage(release, n, monkeypatch) for n in ("bpnet_preprocess", "bpnet_decode"))
    pb = sys.modules["triton_python_backend_utils"]
    rgb = read_image(image)
    [prepared] = pre.execute([{"IMAGE": pb.Tensor("IMAGE", rgb[None])}])
    session = ort.InferenceSession(str(release / "triton/bpnet_onnx/1/model.onnx"), providers=["CPUExecutionProvider"])
    heat, paf = session.run([HEAT_NAME, PAF_NAME], {INPUT_NAME: prepared.outputs[INPUT_NAME]})
    [answer] = post.execute([{HEAT_NAME: pb.Tensor(HEAT_NAME, heat), PAF_NAME: pb.Tensor(PAF_NAME, paf),
                              "PLAN": pb.Tensor("PLAN", prepared.outputs["PLAN"])}])
    count = int(answer.outputs["PEOPLE"][0, 0])

    spec = tmp_path / "infer.yaml"
    spec.write_text(yaml.safe_dump({**INFER, "model_path": str(built["exported"] / EXPORTED_FILE),
                                    "train_spec": str(built["trained"] / TRAIN_SPEC_FILE)}))
    monkeypatch.setenv("BPNET_MODEL_KEY", "tiny")
    assert main(["inference", "-i", str(spec), "--input_type", "image", "--input", str(image), "-r",
                 str(tmp_path / "out")]) == 0
    people = json.loads((tmp_path / "out/detection.json").read_text())["images"][0]["people"]
    assert count == min(len(people), 20) > 0  # low thresholds: the tiny model finds someone; max_people 20
    people = people[:count]  # both sorted by score
    got = answer.outputs["KEYPOINTS"][0, :count]
    want = np.array([p["keypoints"] for p in people])
    np.testing.assert_allclose(got[..., :2], want[..., :2], atol=0.01)  # detection.json rounds to 0.01 px
    np.testing.assert_allclose(got[..., 2], want[..., 2], atol=1e-5)
    np.testing.assert_allclose(answer.outputs["SCORES"][0, :count], [p["score"] for p in people], atol=1e-5)
    assert not answer.outputs["KEYPOINTS"][0, count:].any()


def test_runtime_check_refuses_an_engine_of_another_tensorrt(release):
    def check(platform: dict, *args: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "BPNET_PLATFORM": json.dumps(platform)}
        return subprocess.run([sys.executable, str(release / "check_runtime.py"), str(release), *args],
                              capture_output=True, text=True, env=env, timeout=60, check=False)

    same = {"tensorrt": "10.3.0", "arch": "x86_64", "l4t": None}
    assert check(same).returncode == 0
    other = check({**same, "tensorrt": "8.6.1"}, "gpu-fp16")
    assert other.returncode == 1
    assert "refused: gpu-fp16: TensorRT 8.6.1 here, the engine was built with 10.3.0 (CUDA 12.6" in other.stderr
    jetson = check({**same, "arch": "aarch64", "l4t": "36.3.0"})
    assert jetson.returncode == 1 and "CPU architecture aarch64 here" in jetson.stderr
    assert check(same, "jetson-int8").returncode == 1
    manifest = json.loads((release / "MANIFEST.json").read_text())["metadata"]
    engine = manifest["engines"]["gpu-fp16"]
    assert (engine["tensorrt"], engine["cuda"], engine["node"]) == ("10.3.0", "12.6", "gpu-1")
    assert engine["max_batch_size"] == 4 and engine["serves"] == "triton"
    assert manifest["evaluations"]["ONNX INT8"]["AP"] == 0.1
    card = (release / "MODEL_CARD.md").read_text()
    assert "| gpu-fp16 | fp16 | 4 | 10.3.0 | 12.6 |" in card and "| Keras (export mode) | 0.3500 |" in card


def test_int8_gate_and_a_release_without_int8(built, tmp_path, monkeypatch):
    ok, why = int8_decision(0.35, 0.34, 0.02)
    assert ok and "INT8 AP 0.3400 >= fp32 AP 0.3500" in why
    ok, why = int8_decision(0.35, 0.10, 0.02)
    assert not ok and why.startswith("INT8 not released: INT8 AP 0.1000 < fp32 AP 0.3500 - 0.0200")
    assert "export.cal_batches" in why and "test images" in why
    assert not int8_decision(0.35, float("nan"), 0.02)[0]
    release = publish(built, tmp_path / "releases", monkeypatch, int8_gate=f"hold: {why}")
    files = {p.relative_to(release).as_posix() for p in release.rglob("*") if p.is_file()}
    assert not any("int8" in f or f.startswith("calibration/") for f in files), sorted(files)
    assert "engines/gpu-fp16.engine" in files and (release / "deepstream/ds-fp16").is_dir()
    assert not (release / "deepstream/ds-int8").exists()
    assert why in (release / "MODEL_CARD.md").read_text()
    assert json.loads((release / "MANIFEST.json").read_text())["metadata"]["int8"] == f"hold: {why}"
    open_store(str(release)).fetch(tmp_path / "fetched")  # complete and verified against its manifest
    assert read_latest(str(tmp_path / "releases"))["uri"] == str(release)


def test_no_plain_onnx_by_default(built, tmp_path, monkeypatch):
    release = publish(built, tmp_path / "releases", monkeypatch, plain_onnx=False)
    assert not list(release.rglob("*.onnx")) and not (release / "deepstream/onnx").exists()
    assert {p.name for p in (release / "triton").iterdir()} == {
        "bpnet_gpu_fp16", "bpnet_gpu_int8", "bpnet_preprocess", "bpnet_decode", "bpnet_pose_gpu_fp16",
        "bpnet_pose_gpu_int8"}


def test_without_engines_or_plain_onnx_the_release_says_it_is_not_servable(built, tmp_path, monkeypatch):
    monkeypatch.setenv("BPNET_MODEL_KEY", "tiny")
    pointer = runtime.publish(str(tmp_path / "releases"), built["trained"], built["trained"], built["exported"],
                              built["int8"], EVALS, {}, {}, [], json.dumps(INFER), '{"plain_onnx": false}')
    release = Path(pointer["uri"])
    assert not any((release / d).exists() for d in ("triton", "deepstream", "kserve"))
    assert "not servable as released: no Triton/DeepStream/KServe files" in (release / "MODEL_CARD.md").read_text()


def test_the_repository_demo_spec_ships_a_servable_cpu_model():
    from pipelines.arguments import load_run_spec

    assert load_run_spec(REPO / "specs/pipeline/local.yaml").release.plain_onnx  # make run: ONNX CPU model
    assert not load_run_spec(REPO / "specs/pipeline/cluster.yaml").release.plain_onnx
