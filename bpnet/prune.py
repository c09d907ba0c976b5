"""``bpnet prune``: remove convolution filters whose normalized kernel norm is below a threshold.

How (the guide's "Prune the Model", flags and defaults as ``tlt bpnet prune``):

1. Channel spaces from the graph. Walking the Keras graph, every tensor's channel axis is a list
   of segments, each a slice of some convolution's output filters ("space"). Per-channel layers
   (batch norm, activations, pooling) pass the list through; a concatenation joins its inputs'
   lists (so the stage inputs ``[features, heatmaps, PAFs]`` map consumers' input channels to
   their producers with offsets); an element-wise op (multiply, add) requires its inputs to keep
   the same channels, so their spaces are *unioned* into one group. Nothing is named by hand.
2. Per output filter of each prunable convolution: the L2 norm of its kernel, normalized within the
   layer by the max (``max``) or by the L2 norm of all the layer's filter norms (``L2``).
3. A group's members are equalized into one statistic per channel — ``union`` (keep if any
   member would: the max), ``intersection`` (only if all would: the min), ``arithmetic_mean``,
   ``geometric_mean`` — and channels below the threshold go. The kept count is rounded up to a
   multiple of the granularity, never below ``min_num_filters`` nor above the layer's width; the
   channels kept are those with the highest statistic, in their original order.
4. Output heads (heatmap and PAF convolutions of every stage) are never pruned; a group with an
   excluded or unprunable member is left whole.
5. The narrower model is rebuilt from the architecture's per-layer widths and every weight copied:
   kept output filters of each conv (and of its batch norm), kept input channels of every conv
   that consumes them (through concatenation offsets).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import keras
import numpy as np

from bpnet.errors import ModelError
from bpnet.model.architecture import Architecture
from bpnet.model.bpnet import build_model, count_flops, count_params
from bpnet.model.io import architecture_of
from bpnet.settings import Criterion, Normalizer, PruneSettings
from bpnet.specs.base import DEFAULT_INPUT_SHAPE

log = logging.getLogger(__name__)

_PASS_THROUGH = (keras.layers.BatchNormalization, keras.layers.Activation, keras.layers.ReLU,
                 keras.layers.MaxPooling2D, keras.layers.AveragePooling2D, keras.layers.Dropout)
_ELEMENTWISE = (keras.layers.Multiply, keras.layers.Add, keras.layers.Subtract, keras.layers.Maximum,
                keras.layers.Minimum, keras.layers.Average)


# ---- the pure arithmetic (one function per rule; unit-tested on hand-made numbers) ----

def filter_norms(kernel: np.ndarray) -> np.ndarray:
    """L2 norm of each output filter of a conv kernel (kh, kw, c_in, c_out)."""
    return np.sqrt(np.square(kernel.astype(np.float64)).sum(axis=(0, 1, 2)))


def normalize(norms: np.ndarray, normalizer: Normalizer) -> np.ndarray:
    scale = norms.max() if normalizer == "max" else np.sqrt(np.square(norms).sum())
    return norms / scale if scale > 0 else np.zeros_like(norms)


def equalize(stats: list[np.ndarray], criterion: Criterion) -> np.ndarray:
    """One statistic per channel for a group whose members must keep the same channels."""
    stack = np.stack(stats)
    if criterion == "union":
        return stack.max(axis=0)
    if criterion == "intersection":
        return stack.min(axis=0)
    if criterion == "arithmetic_mean":
        return stack.mean(axis=0)
    return np.exp(np.log(np.maximum(stack, 1e-300)).mean(axis=0)) * (stack > 0).all(axis=0)


def kept_channels(stat: np.ndarray, threshold: float, granularity: int, min_num_filters: int) -> np.ndarray:
    """Indices (ascending) of the channels to keep."""
    width = len(stat)
    count = int((stat >= threshold).sum())
    count = math.ceil(count / granularity) * granularity
    count = min(width, max(count, min_num_filters))
    order = np.argsort(-stat, kind="stable")  # highest first; ties keep the earlier channel
    return np.sort(order[:count])


# ---- the graph ----

Segment = tuple[str, int]  # (space id, channels)


@dataclass
class ChannelGraph:
    """Channel bookkeeping of a model: which spaces each conv consumes and produces, and groups."""

    conv_inputs: dict[str, list[Segment]] = field(default_factory=dict)   # conv -> its input segments
    conv_space: dict[str, str] = field(default_factory=dict)              # conv -> space of its output
    bn_space: dict[str, str] = field(default_factory=dict)                # batch norm -> its space
    parent: dict[str, str] = field(default_factory=dict)                  # union-find over spaces

    def find(self, space: str) -> str:
        while self.parent[space] != space:
            self.parent[space] = self.parent[self.parent[space]]
            space = self.parent[space]
        return space

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra

    def groups(self) -> dict[str, list[str]]:
        """Group root -> member convs (in graph order)."""
        out: dict[str, list[str]] = {}
        for conv, space in self.conv_space.items():
            out.setdefault(self.find(space), []).append(conv)
        return out


def channel_graph(model: keras.Model) -> ChannelGraph:
    graph = ChannelGraph()
    produced: dict[int, list[Segment]] = {}
    for tensor in model.inputs:
        graph.parent["input"] = "input"
        produced[id(tensor)] = [("input", int(tensor.shape[-1]))]
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        inputs = layer.input if isinstance(layer.input, list) else [layer.input]
        segments = [produced[id(t)] for t in inputs]
        if isinstance(layer, keras.layers.Conv2D):
            graph.conv_inputs[layer.name] = list(segments[0])
            graph.conv_space[layer.name] = graph.parent[layer.name] = layer.name
            out = [(layer.name, layer.filters)]
        elif isinstance(layer, keras.layers.Concatenate):
            out = [s for segs in segments for s in segs]
        elif isinstance(layer, _ELEMENTWISE):
            first = segments[0]
            for other in segments[1:]:
                if [n for _, n in other] != [n for _, n in first]:
                    raise ModelError(f"{layer.name}: inputs with different channel layouts cannot be pruned")
                for (a, _), (b, _) in zip(first, other, strict=True):
                    graph.union(a, b)
            out = first
        elif isinstance(layer, _PASS_THROUGH):
            out = segments[0]
            if isinstance(layer, keras.layers.BatchNormalization):
                if len(out) != 1:
                    raise ModelError(f"{layer.name}: batch norm over a concatenation is not supported")
                graph.bn_space[layer.name] = out[0][0]
        else:
            raise ModelError(f"{layer.name}: layer type {type(layer).__name__} is not known to the pruner")
        produced[id(layer.output)] = out
    return graph


# ---- pruning ----

@dataclass
class PruneResult:
    model: keras.Model
    architecture: Architecture
    report: dict


def prune_model(model: keras.Model, settings: PruneSettings,
          flops_shape: tuple[int, int] = DEFAULT_INPUT_SHAPE) -> PruneResult:
    arch = architecture_of(model)
    prunable = set(arch.filters)
    unknown = sorted(set(settings.excluded_layers) - prunable)
    if unknown:
        raise ModelError(f"excluded layers {unknown} are not prunable layers of this model; "
                         f"prunable: {', '.join(sorted(prunable))}")
    graph = channel_graph(model)
    convs = {layer.name: layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)}
    keep: dict[str, np.ndarray] = {}  # space root -> kept channel indices
    for root, members in graph.groups().items():
        width = convs[members[0]].filters
        if any(m not in prunable or m in settings.excluded_layers for m in members):
            keep[root] = np.arange(width)
            continue
        stats = [normalize(filter_norms(convs[m].get_weights()[0]), settings.normalizer) for m in members]
        stat = equalize(stats, settings.equalization_criterion)
        keep[root] = kept_channels(stat, settings.pruning_threshold, settings.pruning_granularity,
                                   settings.min_num_filters)
    keep["input"] = np.arange(int(model.inputs[0].shape[-1]))

    def kept(space: str) -> np.ndarray:
        return keep[graph.find(space)]

    new_arch = arch.with_filters({name: len(kept(name)) for name in arch.filters})
    pruned = build_model(new_arch)
    for layer in pruned.layers:
        if not layer.weights:
            continue
        weights = model.get_layer(layer.name).get_weights()
        if isinstance(layer, keras.layers.Conv2D):
            in_idx = _input_indices(graph.conv_inputs[layer.name], kept)
            out_idx = kept(layer.name)
            weights = [weights[0][:, :, in_idx, :][..., out_idx], *[b[out_idx] for b in weights[1:]]]
        elif isinstance(layer, keras.layers.BatchNormalization):
            weights = [w[kept(graph.bn_space[layer.name])] for w in weights]
        layer.set_weights(weights)
    report = _report(model, pruned, arch, new_arch, settings, flops_shape)
    return PruneResult(pruned, new_arch, report)


def _input_indices(segments: list[Segment], kept) -> np.ndarray:
    """Kept input channels of a consumer: each segment's kept indices shifted by its offset."""
    parts, offset = [], 0
    for space, channels in segments:
        parts.append(kept(space) + offset)
        offset += channels
    return np.concatenate(parts)


def _report(model: keras.Model, pruned: keras.Model, before: Architecture, after: Architecture,
            settings: PruneSettings, flops_shape: tuple[int, int]) -> dict:
    params = (count_params(model), count_params(pruned))
    flops = (count_flops(before, *flops_shape), count_flops(after, *flops_shape))
    layers = [{"layer": name, "before": width, "after": after.filters[name],
               "kept": round(after.filters[name] / width, 4)} for name, width in before.filters.items()]
    return {
        "settings": settings.model_dump(),
        "parameters": {"before": params[0], "after": params[1], "kept": round(params[1] / params[0], 4)},
        "flops": {"before": flops[0], "after": flops[1], "kept": round(flops[1] / flops[0], 4),
                  "input_shape": list(flops_shape)},
        "layers": layers,
    }
