"""Keras model -> ONNX (tf2onnx): the graph of one stage, in the exported file format that
``bpnet.model.exported`` defines (names, metadata, encryption).

``--sdk_compatible_model`` builds the deployable variant: PAFs upsampled 4x to 1/2 of the input
by a fixed transposed convolution, heatmaps left at 1/8 (the post-processing the published
deployable model carries for DeepStream). That variant is for deployment only: the inference and
evaluation backends refuse it.
"""

from __future__ import annotations

import numpy as np

from bpnet.errors import ModelError
from bpnet.model.exported import HEAT_NAME, INPUT_NAME, PAF_NAME, ExportInfo, set_metadata
from bpnet.pose import BPNET_SKELETON, Skeleton
from bpnet.specs.base import check_input_shape

OPSET = 17
PAF_UPSAMPLING = 4  # deployable model: stride 8 -> 2


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
        raise ModelError(f"output stage {chosen}: the model has stages 1..{stages}")
    heats, pafs = split_outputs(model.outputs, stages)
    heat, paf = heats[chosen - 1], pafs[chosen - 1]
    if sdk_compatible:
        channels = int(paf.shape[-1])
        up = keras.layers.Conv2DTranspose(channels, 2 * PAF_UPSAMPLING, strides=PAF_UPSAMPLING, padding="same",
                                          use_bias=False, trainable=False, name="paf_upsample")
        paf = up(paf)
        up.set_weights([bilinear_kernel(PAF_UPSAMPLING, channels)])
    return keras.Model(model.inputs, [heat, paf], name="bpnet_deployable"), chosen, stages


def to_onnx(model, height: int, width: int, stage: int | None = None, sdk_compatible: bool = False,
            skeleton: Skeleton = BPNET_SKELETON):
    """The ONNX ModelProto of ``model``'s chosen stage for (H, W) inputs, any batch; the metadata
    records ``skeleton`` (the model file's)."""
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
    info = ExportInfo(height, width, chosen, stages, sdk_compatible, skeleton=skeleton)
    set_metadata(proto, info)
    return proto, info
