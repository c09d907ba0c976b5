"""Image normalization shared by training, inference, export and calibration.

``(data / scale) - offset`` per channel, as the guide's ``normalization_params`` define it. The
functions use arithmetic only, so they work on NumPy arrays and TensorFlow tensors alike; every
path that feeds the network goes through them, so train and deploy can never disagree.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

from bpnet.errors import DataError
from bpnet.specs.train import MODEL_STRIDE

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


# The image files a folder input (inference, evaluation, calibration) takes; read_image decodes them.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
MIN_IMAGE_SIDE = MODEL_STRIDE  # smaller than one cell of the network's output grid: nothing to learn or find


class ImageReadError(DataError, ValueError):
    """An image file that cannot be used; the message names the file and says why."""


def read_image(path: str | Path, ratio: int = 1):
    """An image file as RGB uint8 — the one decoder of training, conversion checks, inference,
    evaluation and calibration, so every step sees the same pixels. JPEGs can be decoded at
    1/ratio size (DCT scaling: cheaper than decoding everything and shrinking). EXIF orientation
    is ignored: annotations and masks refer to the stored pixel grid.

    Conversions (OpenCV's IMREAD_COLOR, the same everywhere): grayscale is replicated to three
    channels, 16-bit samples are scaled to 8 bits, an alpha channel is dropped (the stored colour
    is used, not composited), CMYK JPEGs and palette PNGs are converted to RGB. Raises
    ImageReadError (a ValueError) naming the file if it is missing, empty, truncated, not an
    image, or smaller than MIN_IMAGE_SIDE pixels on a side."""
    import cv2
    import numpy as np

    flags = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
             8: cv2.IMREAD_REDUCED_COLOR_8}[ratio] | cv2.IMREAD_IGNORE_ORIENTATION
    try:
        data = np.fromfile(str(path), np.uint8)
    except OSError as exc:  # missing, a directory, no permission
        raise ImageReadError(f"{path}: cannot read image file ({exc.strerror or exc})") from None
    if data.size == 0:
        raise ImageReadError(f"{path}: image file is empty (0 bytes)")
    try:
        pixels = cv2.imdecode(data, flags)
    except cv2.error:  # OpenCV raises for some malformed headers instead of returning None
        pixels = None
    if pixels is None:
        if ratio > 1:
            read_image(path)  # raises the precise reason (e.g. too small to reduce) if there is one
        raise ImageReadError(f"{path}: cannot decode image (truncated, corrupt or not an image)")
    height, width = pixels.shape[:2]
    if min(height, width) * ratio < MIN_IMAGE_SIDE:
        raise ImageReadError(f"{path}: image is {width * ratio}x{height * ratio} pixels, too small "
                             f"(at least {MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE})")
    return cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)
