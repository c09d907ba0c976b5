"""Network input from an image, and its exact inverse: shared by inference, evaluation, export
and calibration (normalization itself is ``bpnet.preprocess.normalize``, shared with training).

``keep_aspect_ratio_mode``:

- ``adjust_network_input``: keep the spec's input height; the width becomes the multiple of 8
  nearest to height x image aspect ratio (the image is resized to exactly that size);
- ``pad_image_input``: keep the spec's input size; scale the image to fit, keep its aspect ratio,
  and pad right and bottom with zeros;
- ``None``: resize to the spec's input size, aspect ratio not kept.

Pixel-centre convention (as OpenCV's resize): input x_in maps to network x = (x_in + 0.5) * s - 0.5.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from bpnet.preprocess import normalize
from bpnet.specs.train import MODEL_STRIDE as STRIDE


@dataclass(frozen=True)
class InputPlan:
    """How one image becomes a network input: resize to (resized_w, resized_h), then pad."""

    image_h: int
    image_w: int
    net_h: int
    net_w: int
    resized_h: int
    resized_w: int

    @property
    def scale(self) -> tuple[float, float]:
        return self.resized_w / self.image_w, self.resized_h / self.image_h

    def to_network(self, xy: np.ndarray) -> np.ndarray:
        sx, sy = self.scale
        return (np.asarray(xy, np.float64) + 0.5) * (sx, sy) - 0.5

    def to_image(self, xy: np.ndarray) -> np.ndarray:
        """Network-input coordinates back to image coordinates (exact inverse of to_network)."""
        sx, sy = self.scale
        return (np.asarray(xy, np.float64) + 0.5) / (sx, sy) - 0.5


def _round8(value: float) -> int:
    return max(STRIDE, int(round(value / STRIDE)) * STRIDE)


def plan(image_h: int, image_w: int, input_shape: Sequence[int], mode: str | None, factor: float = 1.0) -> InputPlan:
    """The plan for an image; ``factor`` scales the input shape (multi-scale inference)."""
    net_h, net_w = int(input_shape[0]), int(input_shape[1])
    if factor != 1.0:
        net_h, net_w = _round8(net_h * factor), _round8(net_w * factor)
    if mode == "adjust_network_input":
        net_w = _round8(net_h * image_w / image_h)
        return InputPlan(image_h, image_w, net_h, net_w, net_h, net_w)
    if mode == "pad_image_input":
        s = min(net_h / image_h, net_w / image_w)
        resized_h = min(net_h, max(1, int(round(image_h * s))))
        resized_w = min(net_w, max(1, int(round(image_w * s))))
        return InputPlan(image_h, image_w, net_h, net_w, resized_h, resized_w)
    return InputPlan(image_h, image_w, net_h, net_w, net_h, net_w)


def to_network_input(image: np.ndarray, p: InputPlan, scale: Sequence[float], offset: Sequence[float]) -> np.ndarray:
    """Resize + pad + normalize: the (net_h, net_w, 3) float32 network input for an RGB image."""
    resized = cv2.resize(image, (p.resized_w, p.resized_h), interpolation=cv2.INTER_LINEAR)
    canvas = np.zeros((p.net_h, p.net_w, 3), np.uint8)
    canvas[: p.resized_h, : p.resized_w] = resized
    return normalize(canvas.astype(np.float32), scale, offset).astype(np.float32)
