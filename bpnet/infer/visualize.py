"""Skeleton drawings of decoded people."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from bpnet.artifacts import atomic_write_bytes
from bpnet.infer.decode import Person
from bpnet.pose import Skeleton


def _colour(index: int) -> tuple[int, int, int]:
    hue = (index * 37) % 180
    bgr = cv2.cvtColor(np.uint8([[[hue, 220, 255]]]), cv2.COLOR_HSV2BGR)[0, 0]
    return int(bgr[0]), int(bgr[1]), int(bgr[2])


def draw_people(image_bgr: np.ndarray, people: list[Person], skeleton: Skeleton) -> np.ndarray:
    """A copy of the image with each person's limbs (one colour per limb) and joints drawn."""
    out = image_bgr.copy()
    thickness = max(2, round(min(out.shape[:2]) / 200))
    for person in people:
        kps = person.keypoints
        for k, (a, b) in enumerate(skeleton.limbs):
            if kps[a, 2] > 0 and kps[b, 2] > 0:
                cv2.line(out, tuple(int(v) for v in kps[a, :2]), tuple(int(v) for v in kps[b, :2]), _colour(k),
                         thickness, cv2.LINE_AA)
        for x, y, score in kps:
            if score > 0:
                cv2.circle(out, (int(x), int(y)), thickness + 1, (255, 255, 255), -1, cv2.LINE_AA)
    return out


def write_drawing(rgb: np.ndarray, people: list[Person], dest: str | Path, skeleton: Skeleton) -> None:
    """Save the people drawn over an RGB image as a JPEG at ``dest`` (atomically)."""
    ok, buf = cv2.imencode(".jpg", draw_people(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), people, skeleton))
    if not ok:
        raise ValueError(f"{dest}: could not encode the drawing as JPEG")
    atomic_write_bytes(dest, buf.tobytes())
