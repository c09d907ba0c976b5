"""Building, saving and loading BpNetLiteModel (Keras 3).

The network is built from an ``Architecture`` only; training concerns (regularization) are
passed separately so that the same architecture can be rebuilt for retraining without them.
Model files are ``.keras`` archives with ``architecture.json`` beside them in the same
(optionally encrypted) container; see ``bpnet.model.io``.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
from keras import layers

from bpnet.model.architecture import (
    BACKBONE_LAYERS,
    POOL_AFTER,
    STAGE1_CONVS,
    STAGET_CONVS,
    STAGET_KERNEL,
    Architecture,
    output_names,
    stage_prefix,
)


@dataclass(frozen=True)
class Regularization:
    kind: str = "l1"  # l1 | l2 | l1_l2
    kernel_factor: float = 0.0
    bias_factor: float = 0.0

    def _make(self, factor: float) -> keras.regularizers.Regularizer | None:
        if factor <= 0:
            return None
        if self.kind == "l1":
            return keras.regularizers.L1(factor)
        if self.kind == "l2":
            return keras.regularizers.L2(factor)
        return keras.regularizers.L1L2(l1=factor, l2=factor)

    def kernel(self) -> keras.regularizers.Regularizer | None:
        return self._make(self.kernel_factor)

    def bias(self) -> keras.regularizers.Regularizer | None:
        return self._make(self.bias_factor)


def _initializer(activation: str | None, seed: int | None) -> keras.initializers.Initializer:
    """``random_normal`` (the guide's only choice), scaled per layer.

    The published model draws every kernel from N(0, 0.01^2) and relies on pretrained VGG19
    weights; from scratch that scale makes the signal vanish within a few head layers and the
    network only ever learns the background. Hidden ReLU layers therefore use He scaling
    (std = sqrt(2 / fan_in)), attention gates unit gain, and the linear output layers keep
    std 0.01 so the first predictions start near zero.
    """
    if activation == "relu":
        return keras.initializers.VarianceScaling(2.0, "fan_in", "untruncated_normal", seed=seed)
    if activation in ("tanh", "sigmoid"):  # self-attention gates: unit gain, not a closed gate
        return keras.initializers.VarianceScaling(1.0, "fan_avg", "untruncated_normal", seed=seed)
    return keras.initializers.RandomNormal(stddev=0.01, seed=seed)


def build_model(arch: Architecture, regularization: Regularization | None = None,
                input_shape: tuple[int | None, int | None] = (None, None), seed: int | None = None) -> keras.Model:
    """BpNetLiteModel for images of ``input_shape`` (None = any multiple of 8).

    Outputs: ``[heat_stage1, ..., heat_stageN, paf_stage1, ..., paf_stageN]``, all at stride 8.
    """
    reg = regularization or Regularization()
    init_seed = iter(range(seed, seed + 10_000)) if seed is not None else None

    def conv(x, name: str, filters: int, kernel: int, activation: str | None = "relu", bias: bool | None = None,
             batch_norm: bool = False):
        use_bias = arch.use_bias if bias is None else bias
        x = layers.Conv2D(
            filters, kernel, padding="same", use_bias=use_bias, name=name,
            kernel_initializer=_initializer(activation, next(init_seed) if init_seed else None),
            bias_initializer="zeros", kernel_regularizer=reg.kernel(),
            bias_regularizer=reg.bias() if use_bias else None)(x)
        if batch_norm:
            x = layers.BatchNormalization(name=f"{name}_bn")(x)
        if activation:
            x = layers.Activation(activation, name=f"{name}_{activation}")(x)
        return x

    f = arch.filters
    inputs = keras.Input(shape=(*input_shape, 3), name="input_1")
    x = inputs
    for name, _ in BACKBONE_LAYERS:
        x = conv(x, name, f[name], 3, bias=arch.backbone_use_bias, batch_norm=True)
        if name in POOL_AFTER:
            x = layers.MaxPooling2D(2, 2, padding="same", name=name.split("_")[0] + "_pool")(x)
    features = conv(x, "channel_reduction_conv", f["channel_reduction_conv"], 3)

    x = features
    for i in range(1, STAGE1_CONVS + 1):
        x = conv(x, f"stage1_conv{i}", f[f"stage1_conv{i}"], 3)
    heat_name, paf_name = output_names(1, arch.stages)
    heats = [conv(conv(x, "stage1_heat_conv", f["stage1_heat_conv"], 1), heat_name, arch.heat_channels, 1, None)]
    pafs = [conv(conv(x, "stage1_paf_conv", f["stage1_paf_conv"], 1), paf_name, arch.paf_channels, 1, None)]
    for stage in range(2, arch.stages + 1):
        p = stage_prefix(stage)
        x = layers.Concatenate(name=f"{p}input")([features, heats[-1], pafs[-1]])
        for i in range(1, STAGET_CONVS + 1):
            x = conv(x, f"{p}conv{i}", f[f"{p}conv{i}"], STAGET_KERNEL)
        heat = conv(x, f"{p}heat_conv", f[f"{p}heat_conv"], 1)
        paf = conv(x, f"{p}paf_conv", f[f"{p}paf_conv"], 1)
        if arch.use_self_attention:
            heat = layers.Multiply(name=f"{p}heat_attended")(
                [heat, conv(heat, f"{p}heat_attention", f[f"{p}heat_attention"], 3, "sigmoid")])
            paf = layers.Multiply(name=f"{p}paf_attended")(
                [paf, conv(paf, f"{p}paf_attention", f[f"{p}paf_attention"], 3, "tanh")])
        heat_name, paf_name = output_names(stage, arch.stages)
        heats.append(conv(heat, heat_name, arch.heat_channels, 1, None))
        pafs.append(conv(paf, paf_name, arch.paf_channels, 1, None))
    return keras.Model(inputs, heats + pafs, name="bpnet_lite")


def split_outputs(outputs: list, stages: int) -> tuple[list, list]:
    """(heatmaps per stage, PAFs per stage) from the model's flat output list."""
    return list(outputs[:stages]), list(outputs[stages:])


def count_params(model: keras.Model) -> int:
    return int(sum(np.prod(w.shape) for w in model.weights))


def count_flops(arch: Architecture, height: int, width: int) -> int:
    """Floating-point operations (2 per multiply-add) of the convolutions for one image."""
    model = build_model(arch, input_shape=(height, width))
    flops = 0
    for layer in model.layers:
        if isinstance(layer, layers.Conv2D):
            _, h, w, c_out = layer.output.shape
            kh, kw, c_in, _ = layer.kernel.shape
            flops += 2 * h * w * kh * kw * c_in * c_out
    return int(flops)
