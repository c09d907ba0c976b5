"""Prediction backends and the image -> people path shared by inference and evaluation.

A backend turns a batch of network inputs into heatmaps and PAFs of every stage it has: Keras
model files (every stage) and exported ONNX files through ONNX Runtime (the one exported stage).
``Predictor`` adds what the inference spec says: preprocessing and its inverse, the output stage,
multi-scale averaging and decoding over the skeleton the model records.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import cv2
import numpy as np

from bpnet.errors import ModelError
from bpnet.infer.decode import DecodeParams, Person, decode
from bpnet.infer.network_input import STRIDE, InputPlan, plan, to_network_input
from bpnet.model.exported import HEAT_NAME, INPUT_NAME, PAF_NAME, ExportInfo, read_exported
from bpnet.pose import BPNET_SKELETON, Skeleton
from bpnet.specs.inference import InferenceSpec
from bpnet.specs.train import NormalizationParams, TrainSpec

if TYPE_CHECKING:
    import keras

log = logging.getLogger(__name__)


class ModelMismatchError(ModelError, ValueError):
    """The model does not fit the spec (channel counts, stages)."""


class Backend(Protocol):
    """What ``Predictor`` and the evaluator use of a model, whatever runs it."""

    stages: int
    heat_channels: int
    paf_channels: int
    skeleton: Skeleton  # the one the model file records
    export_info: ExportInfo | None  # the exported file's metadata (fixed input size, one stage); None: Keras

    def predict(self, batch: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """(heatmaps per stage, PAFs per stage) for a (N, H, W, 3) float32 batch."""


class KerasBackend:
    """A Keras model, from a file (``load``) or in memory (the trainer's learning curve)."""

    def __init__(self, model: keras.Model, name: str = "model", skeleton: Skeleton = BPNET_SKELETON):
        self.model, self.skeleton = model, skeleton
        outputs = self.model.outputs
        if len(outputs) % 2:
            raise ModelMismatchError(f"{name}: {len(outputs)} outputs; a BodyPoseNet model has heatmaps and "
                                     f"PAFs for every stage")
        self.stages = len(outputs) // 2
        self.heat_channels = int(outputs[0].shape[-1])
        self.paf_channels = int(outputs[self.stages].shape[-1])
        self.export_info = None

    def predict(self, batch: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        outputs = [np.asarray(o) for o in self.model(batch, training=False)]
        return outputs[: self.stages], outputs[self.stages:]

    @classmethod
    def load(cls, path: str | Path, key: str | None) -> KerasBackend:
        from bpnet.model.io import open_model

        loaded = open_model(path, key)
        return cls(loaded.model, str(path), loaded.skeleton)


class OnnxBackend:
    """An exported model (fp32 or INT8 QDQ) through ONNX Runtime on the CPU: one stage, fixed input
    size, any batch. The SDK-compatible deployable file is refused (its PAFs are at another stride)."""

    def __init__(self, path: str | Path, key: str | None):
        import onnxruntime as ort

        data, info = read_exported(path, key)
        if info.sdk_compatible:
            raise ModelMismatchError(f"{path}: an SDK-compatible deployable model (--sdk_compatible_model) is for "
                                     "deployment only; export without that flag for inference and evaluation")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        self.input, self.outputs = INPUT_NAME, [HEAT_NAME, PAF_NAME]
        by_name = {o.name: o for o in self.session.get_outputs()}
        if set(self.outputs) - set(by_name):
            raise ModelMismatchError(f"{path}: outputs {sorted(by_name)}, expected {self.outputs}")
        heat, paf = by_name[HEAT_NAME], by_name[PAF_NAME]
        self.stages, self.export_info, self.skeleton = 1, info, info.skeleton
        self.heat_channels, self.paf_channels = int(heat.shape[-1]), int(paf.shape[-1])

    def predict(self, batch: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        heat, paf = self.session.run(self.outputs, {self.input: batch.astype(np.float32, copy=False)})
        return [heat], [paf]


def open_backend(path: str | Path, key: str | None) -> Backend:
    """A Keras model file or an exported ONNX file (encrypted or not), told apart by content."""
    from bpnet.crypto import MAGIC, decrypt

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".engine", ".trt"):
        raise ModelMismatchError(f"{path}: TensorRT engines run on the GPU they were built for; evaluate the "
                                 "exported .etlt/.onnx (ONNX Runtime) here")
    try:
        head = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"{path}: cannot read model file: {exc.strerror}") from exc
    plain = decrypt(head, key, str(path)) if head.startswith(MAGIC) else head
    return KerasBackend.load(path, key) if plain[:2] == b"PK" else OnnxBackend(path, key)


def check_train_spec_skeleton(backend: Backend, train_spec: TrainSpec) -> None:
    """The model's skeleton must be the train spec's (its pose config, when that file is here: the
    data a train spec names need not be) and the channel counts the model section sets."""
    m = train_spec.model
    for name, have in (("heat_channels", backend.heat_channels), ("paf_channels", backend.paf_channels)):
        if getattr(m, name) is not None and getattr(m, name) != have:
            raise ModelMismatchError(f"model outputs {backend.heat_channels} heatmap / {backend.paf_channels} PAF "
                                     f"channels, the train spec's model.{name} says {getattr(m, name)}")
    if Path(train_spec.dataloader.pose_config.pose_config_path).is_file():
        spec = train_spec.skeleton
        if spec != backend.skeleton:
            raise ModelMismatchError(
                f"the model records the skeleton '{backend.skeleton.name}' ({backend.skeleton.num_joints} joints), "
                f"the train spec's pose config {train_spec.dataloader.pose_config.pose_config_path} is "
                f"'{spec.name}' ({spec.num_joints} joints)")


def decode_params(spec: InferenceSpec) -> DecodeParams:
    """Every decoder threshold comes from the inference spec."""
    return DecodeParams(
        heatmap_threshold=spec.heatmap_threshold, paf_threshold=spec.paf_threshold,
        upsampling=tuple(spec.output_upsampling_factor), num_samples=spec.paf_num_samples,
        min_paf_fraction=spec.paf_min_fraction, min_parts=spec.min_parts, min_person_score=spec.min_person_score)


@dataclass
class Prediction:
    people: list[Person]  # keypoints already in image coordinates
    plan: InputPlan


class Predictor:
    def __init__(self, backend: Backend, spec: InferenceSpec, train_spec: TrainSpec | None = None):
        self.backend, self.spec = backend, spec
        self.norm = train_spec.dataloader.normalization_params if train_spec else NormalizationParams()
        self.skeleton = backend.skeleton
        if train_spec is not None:
            check_train_spec_skeleton(backend, train_spec)
        stage = spec.output_stage_to_use
        info = backend.export_info
        if info is not None:
            if stage is not None and stage != info.stage:
                raise ModelMismatchError(f"output_stage_to_use {stage}: the exported model carries stage "
                                         f"{info.stage} only (chosen at export); set it to null")
            if spec.keep_aspect_ratio_mode == "adjust_network_input":
                raise ModelMismatchError("keep_aspect_ratio_mode adjust_network_input changes the network input "
                                         "size, which an exported model fixes; use pad_image_input or null")
            if tuple(spec.input_shape) != (info.height, info.width):
                raise ModelMismatchError(f"input_shape {list(spec.input_shape)}: the model was exported for "
                                         f"{info.height}x{info.width}")
            if spec.multi_scale_inference:
                raise ModelMismatchError("multi_scale_inference resizes the network input, which an exported "
                                         "model fixes; set it to false")
            stage = None
        elif stage is not None and stage > backend.stages:
            raise ModelMismatchError(f"output_stage_to_use {stage}: the model has {backend.stages} stages")
        self.stage = (stage or backend.stages) - 1
        self.params = decode_params(spec)

    def maps(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, InputPlan]:
        """Stride-8 heatmaps and PAFs for an RGB image (averaged over scales when multi-scale)."""
        spec = self.spec
        base = plan(image.shape[0], image.shape[1], spec.input_shape, spec.keep_aspect_ratio_mode)
        scales = spec.scales if spec.multi_scale_inference else [1.0]
        size = (base.net_w // STRIDE, base.net_h // STRIDE)
        heat_sum = paf_sum = None
        for factor in scales:
            p = plan(image.shape[0], image.shape[1], spec.input_shape, spec.keep_aspect_ratio_mode, factor)
            batch = to_network_input(image, p, self.norm.image_scale, self.norm.image_offset)[None]
            heats, pafs = self.backend.predict(batch)
            heat, paf = heats[self.stage][0], pafs[self.stage][0]
            if (heat.shape[1], heat.shape[0]) != size:  # to the base scale's grid, image content aligned
                heat = cv2.resize(heat, size, interpolation=cv2.INTER_CUBIC)
                paf = cv2.resize(paf, size, interpolation=cv2.INTER_CUBIC)
            heat_sum = heat if heat_sum is None else heat_sum + heat
            paf_sum = paf if paf_sum is None else paf_sum + paf
        return heat_sum / len(scales), paf_sum / len(scales), base

    def __call__(self, image: np.ndarray) -> Prediction:
        heat, paf, p = self.maps(image)
        people = decode(heat, paf, self.params, p.net_h, self.skeleton)
        for person in people:
            found = person.keypoints[:, 2] > 0
            person.keypoints[found, :2] = p.to_image(person.keypoints[found, :2])
        return Prediction(people, p)
