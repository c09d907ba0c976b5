"""Spatial augmentation as one affine transform per sample.

Image, mask and keypoints all move with the same 2x3 matrix ``M`` (input pixel -> network input
pixel), composed as ``flips . T(out_centre + t) . R(theta) . S(s) . T(-centre)``:

- centre and scale by ``spatial_augmentation_mode``:
  ``person_centric``: the person of interest's bbox centre, scaled so its bbox height is
  ``target_person_scale`` of the input height (samples without a person of interest fall back to
  ``center_aug``); ``center_aug``: the image centre, the whole image fitted into the input;
  ``random_aug``: like ``center_aug`` but centred on a uniformly random point of the image;
- zoom: with probability ``zoom_prob`` the scale is divided by a ratio in
  [``zoom_ratio_min``, ``zoom_ratio_max``] (above 1 zooms out);
- rotation: uniform in [``rotate_deg_min``, ``rotate_deg_max``] (min null = [-max, max]);
- translation: uniform in the x/y ranges, in input pixels, or as a fraction of the input size
  when ``use_translate_ratio``; a range that is not a whole number of output strides (8 px) is
  widened symmetrically to the next whole number (the demo's 20 px become 24), so that every
  point's sub-stride offset (its position modulo 8) is uniform: a uniform draw over a partial
  stride favours some offsets, and the network then learns positions only on part of each cell
  (extension; TLT's m1 range of 80 px is unchanged);
- flips: left-right with ``flip_lr_prob``, top-bottom with ``flip_tb_prob``; either one mirrors the
  person, so the caller swaps left/right joints when exactly one of them happened.

Random draws come from a generator seeded with (random_seed, sample counter): the same seed gives
the same augmentations whatever the parallelism.
"""

from __future__ import annotations

import math

import numpy as np

from bpnet.specs.train import MODEL_STRIDE, SpatialAugParams

NUM_DRAWS = 9


def draws(seed: int, counter: int) -> np.ndarray:
    """NUM_DRAWS uniforms in [0, 1) for one sample."""
    return np.random.default_rng([seed, counter]).random(NUM_DRAWS)


def _lerp(u: float, low: float, high: float) -> float:
    return low + (high - low) * u


def translation_range(low: float, high: float) -> tuple[float, float]:
    """[low, high] widened symmetrically to a whole number of strides (an empty range stays)."""
    width = high - low
    if width <= 0:
        return low, high
    pad = (math.ceil(width / MODEL_STRIDE - 1e-9) * MODEL_STRIDE - width) / 2.0
    return low - pad, high + pad


def transform(params: SpatialAugParams, mode: str, out_h: int, out_w: int, image_h: int, image_w: int,
              person_bbox: np.ndarray | None, u: np.ndarray | None) -> tuple[np.ndarray, bool]:
    """(M as a 3x3 matrix, whether left/right joints must swap). ``u`` None: no random augmentation."""
    fit = min(out_h / image_h, out_w / image_w)
    centre = ((image_w - 1) / 2.0, (image_h - 1) / 2.0)
    scale = fit
    if mode == "person_centric" and person_bbox is not None:
        x, y, w, h = (float(v) for v in person_bbox)
        centre, scale = (x + w / 2.0, y + h / 2.0), params.target_person_scale * out_h / max(h, 1.0)
    elif mode == "random_aug" and u is not None:
        centre = (u[7] * (image_w - 1), u[8] * (image_h - 1))
    angle, tx, ty, flip_lr, flip_tb = 0.0, 0.0, 0.0, False, False
    if u is not None:
        flip_lr, flip_tb = bool(u[0] < params.flip_lr_prob), bool(u[1] < params.flip_tb_prob)
        angle = math.radians(_lerp(u[2], *params.rotation_range))
        if u[3] < params.zoom_prob:
            scale /= _lerp(u[4], params.zoom_ratio_min, params.zoom_ratio_max)
        if params.use_translate_ratio:
            x_range = (params.translate_ratio_min * out_w, params.translate_ratio_max * out_w)
            y_range = (params.translate_ratio_min * out_h, params.translate_ratio_max * out_h)
        else:
            x_range = (params.translate_min_x, params.translate_max_x)
            y_range = (params.translate_min_y, params.translate_max_y)
        tx, ty = _lerp(u[5], *translation_range(*x_range)), _lerp(u[6], *translation_range(*y_range))
    cos, sin = math.cos(angle) * scale, math.sin(angle) * scale
    ox, oy = (out_w - 1) / 2.0 + tx, (out_h - 1) / 2.0 + ty
    cx, cy = centre
    m = np.array([[cos, -sin, ox - cos * cx + sin * cy],
                  [sin, cos, oy - sin * cx - cos * cy],
                  [0.0, 0.0, 1.0]])
    flips = np.array([[-1.0 if flip_lr else 1.0, 0.0, out_w - 1.0 if flip_lr else 0.0],
                      [0.0, -1.0 if flip_tb else 1.0, out_h - 1.0 if flip_tb else 0.0],
                      [0.0, 0.0, 1.0]])
    return flips @ m, flip_lr != flip_tb  # each flip is a mirror: one of them swaps left and right


def apply_to_points(m: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Map (..., 2) points through the 3x3 matrix."""
    return xy @ m[:2, :2].T + m[:2, 2]


def scale_of(m: np.ndarray) -> float:
    """The transform's isotropic scale factor."""
    return float(math.sqrt(abs(np.linalg.det(m[:2, :2]))))


def rescaled(m: np.ndarray, input_factor: float, output_factor: float) -> np.ndarray:
    """The same mapping between pixel grids whose pixels are ``input_factor`` / ``output_factor``
    times larger (a reduced JPEG decode, a mask pooled to the target stride): pixel centres map
    onto pixel centres."""
    def grid(f: float) -> np.ndarray:  # coarse pixel index -> fine pixel index
        return np.array([[f, 0.0, (f - 1) / 2.0], [0.0, f, (f - 1) / 2.0], [0.0, 0.0, 1.0]])

    return np.linalg.inv(grid(output_factor)) @ m @ grid(input_factor)
