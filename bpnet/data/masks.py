"""Loss masks: image regions of people the labels do not describe.

A mask image has the size of its image; 255 marks pixels whose loss counts and 0 marks pixels to
ignore: crowd regions and people who are unlabeled or have fewer than ``min_acceptable_kpts``
labeled keypoints (the network must neither be taught that they are background nor be asked to
find keypoints nobody labeled). With the default ``mask_scale: [255.0]`` the loader turns them
into 1.0 / 0.0 loss weights.
"""

from __future__ import annotations

import cv2
import numpy as np
from pycocotools import mask as coco_mask

from bpnet.data.coco import Person

MASK_KEEP = 255
MASK_IGNORE = 0


def is_ignored(person: Person, min_acceptable_kpts: int) -> bool:
    """Crowds and people with too few labeled keypoints are masked out of the loss."""
    return person.iscrowd or person.num_labeled < max(min_acceptable_kpts, 1)


def person_region(person: Person, height: int, width: int) -> np.ndarray:
    """The person's segmentation (polygons or RLE) as a boolean (H, W) array; bbox if none."""
    seg = person.segmentation
    if isinstance(seg, dict) and isinstance(seg.get("counts"), str):
        rle = seg  # compressed RLE
    elif isinstance(seg, dict):
        rle = coco_mask.frPyObjects(seg, height, width)  # uncompressed RLE
    elif isinstance(seg, list) and seg:
        polygons = [p for p in seg if len(p) >= 6]
        rle = coco_mask.merge(coco_mask.frPyObjects(polygons, height, width)) if polygons else None
    else:
        rle = None
    if rle is None:
        region = np.zeros((height, width), dtype=bool)
        x, y, w, h = person.bbox
        x0, y0 = int(np.floor(x)), int(np.floor(y))
        region[max(y0, 0):int(np.ceil(y + h)), max(x0, 0):int(np.ceil(x + w))] = True
        return region
    return coco_mask.decode(rle).astype(bool)


def ignore_mask(persons: list[Person], height: int, width: int, min_acceptable_kpts: int) -> np.ndarray:
    """The uint8 mask image (MASK_KEEP / MASK_IGNORE) for one image."""
    mask = np.full((height, width), MASK_KEEP, dtype=np.uint8)
    for person in persons:
        if is_ignored(person, min_acceptable_kpts):
            mask[person_region(person, height, width)] = MASK_IGNORE
    return mask


def encode_png(mask: np.ndarray) -> bytes:
    """PNG at zlib level 1: a few KB more per mask, but it decodes ~4x faster in the input pipeline."""
    ok, buf = cv2.imencode(".png", mask, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise RuntimeError("PNG encoding of a mask failed")
    return buf.tobytes()
