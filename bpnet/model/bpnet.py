"""Building BpNetLiteModel and BpNetModel (Keras 3).

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
    BRANCHES,
    C128_CONV,
    LITE,
    POOL_AFTER,
    REFINE_KERNEL,
    Architecture,
    attention_name,
    branch_conv_name,
    output_names,
    stage_prefix,
    trunk_names,
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
                input_shape: tuple[int | None, int | None] = (None, None), seed: int | None = None,
                compute_dtype: str = "float32") -> keras.Model:
    """The model ``arch`` describes (its class included) for images of ``input_shape`` (None = any
    multiple of 8).

    Outputs: ``[heat_stage1, ..., heat_stageN, paf_stage1, ..., paf_stageN]``, all at stride 8.
    ``compute_dtype`` "bfloat16" (training only: the train spec's ``compute_dtype``) computes the
    hidden layers in bfloat16 with float32 weights (Keras mixed precision); the output layers stay
    float32, so the maps and the loss keep float32's resolution. The weights are the same either
    way: a float32 build takes them unchanged.
    """
    reg = regularization or Regularization()
    hidden = None if compute_dtype == "float32" else f"mixed_{compute_dtype}"  # the hidden layers' Keras policy
    init_seed = iter(range(seed, seed + 10_000)) if seed is not None else None

    def conv(x, name: str, filters: int, kernel: int, activation: str | None = "relu", bias: bool | None = None,
             batch_norm: bool = False):
        use_bias = arch.use_bias if bias is None else bias
        x = layers.Conv2D(
            filters, kernel, padding="same", use_bias=use_bias, name=name,
            kernel_initializer=_initializer(activation, next(init_seed) if init_seed else None),
            bias_initializer="zeros", kernel_regularizer=reg.kernel(),
            bias_regularizer=reg.bias() if use_bias else None, dtype=hidden if activation else "float32")(x)
        if batch_norm:
            x = layers.BatchNormalization(name=f"{name}_bn", dtype=hidden)(x)
        if activation:
            x = layers.Activation(activation, name=f"{name}_{activation}", dtype=hidden)(x)
        return x

    f = arch.filters
    inputs = keras.Input(shape=(*input_shape, 3), name="input_1")
    x = inputs
    for name, _ in BACKBONE_LAYERS:
        x = conv(x, name, f[name], 3, bias=arch.backbone_use_bias, batch_norm=True)
        if name in POOL_AFTER:
            x = layers.MaxPooling2D(2, 2, padding="same", name=name.split("_")[0] + "_pool", dtype=hidden)(x)
    if arch.add_final_c128_conv:
        x = conv(x, C128_CONV, f[C128_CONV], 3, bias=arch.backbone_use_bias, batch_norm=True)
    features = conv(x, "channel_reduction_conv", f["channel_reduction_conv"], 3)

    def trunk(x, stage: int, branch: str):
        kernel = 3 if stage == 1 else REFINE_KERNEL
        for name in trunk_names(arch.class_name, stage, branch):
            x = conv(x, name, f[name], kernel)
        return x

    def branch_conv(x, stage: int, branch: str):
        name = branch_conv_name(arch.class_name, stage, branch)
        return conv(x, name, f[name], 1)

    def attend(x, stage: int, branch: str):
        """The optional self-attention gate (stages 2..N): tanh for PAFs, sigmoid for heatmaps."""
        if not (arch.use_self_attention and stage > 1):
            return x
        gate = conv(x, attention_name(stage, branch), f[attention_name(stage, branch)], 3,
                    "tanh" if branch == "paf" else "sigmoid")
        return layers.Multiply(name=f"{stage_prefix(stage)}{branch}_attended", dtype=hidden)([x, gate])

    def output(x, stage: int, branch: str):
        heat_name, paf_name = output_names(stage, arch.stages)
        if branch == "heat":
            return conv(x, heat_name, arch.heat_channels, 1, None)
        return conv(x, paf_name, arch.paf_channels, 1, None)

    heats, pafs = [], []
    for stage in range(1, arch.stages + 1):
        x = features if stage == 1 else layers.Concatenate(name=f"{stage_prefix(stage)}input", dtype=hidden)(
            [features, heats[-1], pafs[-1]])
        if arch.class_name == LITE:
            # One trunk shared by both branches. The layer creation order is kept as it always was
            # (it fixes the seeded initial weights and the checkpoint layout of earlier runs).
            x = trunk(x, stage, "heat")
            if stage == 1:
                outs = {b: output(branch_conv(x, stage, b), stage, b) for b in BRANCHES}
            else:
                mids = {b: branch_conv(x, stage, b) for b in BRANCHES}
                mids = {b: attend(mids[b], stage, b) for b in BRANCHES}
                outs = {b: output(mids[b], stage, b) for b in BRANCHES}
        else:  # BpNetModel: each branch has its own trunk
            outs = {b: output(attend(branch_conv(trunk(x, stage, b), stage, b), stage, b), stage, b)
                    for b in BRANCHES}
        heats.append(outs["heat"])
        pafs.append(outs["paf"])
    return keras.Model(inputs, heats + pafs, name="bpnet_lite" if arch.class_name == LITE else "bpnet")


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
