"""Image normalization shared by training, inference, export and calibration.

``(data / scale) - offset`` per channel, as the guide's ``normalization_params`` define it. The
functions use arithmetic only, so they work on NumPy arrays and TensorFlow tensors alike; every
path that feeds the network goes through them, so train and deploy can never disagree.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def normalize(data: T, scale: Sequence[float], offset: Sequence[float]) -> T:
    """(data / scale) - offset, broadcast over the last (channel) axis.

    Equal per-channel values (the usual case) are applied as scalars: broadcasting a 3-vector is
    several times slower in TensorFlow's kernels and cost most of a training sample's budget."""
    import numpy as np

    s, o = np.asarray(scale, np.float32), np.asarray(offset, np.float32)
    if np.all(s == s.flat[0]) and np.all(o == o.flat[0]):
        return data * np.float32(1.0 / s.flat[0]) - o.flat[0]  # type: ignore[operator]
    return data / s - o  # type: ignore[operator]


def denormalize(data: T, scale: Sequence[float], offset: Sequence[float]) -> T:
    """The inverse of ``normalize`` (for visualizing network inputs)."""
    import numpy as np

    return (data + np.asarray(offset, np.float32)) * np.asarray(scale, np.float32)  # type: ignore[operator]


DCT_RATIOS = (1, 2, 4, 8)


def read_image(path: str | Path, ratio: int = 1):
    """An image file as RGB uint8 — the one decoder of training, conversion checks, inference,
    evaluation and calibration. JPEGs can be decoded at 1/ratio size (DCT scaling: cheaper than
    decoding everything and shrinking). EXIF orientation is ignored: annotations and masks refer to
    the stored pixel grid. Raises ValueError if the file is missing or not an image."""
    import cv2
    import numpy as np

    flags = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
             8: cv2.IMREAD_REDUCED_COLOR_8}[ratio] | cv2.IMREAD_IGNORE_ORIENTATION
    pixels = cv2.imdecode(np.fromfile(str(path), np.uint8), flags) if Path(path).is_file() else None
    if pixels is None:
        raise ValueError(f"{path}: cannot read image (missing, unreadable or not an image)")
    return cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)
