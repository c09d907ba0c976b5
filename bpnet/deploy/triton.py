"""A release's ``triton/``: a Triton model repository made from the exported model's own facts.

- one ``tensorrt_plan`` model per engine target (``bpnet_<target>/1/model.plan``), with the
  input/output names, dims and data types read from the exported ONNX graph and
  ``max_batch_size`` from the engine's build profile;
- an ``onnxruntime_onnx`` model (``bpnet_onnx``, CPU) only when the release may ship the plain
  ONNX (the run spec's ``release.plain_onnx``);
- ``bpnet_preprocess`` / ``bpnet_decode``: the Python-backend model ``bpnet.deploy.triton_model``;
- ``bpnet_pose_<network>``: an ensemble image -> network -> people for every network model.

Every network model batches dynamically (``dynamic_batching {}``); the composing models and
ensembles take the network's ``max_batch_size``, so a batch is images of one size.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from pathlib import Path

from bpnet.deploy import triton_model
from bpnet.errors import ModelError, UsageError
from bpnet.infer.decode import DecodeParams
from bpnet.pose import Skeleton

ONNX_TO_TRITON = {1: "TYPE_FP32", 2: "TYPE_UINT8", 3: "TYPE_INT8", 6: "TYPE_INT32", 7: "TYPE_INT64",
                  10: "TYPE_FP16", 11: "TYPE_FP64", 9: "TYPE_BOOL"}
PREPROCESS, DECODE = "bpnet_preprocess", "bpnet_decode"


@dataclass(frozen=True)
class TensorSpec:
    """One model input/output as Triton describes it: dims without the batch axis."""

    name: str
    data_type: str
    dims: tuple[int, ...]


@dataclass(frozen=True)
class NetworkIO:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def by_name(self, name: str) -> TensorSpec:
        return next(t for t in (*self.inputs, *self.outputs) if t.name == name)


def network_io(onnx_bytes: bytes) -> NetworkIO:
    """Names, Triton data types and per-item dims (batch axis dropped) of an ONNX graph."""
    import onnx

    graph = onnx.load_model_from_string(onnx_bytes).graph

    def spec(value) -> TensorSpec:
        t = value.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim)
        if t.elem_type not in ONNX_TO_TRITON:
            raise ModelError(f"tensor {value.name}: ONNX element type {t.elem_type} has no Triton data type")
        return TensorSpec(value.name, ONNX_TO_TRITON[t.elem_type], dims[1:])

    initializers = {i.name for i in graph.initializer}
    return NetworkIO(tuple(spec(v) for v in graph.input if v.name not in initializers),
                     tuple(spec(v) for v in graph.output))


def _tensors(kind: str, tensors: list[TensorSpec]) -> list[str]:
    lines = [f"{kind} ["]
    for i, t in enumerate(tensors):
        lines.append(f'  {{ name: "{t.name}" data_type: {t.data_type} dims: [ {", ".join(map(str, t.dims))} ] }}'
                     + ("," if i < len(tensors) - 1 else ""))
    return [*lines, "]"]


def model_config(name: str, kind: str, max_batch_size: int, inputs: list[TensorSpec], outputs: list[TensorSpec],
                 extra: list[str] = ()) -> str:
    """``config.pbtxt`` text (protobuf text format of Triton's ModelConfig)."""
    head = f'name: "{name}"\n{kind}\nmax_batch_size: {max_batch_size}'
    return "\n".join([head, *_tensors("input", inputs), *_tensors("output", outputs), *extra]) + "\n"


def _parameters(values: dict[str, str]) -> list[str]:
    return [f'parameters: {{ key: "{k}" value: {{ string_value: {json.dumps(v)} }} }}' for k, v in values.items()]


def write_network_model(repo: Path, name: str, io: NetworkIO, max_batch_size: int, model_file: Path,
                        platform: str) -> Path:
    """``<repo>/<name>/config.pbtxt`` and ``1/model.plan|model.onnx`` (the file copied in)."""
    folder = repo / name
    (folder / "1").mkdir(parents=True, exist_ok=True)
    target = folder / "1" / ("model.plan" if platform == "tensorrt_plan" else "model.onnx")
    target.write_bytes(model_file.read_bytes())
    kind = "KIND_GPU" if platform == "tensorrt_plan" else "KIND_CPU"
    extra = [f"instance_group [ {{ kind: {kind} count: 1 }} ]", "dynamic_batching { }"]
    (folder / "config.pbtxt").write_text(model_config(name, f'platform: "{platform}"', max_batch_size,
                                                      list(io.inputs), list(io.outputs), extra))
    return folder


def people_outputs(max_people: int, skeleton: Skeleton) -> tuple[TensorSpec, ...]:
    """What the decoder (and so every ensemble) answers: up to ``max_people`` people."""
    return (TensorSpec(triton_model.KEYPOINTS, "TYPE_FP32", (max_people, skeleton.num_joints, 3)),
            TensorSpec(triton_model.SCORES, "TYPE_FP32", (max_people,)),
            TensorSpec(triton_model.PEOPLE, "TYPE_INT32", (1,)))


def write_python_models(repo: Path, io: NetworkIO, max_batch_size: int, params: DecodeParams,
                        image_scale: tuple[float, ...], image_offset: tuple[float, ...], max_people: int,
                        heatmap_name: str, paf_name: str, skeleton: Skeleton) -> None:
    """The preprocess and decode models (one source, ``stage`` parameter)."""
    net_in = io.inputs[0]
    settings = triton_model.settings_from(params, image_scale, image_offset, (net_in.dims[0], net_in.dims[1]),
                                          {"input_name": net_in.name, "heatmap_name": heatmap_name,
                                           "paf_name": paf_name}, max_people, skeleton)
    plan = TensorSpec(triton_model.PLAN, "TYPE_INT32", (6,))
    stages = {
        PREPROCESS: ("preprocess", [TensorSpec(triton_model.IMAGE, "TYPE_UINT8", (-1, -1, 3))], [net_in, plan]),
        DECODE: ("decode", [io.by_name(heatmap_name), io.by_name(paf_name), plan],
                 list(people_outputs(max_people, skeleton)))}
    source = inspect.getsource(triton_model)
    for name, (stage, inputs, outputs) in stages.items():
        folder = repo / name
        (folder / "1").mkdir(parents=True, exist_ok=True)
        (folder / "1" / "model.py").write_text(source)
        extra = ["instance_group [ { kind: KIND_CPU count: 1 } ]",
                 *_parameters({"stage": stage, "bpnet": json.dumps(settings)})]
        (folder / "config.pbtxt").write_text(model_config(name, 'backend: "python"', max_batch_size, inputs,
                                                          outputs, extra))


def write_ensemble(repo: Path, network: str, io: NetworkIO, max_batch_size: int, heatmap_name: str,
                   paf_name: str, people: NetworkIO) -> str:
    """``bpnet_pose_<suffix>``: IMAGE -> preprocess -> ``network`` -> decode -> people."""
    name = "bpnet_pose" + network.removeprefix("bpnet")
    net_in = io.inputs[0].name

    def step(model: str, inputs: dict[str, str], outputs: dict[str, str]) -> str:
        ins = " ".join(f'input_map {{ key: "{k}" value: "{v}" }}' for k, v in inputs.items())
        outs = " ".join(f'output_map {{ key: "{k}" value: "{v}" }}' for k, v in outputs.items())
        return f'    {{ model_name: "{model}" model_version: -1 {ins} {outs} }}'

    plan = triton_model.PLAN
    steps = [step(PREPROCESS, {triton_model.IMAGE: triton_model.IMAGE}, {net_in: "network_input", plan: "plan"}),
             step(network, {net_in: "network_input"}, {heatmap_name: "heatmaps", paf_name: "pafs"}),
             step(DECODE, {heatmap_name: "heatmaps", paf_name: "pafs", plan: "plan"},
                  {t.name: t.name for t in people.outputs})]
    scheduling = ["ensemble_scheduling {", "  step [", ",\n".join(steps), "  ]", "}"]
    (repo / name).mkdir(parents=True, exist_ok=True)
    (repo / name / "1").mkdir(exist_ok=True)  # Triton wants a version folder for ensembles too;
    (repo / name / "1" / ".keep").write_text("")  # releases list files only, so it holds a placeholder
    (repo / name / "config.pbtxt").write_text(model_config(name, 'platform: "ensemble"', max_batch_size,
                                                           list(people.inputs), list(people.outputs), scheduling))
    return name


@dataclass(frozen=True)
class Network:
    """A network model to serve: its Triton name, platform, file and batch limit."""

    name: str
    platform: str  # tensorrt_plan | onnxruntime_onnx
    model_file: Path
    max_batch_size: int


def build_repository(repo: Path, onnx_bytes: bytes, networks: list[Network], params: DecodeParams,
                     image_scale: tuple[float, ...], image_offset: tuple[float, ...], max_people: int,
                     heatmap_name: str, paf_name: str, skeleton: Skeleton) -> list[str]:
    """The whole repository; returns the ensemble names (what clients call)."""
    if not networks:
        raise UsageError("no network to serve: no engine target was built and release.plain_onnx is false")
    io = network_io(onnx_bytes)
    for network in networks:
        write_network_model(repo, network.name, io, network.max_batch_size, network.model_file, network.platform)
    write_python_models(repo, io, max(n.max_batch_size for n in networks), params, image_scale, image_offset,
                        max_people, heatmap_name, paf_name, skeleton)
    people = NetworkIO((TensorSpec(triton_model.IMAGE, "TYPE_UINT8", (-1, -1, 3)),),
                       people_outputs(max_people, skeleton))
    return [write_ensemble(repo, n.name, io, n.max_batch_size, heatmap_name, paf_name, people) for n in networks]
