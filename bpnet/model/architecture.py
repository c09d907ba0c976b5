"""The architecture record of a BodyPoseNet model: its class and every hidden conv layer's filter count.

A model is built from an ``Architecture`` alone, so that pruning can rebuild a narrower model by
editing filter counts, and a saved model carries its architecture (``architecture.json`` inside
the model file) and reloads without the train spec.

Both classes of the published implementation share the backbone and the stage wiring; they differ
in the heads (facts from the published models, parameter counts at full width with 19 heatmap and
38 PAF channels):

- backbone: VGG19 blocks 1-4 up to ``block4_conv2`` plus ``block4_conv3`` (256 filters); 3x3
  convs, batch norm, ReLU, max pooling after blocks 1-3 (stride 8); no biases by default
  (``backbone_attributes.use_bias``). With ``add_final_c128_conv`` one more 3x3 conv of 128
  filters (``backbone_c128_conv``) ends the backbone; every published spec leaves it off.
- ``channel_reduction_conv``: 3x3, 128 filters (present in both published classes).
- stage inputs: stage 1 sees the reduced features; stages 2..N see features + previous heatmaps
  + previous PAFs (concatenated). The last stage's outputs are ``heatmap_out`` and ``paf_out``.
- ``BpNetLiteModel`` (16,777,835 parameters with 3 stages, 30,015,638 with 6): the stage trunk is
  shared by both branches. Stage 1: three 3x3 convs (128), per branch a 1x1 conv (512) and a 1x1
  output conv. Stages 2..N: five 7x7 convs (128), per branch a 1x1 conv (128), optional
  self-attention (3x3 conv, tanh for PAFs, sigmoid for heatmaps, multiplied in), a 1x1 output.
- ``BpNetModel`` (the OpenPose-style model; 25,965,035 with 3 stages, 52,319,510 with 6): each
  branch has its own trunk. Stage 1, per branch: three 3x3 convs (128), a 1x1 conv (512), a 1x1
  output. Stages 2..N, per branch: five 7x7 convs (128), a 1x1 conv (128), optional
  self-attention as above, a 1x1 output.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Literal

from bpnet.errors import ModelError

ModelClass = Literal["BpNetLiteModel", "BpNetModel"]
LITE: ModelClass = "BpNetLiteModel"
FULL: ModelClass = "BpNetModel"
MODEL_CLASSES: tuple[str, ...] = (LITE, FULL)

BACKBONE_LAYERS: tuple[tuple[str, int], ...] = (
    ("block1_conv1", 64), ("block1_conv2", 64),
    ("block2_conv1", 128), ("block2_conv2", 128),
    ("block3_conv1", 256), ("block3_conv2", 256), ("block3_conv3", 256), ("block3_conv4", 256),
    ("block4_conv1", 512), ("block4_conv2", 512), ("block4_conv3", 256),
)  # fmt: skip
POOL_AFTER = {"block1_conv2", "block2_conv2", "block3_conv4"}
C128_CONV = "backbone_c128_conv"  # the optional last backbone layer (add_final_c128_conv)
BRANCHES = ("heat", "paf")
STAGE1_CONVS, STAGE1_BRANCH = 3, 512
REFINE_CONVS, REFINE_KERNEL, REFINE_BRANCH = 5, 7, 128
HIDDEN = 128


def stage_prefix(stage: int) -> str:
    return f"stage{stage}_"


def output_names(stage: int, stages: int) -> tuple[str, str]:
    """(heatmap, paf) output layer names of a stage."""
    if stage == stages:
        return "heatmap_out", "paf_out"
    return f"stage{stage}_heat_out", f"stage{stage}_paf_out"


def trunk_names(class_name: str, stage: int, branch: str) -> list[str]:
    """The k x k convs a stage's ``branch`` goes through before its 1x1 branch conv, in order.

    The lite model's trunk is shared by both branches (same names for either branch)."""
    count = STAGE1_CONVS if stage == 1 else REFINE_CONVS
    p = stage_prefix(stage)
    if class_name == LITE:
        return [f"{p}conv{i}" for i in range(1, count + 1)]
    return [f"{p}{branch}_conv{i}" for i in range(1, count + 1)]


def branch_conv_name(class_name: str, stage: int, branch: str) -> str:
    """The 1x1 conv that ends a branch before the (optional attention and) output conv."""
    if class_name == LITE:
        return f"{stage_prefix(stage)}{branch}_conv"
    count = STAGE1_CONVS if stage == 1 else REFINE_CONVS
    return f"{stage_prefix(stage)}{branch}_conv{count + 1}"


def attention_name(stage: int, branch: str) -> str:
    return f"{stage_prefix(stage)}{branch}_attention"


def default_filters(stages: int, use_self_attention: bool, width: float = 1.0, *,
                    class_name: str = LITE, add_final_c128_conv: bool = False) -> dict[str, int]:
    """Filter counts of every hidden conv layer at a width multiplier (1.0 = published model)."""
    if class_name not in MODEL_CLASSES:
        raise ModelError(f"model class {class_name!r}: expected one of {', '.join(MODEL_CLASSES)}")

    def w(n: int) -> int:
        return max(8, int(round(n * width / 8.0)) * 8) if width != 1.0 else n

    filters = {name: w(n) for name, n in BACKBONE_LAYERS}
    if add_final_c128_conv:
        filters[C128_CONV] = w(HIDDEN)
    filters["channel_reduction_conv"] = w(HIDDEN)
    for s in range(1, stages + 1):
        for branch in BRANCHES:
            for name in trunk_names(class_name, s, branch):
                filters[name] = w(HIDDEN)
            conv = branch_conv_name(class_name, s, branch)
            filters[conv] = w(STAGE1_BRANCH if s == 1 else REFINE_BRANCH)
            if use_self_attention and s > 1:  # multiplied with the branch conv: must keep its width
                filters[attention_name(s, branch)] = filters[conv]
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
    class_name: str = LITE
    add_final_c128_conv: bool = False

    def _default_filters(self) -> dict[str, int]:
        return default_filters(self.stages, self.use_self_attention, class_name=self.class_name,
                               add_final_c128_conv=self.add_final_c128_conv)

    def __post_init__(self) -> None:
        expected = set(self._default_filters())
        if not self.filters:
            object.__setattr__(self, "filters", self._default_filters())
        if set(self.filters) != expected:
            missing, extra = sorted(expected - set(self.filters)), sorted(set(self.filters) - expected)
            raise ModelError(f"architecture filters do not match a {self.class_name} of {self.stages} stages: "
                             f"missing {missing}, unexpected {extra}")
        bad = {k: v for k, v in self.filters.items() if int(v) < 1}
        if bad:
            raise ModelError(f"filter counts must be >= 1: {bad}")

    def with_filters(self, filters: dict[str, int]) -> Architecture:
        return replace(self, filters={**self.filters, **filters})

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Architecture:
        """Also reads records written before the class was recorded (they are all lite models)."""
        return cls(**json.loads(text))
