"""Ground truth at the network's output resolution: joint heatmaps and PAFs (NumPy).

Conventions (shared with decoding):

- Output cell (i, j) at stride s looks at input pixel ``(j*s + (s-1)/2, i*s + (s-1)/2)``.
- Heatmaps: one channel per joint in skeleton order, ``exp(-d^2 / (2 sigma^2))`` around each
  labeled keypoint with ``sigma = heatmap_gaussian_sigma`` in input pixels (7.0 = 0.875 cells),
  max over persons; plus a last background channel ``max(0, 1 - max_j heatmap_j)``.
  Occluded keypoints count as visible; not-labeled ones are ignored.
- PAFs: two channels (x, y) per limb, in the skeleton's limb order. A cell gets the limb's unit
  vector when its distance d from the limb segment (end caps included, as the published code's
  bounding box does, so short face limbs still get a field) is within
  ``t = paf_ortho_dist_thresh * stride``; beyond that band the vector is weighted by
  ``exp(-(d - t)^2 / (2 (paf_gaussian_sigma * stride)^2))``, cut to zero below 0.01. With the
  default sigma (0.03 -> 0.24 input pixels) this is the published binary band; larger values
  give a soft edge as the guide describes. Where several persons' limbs overlap the vectors are
  averaged (the published code let the later person overwrite).
"""

from __future__ import annotations

import math

import numpy as np

from bpnet.pose import Skeleton

_PAF_CUTOFF = 0.01


def cell_centers(target_h: int, target_w: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """(xs, ys): input-pixel coordinates that the output columns / rows look at."""
    offset = (stride - 1) / 2.0
    return (np.arange(target_w, dtype=np.float32) * stride + offset,
            np.arange(target_h, dtype=np.float32) * stride + offset)


def heatmaps(keypoints: np.ndarray, target_h: int, target_w: int, stride: int, sigma: float) -> np.ndarray:
    """keypoints (P, J, 3) in input pixels -> (h, w, J + 1), background channel last.

    The 2-D gaussian is separable: per keypoint, a row profile times a column profile."""
    xs, ys = cell_centers(target_h, target_w, stride)
    num_joints = keypoints.shape[1]
    out = np.zeros((target_h, target_w, num_joints + 1), np.float32)
    labeled = keypoints[..., 2] > 0
    if labeled.any():
        k = 1.0 / (2.0 * sigma * sigma)
        gx = np.exp(-k * np.square(xs[None, None, :] - keypoints[..., 0:1]))  # (P, J, w)
        gy = np.exp(-k * np.square(ys[None, None, :] - keypoints[..., 1:2]))  # (P, J, h)
        peaks = np.einsum("pjh,pjw->pjhw", gy * labeled[..., None], gx)
        out[..., :num_joints] = peaks.max(axis=0).transpose(1, 2, 0)
    out[..., num_joints] = np.maximum(1.0 - out[..., :num_joints].max(axis=-1), 0.0)
    return out


def pafs(keypoints: np.ndarray, skeleton: Skeleton, target_h: int, target_w: int, stride: int,
         band: float, sigma: float) -> np.ndarray:
    """keypoints (P, J, 3) in input pixels -> (h, w, 2 * limbs)."""
    limbs = np.asarray(skeleton.limbs, np.int64)
    out = np.zeros((target_h, target_w, len(limbs), 2), np.float32)
    a, b = keypoints[:, limbs[:, 0]], keypoints[:, limbs[:, 1]]  # (P, L, 3)
    d = b[..., :2] - a[..., :2]
    length = np.linalg.norm(d, axis=-1)
    valid = (a[..., 2] > 0) & (b[..., 2] > 0) & (length > 1e-3)
    if valid.any():
        p_idx, l_idx = np.nonzero(valid)
        start, unit = a[p_idx, l_idx, :2], d[p_idx, l_idx] / length[p_idx, l_idx, None]  # (N, 2)
        reach = band + sigma * math.sqrt(2.0 * math.log(1.0 / _PAF_CUTOFF))  # weight >= cutoff inside
        # Only the cells of each limb's bounding box (grown by `reach`) can be reached: work on a
        # window of the largest such box per limb instance instead of the whole map.
        end = b[p_idx, l_idx, :2]
        offset = (stride - 1) / 2.0
        low = np.floor((np.minimum(start, end) - reach - offset) / stride).astype(np.int64)
        high = np.ceil((np.maximum(start, end) + reach - offset) / stride).astype(np.int64)
        low = np.clip(low, 0, [target_w - 1, target_h - 1])
        win_w, win_h = (np.clip(high, 0, [target_w - 1, target_h - 1]) - low + 1).max(axis=0)
        cols = low[:, 0, None] + np.arange(win_w)  # (N, ww) cell columns (may run past the map)
        rows = low[:, 1, None] + np.arange(win_h)  # (N, wh)
        rx = (cols * stride + offset - start[:, 0, None])[:, None, :]  # (N, 1, ww)
        ry = (rows * stride + offset - start[:, 1, None])[:, :, None]  # (N, wh, 1)
        ux, uy = unit[:, 0, None, None], unit[:, 1, None, None]
        along = rx * ux + ry * uy  # (N, wh, ww)
        ortho = rx * uy - ry * ux
        beyond = np.maximum(-along, 0.0) + np.maximum(along - length[p_idx, l_idx, None, None], 0.0)
        dist = np.sqrt(np.square(ortho) + np.square(beyond))  # distance to the segment
        inside = (rows < target_h)[:, :, None] & (cols < target_w)[:, None, :]
        n, wi, wj = np.nonzero((dist <= reach) & inside)
        i, j = rows[n, wi], cols[n, wj]
        weight = np.exp(-np.square(np.maximum(dist[n, wi, wj] - band, 0.0)) / (2.0 * sigma * sigma))
        cell = (l_idx[n] * target_h + i) * target_w + j  # (limb, row, col) flattened
        size = len(limbs) * target_h * target_w
        count = np.bincount(cell, minlength=size)
        scale = 1.0 / np.maximum(count, 1)
        out = np.stack([np.bincount(cell, weight * unit[n, k], minlength=size) * scale for k in (0, 1)], axis=-1)
        out = out.reshape(len(limbs), target_h, target_w, 2).transpose(1, 2, 0, 3).astype(np.float32)
    return np.ascontiguousarray(out.reshape(target_h, target_w, 2 * len(limbs)))
