"""Keras model -> ONNX (tf2onnx), and the exported file: encrypted like model files, self-describing.

The exported graph has one input, ``input_1`` (N, H, W, 3) float32 with a dynamic batch, and the
heatmap and PAF outputs of one stage (the last by default), named ``heatmap_out`` and
``paf_out``. ONNX metadata records the input size, the stage, and whether the file is the
SDK-compatible deployable model (``--sdk_compatible_model``: PAFs upsampled 4x to 1/2 of the
input by a fixed transposed convolution, heatmaps left at 1/8 — the post-processing the published
deployable model carries for DeepStream). That variant is for deployment only: the inference and
evaluation backends refuse it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bpnet.artifacts import atomic_write_bytes
from bpnet.crypto import MAGIC, decrypt, encrypt
from bpnet.specs.base import check_input_shape

log = logging.getLogger(__name__)

INPUT_NAME = "input_1"
HEAT_NAME, PAF_NAME = "heatmap_out", "paf_out"
OPSET = 17
META_PREFIX = "bpnet."
PAF_UPSAMPLING = 4  # deployable model: stride 8 -> 2


@dataclass(frozen=True)
class ExportInfo:
    """What an exported file says about itself (ONNX metadata)."""

    height: int
    width: int
    stage: int
    stages: int
    sdk_compatible: bool
    precision: str = "fp32"  # fp32 | int8 (QDQ)

    def props(self) -> dict[str, str]:
        return {f"{META_PREFIX}{k}": str(v) for k, v in self.__dict__.items()}

    @classmethod
    def from_props(cls, props: dict[str, str], where: str) -> ExportInfo:
        try:
            return cls(height=int(props["bpnet.height"]), width=int(props["bpnet.width"]),
                       stage=int(props["bpnet.stage"]), stages=int(props["bpnet.stages"]),
                       sdk_compatible=props["bpnet.sdk_compatible"] == "True",
                       precision=props.get("bpnet.precision", "fp32"))
        except KeyError as exc:
            raise ValueError(f"{where}: not an ONNX model exported by bpnet (no {exc.args[0]} metadata)") from None


def bilinear_kernel(factor: int, channels: int) -> np.ndarray:
    """Conv2DTranspose kernel (k, k, out, in) upsampling each channel by ``factor`` bilinearly."""
    size = 2 * factor - factor % 2
    centre = factor - 1 if size % 2 == 1 else factor - 0.5
    ramp = 1 - np.abs(np.arange(size) - centre) / factor
    kernel = np.zeros((size, size, channels, channels), np.float32)
    for c in range(channels):
        kernel[:, :, c, c] = np.outer(ramp, ramp)
    return kernel


def deployable_model(model, stage: int | None = None, sdk_compatible: bool = False):
    """A Keras model with the input and the two outputs of ``stage`` (1-based; None = last)."""
    import keras

    from bpnet.model.bpnet import split_outputs

    stages = len(model.outputs) // 2
    chosen = stage or stages
    if not 1 <= chosen <= stages:
        raise ValueError(f"output stage {chosen}: the model has stages 1..{stages}")
    heats, pafs = split_outputs(model.outputs, stages)
    heat, paf = heats[chosen - 1], pafs[chosen - 1]
    if sdk_compatible:
        channels = int(paf.shape[-1])
        up = keras.layers.Conv2DTranspose(channels, 2 * PAF_UPSAMPLING, strides=PAF_UPSAMPLING, padding="same",
                                          use_bias=False, trainable=False, name="paf_upsample")
        paf = up(paf)
        up.set_weights([bilinear_kernel(PAF_UPSAMPLING, channels)])
    return keras.Model(model.inputs, [heat, paf], name="bpnet_deployable"), chosen, stages


def to_onnx(model, height: int, width: int, stage: int | None = None, sdk_compatible: bool = False):
    """The ONNX ModelProto of ``model``'s chosen stage for (H, W) inputs, any batch."""
    import tensorflow as tf
    import tf2onnx

    check_input_shape((height, width))
    deployable, chosen, stages = deployable_model(model, stage, sdk_compatible)
    spec = (tf.TensorSpec((None, height, width, 3), tf.float32, name=INPUT_NAME),)

    @tf.function(input_signature=spec)
    def forward(images):
        heat, paf = deployable(images, training=False)
        return {HEAT_NAME: tf.identity(heat, name=HEAT_NAME), PAF_NAME: tf.identity(paf, name=PAF_NAME)}

    proto, _ = tf2onnx.convert.from_function(forward, input_signature=spec, opset=OPSET)
    info = ExportInfo(height, width, chosen, stages, sdk_compatible)
    set_metadata(proto, info)
    return proto, info


def set_metadata(proto, info: ExportInfo) -> None:
    keep = [p for p in proto.metadata_props if not p.key.startswith(META_PREFIX)]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    for key, value in info.props().items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


def write_exported(proto, path: str | Path, key: str | None) -> Path:
    """Serialize (and encrypt with ``key``, as model files are) atomically."""
    data = proto.SerializeToString()
    atomic_write_bytes(path, encrypt(data, key) if key else data)
    return Path(path)


def read_exported(path: str | Path, key: str | None) -> tuple[bytes, ExportInfo]:
    """The ONNX bytes of an exported file (decrypted) and its metadata."""
    import onnx

    path = Path(path)
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise FileNotFoundError(f"{path}: cannot read exported model: {exc.strerror}") from exc
    data = decrypt(blob, key, str(path)) if blob.startswith(MAGIC) else blob
    try:
        proto = onnx.load_model_from_string(data)
    except Exception as exc:  # onnx raises DecodeError subclasses without a common public base
        raise ValueError(f"{path}: not an ONNX model ({type(exc).__name__})") from None
    return data, ExportInfo.from_props({p.key: p.value for p in proto.metadata_props}, str(path))
