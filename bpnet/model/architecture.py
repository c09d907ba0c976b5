"""The architecture record of a BodyPoseNet model: every hidden conv layer's filter count.

A model is built from an ``Architecture`` alone, so that pruning can rebuild a narrower model by
editing filter counts, and a saved model carries its architecture (``architecture.json`` inside
the model file) and reloads without the train spec.

Layout (``BpNetLiteModel``, facts from the published model; parameter counts 16,777,835 with
3 stages and 30,015,638 with 6 at full width):

- backbone: VGG19 blocks 1-4 up to ``block4_conv2`` plus ``block4_conv3`` (256 filters); 3x3
  convs, batch norm, ReLU, max pooling after blocks 1-3 (stride 8); no biases by default
  (``backbone_attributes.use_bias``);
- ``channel_reduction_conv``: 3x3, 128 filters;
- stage 1: three 3x3 convs (128), then per branch a 1x1 conv (512) and a 1x1 output conv;
- stages 2..N: input = backbone features + previous heatmaps + previous PAFs; five 7x7 convs
  (128), per branch a 1x1 conv (128), optional self-attention (3x3 conv, tanh for PAFs, sigmoid
  for heatmaps, multiplied in), and a 1x1 output conv. The last stage's outputs are named
  ``heatmap_out`` and ``paf_out``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace

BACKBONE_LAYERS: tuple[tuple[str, int], ...] = (
    ("block1_conv1", 64), ("block1_conv2", 64),
    ("block2_conv1", 128), ("block2_conv2", 128),
    ("block3_conv1", 256), ("block3_conv2", 256), ("block3_conv3", 256), ("block3_conv4", 256),
    ("block4_conv1", 512), ("block4_conv2", 512), ("block4_conv3", 256),
)  # fmt: skip
POOL_AFTER = {"block1_conv2", "block2_conv2", "block3_conv4"}
STAGE1_CONVS, STAGE1_BRANCH = 3, 512
STAGET_CONVS, STAGET_KERNEL, STAGET_BRANCH = 5, 7, 128
HIDDEN = 128


def stage_prefix(stage: int) -> str:
    return f"stage{stage}_"


def output_names(stage: int, stages: int) -> tuple[str, str]:
    """(heatmap, paf) output layer names of a stage."""
    if stage == stages:
        return "heatmap_out", "paf_out"
    return f"stage{stage}_heat_out", f"stage{stage}_paf_out"


def default_filters(stages: int, use_self_attention: bool, width: float = 1.0) -> dict[str, int]:
    """Filter counts of every hidden conv layer at a width multiplier (1.0 = published model)."""

    def w(n: int) -> int:
        return max(8, int(round(n * width / 8.0)) * 8) if width != 1.0 else n

    filters = {name: w(n) for name, n in BACKBONE_LAYERS}
    filters["channel_reduction_conv"] = w(HIDDEN)
    for i in range(1, STAGE1_CONVS + 1):
        filters[f"stage1_conv{i}"] = w(HIDDEN)
    filters["stage1_paf_conv"] = filters["stage1_heat_conv"] = w(STAGE1_BRANCH)
    for s in range(2, stages + 1):
        p = stage_prefix(s)
        for i in range(1, STAGET_CONVS + 1):
            filters[f"{p}conv{i}"] = w(HIDDEN)
        filters[f"{p}paf_conv"] = filters[f"{p}heat_conv"] = w(STAGET_BRANCH)
        if use_self_attention:  # multiplied with the branch conv: must keep its width
            filters[f"{p}paf_attention"] = filters[f"{p}paf_conv"]
            filters[f"{p}heat_attention"] = filters[f"{p}heat_conv"]
    return filters


@dataclass(frozen=True)
class Architecture:
    stages: int = 3
    heat_channels: int = 19
    paf_channels: int = 38
    use_self_attention: bool = False
    use_bias: bool = True
    backbone_use_bias: bool = False
    filters: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.filters:
            object.__setattr__(self, "filters", default_filters(self.stages, self.use_self_attention))
        expected = set(default_filters(self.stages, self.use_self_attention))
        if set(self.filters) != expected:
            missing, extra = sorted(expected - set(self.filters)), sorted(set(self.filters) - expected)
            raise ValueError(f"architecture filters do not match {self.stages} stages: "
                             f"missing {missing}, unexpected {extra}")
        bad = {k: v for k, v in self.filters.items() if int(v) < 1}
        if bad:
            raise ValueError(f"filter counts must be >= 1: {bad}")

    def with_filters(self, filters: dict[str, int]) -> Architecture:
        return replace(self, filters={**self.filters, **filters})

    def to_json(self) -> str:
        return json.dumps({"class_name": "BpNetLiteModel", **asdict(self)}, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Architecture:
        data = json.loads(text)
        data.pop("class_name", None)
        return cls(**data)
