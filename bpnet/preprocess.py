"""Image normalization shared by training, inference, export and calibration.

``(data / scale) - offset`` per channel, as the guide's ``normalization_params`` define it. The
functions use arithmetic only, so they work on NumPy arrays and TensorFlow tensors alike; every
path that feeds the network goes through them, so train and deploy can never disagree.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def normalize(data: T, scale: Sequence[float], offset: Sequence[float]) -> T:
    """(data / scale) - offset, broadcast over the last (channel) axis."""
    import numpy as np

    return data / np.asarray(scale, np.float32) - np.asarray(offset, np.float32)  # type: ignore[operator]


def denormalize(data: T, scale: Sequence[float], offset: Sequence[float]) -> T:
    """The inverse of ``normalize`` (for visualizing network inputs)."""
    import numpy as np

    return (data + np.asarray(offset, np.float32)) * np.asarray(scale, np.float32)  # type: ignore[operator]
