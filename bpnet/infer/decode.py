"""Bottom-up multi-person decoding: peaks, PAF-scored limbs, greedy matching, assembly.

The maps the network predicts at stride 8 are conceptually upsampled by
``output_upsampling_factor`` with bicubic interpolation (OpenCV's INTER_CUBIC); decoding is
defined on those upsampled maps, but never materializes them:

- peaks: local maxima of the stride-8 heatmap (over the 4 direct neighbours, so diagonal neighbours
  can both be; above half the threshold) are
  candidates; for each, only a 9x9 neighbourhood is upsampled (all crops at once, evaluated
  separably on just that window) and every local maximum of the upsampled map within +-1 cell
  above ``heatmap_threshold`` is a peak (so the same joint of two people 1-2 cells apart, one
  coarse maximum, gives two peaks; maxima closer than a quarter cell to the window's highest are
  ripples on one hilltop). The bicubic taps of that window lie inside the crop, so the values
  equal those of the full upsampled map. A parabola through the peak and its neighbours places it
  between upsampled pixels; that position scores limbs. The output position of a peak alone in
  its stride-8 cell is a parabola through the log of three stride-8 values per axis (exact for a
  gaussian, where bicubic upsampling biases it toward cell centres and flattens it at the border:
  ``_gaussian_refine``). Only pixels of the upsampled map count (none beyond its border). A flat
  top is one peak at its centroid: a plateau of the stride-8 map wider than 2 cells
  (``_plateau_peaks``: saturated or constant maps) and a group of equal neighbouring upsampled
  maxima (``_fine_plateaus``: a 1x1 map), so a flat map gives a peak per joint, not one per pixel.
  At most ``max_peaks_per_joint`` peaks per joint are kept, the highest (equal ones in raster
  order): noise gives hundreds, and limb scoring costs the product of two joints' counts.
- limbs: for every candidate pair of a limb's two joints, ``num_samples`` points on the segment
  (rounded to the upsampled grid) are scored by the dot product of the PAF with the segment's
  direction. PAFs are upsampled along x only (cheap: map height x upsampled width), and only over
  the rows a limb's candidate segments reach; the y taps are applied per sample point, which is
  the same bicubic value. Pairs that fail a first, sparser
  sampling at every point are dropped early (exactly: they could not pass). A pair is kept when at least
  ``min_paf_fraction`` of the samples exceed ``paf_threshold`` and the mean score plus the distance
  prior ``min(0.5 * net_height / length - 1, 0)`` is positive.
- matching: per limb, pairs by descending rank, each peak used once. A pair's rank is its limb
  score times the geometric mean of its two peaks' values: ranked by the PAF alone, a weak
  spurious peak (a ripple at 0.1-0.2 beside a joint, as a trained network's maps have) whose
  segment runs along the true limb's field takes the true peak first, and the true joint is lost
  (docs/real_training.md, section 6).
- assembly: connections are merged into people by shared peaks (limbs outwards from the neck,
  see ``assembly_plan``; limbs closing a cycle never start a person); fragments that no limb
  joins because their linking joint is missing (legs and upper body of a person without a neck)
  are joined by geometry (``_merge_fragments``); people with fewer
  than ``min_parts`` parts or a mean score below ``min_person_score`` are dropped.

Everything is vectorized over peaks, pairs and sample points; Python loops run only over limbs,
plateaus and accepted connections. No large matrix product is used: BLAS runs those
multithreaded, which is many times slower on a shared core. The same input always gives the same
output.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import cv2
import numpy as np

from bpnet.pose import BPNET_SKELETON, Skeleton
from bpnet.specs.train import MODEL_STRIDE as STRIDE

_CUBIC_A = -0.75  # OpenCV's bicubic kernel
_MIN_SEPARATION = 0.25  # stride-8 cells between two peaks of one joint found in the same window
_TIE = 1e-5  # relative difference under which neighbouring upsampled values are equal (float rounding)
_CROP = 9  # stride-8 cells per refinement crop (candidate +-4: bicubic taps of the window at any factor)


@dataclass(frozen=True)
class DecodeParams:
    heatmap_threshold: float = 0.1
    paf_threshold: float = 0.05
    upsampling: tuple[int, int] = (8, 8)  # (y, x) factors, as output_upsampling_factor
    num_samples: int = 10
    min_paf_fraction: float = 0.8
    min_parts: int = 3
    min_person_score: float = 0.2
    merge_ratio: float = 2.0  # fragments without a linking joint: max gap / longest limb (0: never join)
    # Peaks kept per joint, the best (noise, as an untrained network outputs, has hundreds per joint,
    # whose pairs cost seconds and a GB): over 3x the 20 people a frame is scored on (COCO's maxDets,
    # serving's max_people; the real COCO fixture has at most 11), ~8x8 people at 368 px, each a few
    # stride-8 cells tall, which is as dense as stride-8 maps resolve people.
    max_peaks_per_joint: int = 64


@dataclass
class Person:
    keypoints: np.ndarray  # (J, 3): x, y, score in network-input pixels; score 0 = missing
    score: float
    num_parts: int


@dataclass
class Peaks:
    """All peaks: coordinates in network-input pixels (on the upsampled maps, used to score limbs,
    and re-placed for output), score, joint type."""

    xy: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    score: np.ndarray = field(default_factory=lambda: np.zeros(0))
    joint: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    located: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))  # output positions: see _gaussian_refine


def _fine_to_input(fine: np.ndarray, factor: float) -> np.ndarray:
    """Upsampled-map pixel -> network-input pixel (cell centre convention of the labels)."""
    return (fine + 0.5) * STRIDE / factor - 0.5


def _input_to_fine(x: np.ndarray, factor: float) -> np.ndarray:
    return (x + 0.5) * factor / STRIDE - 0.5


def find_peaks(heatmaps: np.ndarray, params: DecodeParams) -> Peaks:
    """Peaks of the upsampled joint heatmaps (the background channel, last, is ignored)."""
    fy, fx = params.upsampling
    h, w, channels = heatmaps.shape
    joints = channels - 1
    maps = heatmaps[..., :joints]
    # candidates: maxima over the 4 direct neighbours, so that a second person's joint a diagonal cell
    # away (beyond the +-1 cell window of the first) is a candidate of its own
    candidate = maps > 0.5 * params.heatmap_threshold
    candidate[1:] &= maps[1:] >= maps[:-1]
    candidate[:-1] &= maps[:-1] >= maps[1:]
    candidate[:, 1:] &= maps[:, 1:] >= maps[:, :-1]
    candidate[:, :-1] &= maps[:, :-1] >= maps[:, 1:]
    flat = _plateau_peaks(candidate, maps, params.heatmap_threshold)  # and removes them from `candidate`
    cell, joint = np.divmod(np.flatnonzero(candidate), joints)
    rows, cols = np.divmod(cell, w)
    if not len(rows):
        return _ordered(flat.xy, flat.score, flat.joint, flat.located, params.max_peaks_per_joint)
    half = _CROP // 2
    # the crops of all candidates, (N, crop, crop); indices clipped to the map = resize's border rule
    offsets = np.arange(-half, half + 1)
    r = np.clip(rows[:, None] + offsets, 0, h - 1)
    c = np.clip(cols[:, None] + offsets, 0, w - 1)
    crops = np.ascontiguousarray(heatmaps, dtype=np.float32).reshape(-1).take(
        ((r * w)[:, :, None] + c[:, None, :]) * channels + joint[:, None, None])
    # upsampled pixels whose source lies within +-1 cell of the candidate (crop coordinate `half`),
    # plus one pixel each side for the sub-pixel fit; their bicubic taps all lie inside the crop
    wy, y0 = _window_weights(fy, half)
    wx, x0 = _window_weights(fx, half)
    # separable bicubic, only where needed: (N, Y, X). A stack of small products, each too small for
    # BLAS to use threads: one large product (measured: 1.7 ms vs 0.1 ms) goes multithreaded, many
    # times slower on a busy or pinned core
    window = wy @ (crops @ wx.T)
    # every local maximum of the upsampled map in the window, not just the highest: the same joint of
    # two people 1-2 cells apart gives one coarse maximum but two upsampled ones. Found with the
    # windows along the last axis, (Y, X, N), where numpy's element-wise maxima run fastest.
    n_cand, ny, nx = window.shape
    last = np.ascontiguousarray(window.transpose(1, 2, 0))
    rows3 = np.maximum(np.maximum(last[:-2], last[1:-1]), last[2:])
    around = np.maximum(np.maximum(rows3[:, :-2], rows3[:, 1:-1]), rows3[:, 2:])  # 3x3 max of the inner pixels
    inner = last[1:-1, 1:-1]
    is_max = np.zeros(window.shape, bool)  # the outer ring only serves the inner pixels' neighbourhoods
    is_max[:, 1:-1, 1:-1] = ((inner >= around * (1 - _TIE)) & (inner > params.heatmap_threshold)).transpose(2, 0, 1)
    n, by, bx = np.unravel_index(np.flatnonzero(is_max), is_max.shape)  # window coordinates, by window
    fine_y = (rows[n] - half) * fy + y0 - 1 + by
    fine_x = (cols[n] - half) * fx + x0 - 1 + bx
    inside = (fine_y >= 0) & (fine_y < h * fy) & (fine_x >= 0) & (fine_x < w * fx)  # the upsampled map's pixels
    n, by, bx, fine_y, fine_x = n[inside], by[inside], bx[inside], fine_y[inside], fine_x[inside]
    if not len(n):
        return _ordered(flat.xy, flat.score, flat.joint, flat.located, params.max_peaks_per_joint)
    off_y, off_x, one = _fine_plateaus(n, by, bx, window.shape)
    n, by, bx, fine_y, fine_x, off_y, off_x = (a[one] for a in (n, by, bx, fine_y, fine_x, off_y, off_x))
    score = window[n, by, bx]
    # a second maximum in a window counts only a quarter cell or more from the window's highest one: two
    # people, not a ripple on the same hilltop (noise in a trained network's output). Maxima are
    # sorted by window, in raster order within it; a window's highest is its first by descending
    # score (the first in raster order among equal ones).
    starts = np.flatnonzero(np.concatenate([[True], n[1:] != n[:-1]]))
    best_first = np.lexsort((-score, n))
    top_idx = np.repeat(best_first[starts], np.diff(np.append(starts, len(n))))
    distinct = np.hypot((by - by[top_idx]) / fy, (bx - bx[top_idx]) / fx) >= _MIN_SEPARATION
    distinct[top_idx] = True
    n, by, bx, fine_y, fine_x, off_y, off_x, score = (
        a[distinct] for a in (n, by, bx, fine_y, fine_x, off_y, off_x, score))
    # overlapping windows find a peak twice: keep its first finding (a 1-D key)
    key = (joint[n] * h * fy + fine_y) * (w * fx) + fine_x
    _, first = np.unique(key, return_index=True)
    idx = np.sort(first)
    m, cy, cx = n[idx], by[idx], bx[idx]
    # sub-pixel: a parabola through the peak and its two neighbours on the upsampled grid, per axis
    # (along an axis a plateau of maxima extends on: its centroid)
    off_y, off_x = off_y[idx], off_x[idx]
    off_y = np.where(off_y != 0, off_y, _parabola(window[m, cy - 1, cx], window[m, cy, cx], window[m, cy + 1, cx]))
    off_x = np.where(off_x != 0, off_x, _parabola(window[m, cy, cx - 1], window[m, cy, cx], window[m, cy, cx + 1]))
    xy = np.stack([_fine_to_input(fine_x[idx] + off_x, fx), _fine_to_input(fine_y[idx] + off_y, fy)], axis=1)
    located = _gaussian_refine(maps, np.concatenate([xy, flat.xy]), np.concatenate([joint[m], flat.joint]))
    located[len(xy):] = flat.located  # a plateau's centroid is its position: no gaussian to fit
    return _ordered(np.concatenate([xy, flat.xy]), np.concatenate([score[idx], flat.score]),
                    np.concatenate([joint[m], flat.joint]), located, params.max_peaks_per_joint)


def _fine_plateaus(n: np.ndarray, y: np.ndarray, x: np.ndarray, shape: tuple[int, int, int]
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(off_y, off_x, keep) for the window maxima at (n, y, x) (sorted, windows of ``shape``).

    Two maxima next to each other are equal (up to ``_TIE``), so a connected group of them is a
    flat top of the upsampled map (a map flat across a window, as a 1x1 map is; a symmetric hilltop
    gives a pair): it is one peak, its member nearest its centroid (the first in raster order of
    equally near ones), placed at the centroid (``off_y``, ``off_x`` from that member; 0 elsewhere).
    """
    off_y, off_x = np.zeros(len(n)), np.zeros(len(n))
    keep = np.ones(len(n), bool)
    _, ny, nx = shape
    flat = (n * ny + y) * nx + x
    neighbours = np.stack([flat + 1, flat + nx - 1, flat + nx, flat + nx + 1])  # the later half of 8
    at = np.minimum(np.searchsorted(flat, neighbours), len(flat) - 1)  # flat is sorted
    found = flat[at] == neighbours
    if not found.any():
        return off_y, off_x, keep  # the usual case: isolated maxima
    if (found.sum(axis=0) + np.bincount(at[found], minlength=len(flat))).max() == 1:
        # only pairs (the usual tie): the earlier member, moved half way to the later one
        direction, member = np.nonzero(found)
        keep[at[direction, member]] = False
        off_y[member] = np.array([0.0, 0.5, 0.5, 0.5])[direction]
        off_x[member] = np.array([0.5, -0.5, 0.0, 0.5])[direction]
        return off_y, off_x, keep
    # only the windows holding a group, stacked (their outer rings are never maxima, so groups
    # never cross from one window to the next)
    windows, slot = np.unique(n, return_inverse=True)
    involved = np.zeros(len(windows), bool)
    involved[slot[found.any(axis=0)]] = True
    sel = involved[slot]
    rank = np.cumsum(involved) - 1
    local = (rank[slot[sel]] * ny + y[sel]) * nx + x[sel]
    mask = np.zeros((int(involved.sum()) * ny, nx), np.uint8)
    mask.reshape(-1)[local] = 1
    _, labels, _, centroids = cv2.connectedComponentsWithStats(mask, connectivity=8)
    label = labels.reshape(-1)[local]
    ys, xs = y[sel], x[sel]
    cy, cx = centroids[label, 1] - rank[slot[sel]] * ny, centroids[label, 0]
    order = np.lexsort((local, (ys - cy) ** 2 + (xs - cx) ** 2, label))
    chosen = np.zeros(len(local), bool)
    chosen[order[np.r_[True, label[order][1:] != label[order][:-1]]]] = True
    members = np.flatnonzero(sel)
    keep[members] = chosen
    off_y[members[chosen]] = (cy - ys)[chosen]
    off_x[members[chosen]] = (cx - xs)[chosen]
    return off_y, off_x, keep


def _ordered(xy: np.ndarray, score: np.ndarray, joint: np.ndarray, located: np.ndarray, cap: int) -> Peaks:
    """Peaks by joint, best first (limb matching relies on it; equal scores in raster order), at
    most ``cap`` per joint: the best ones."""
    order = np.lexsort((xy[:, 0], xy[:, 1], -score, joint))
    count = np.bincount(joint, minlength=1)
    rank = np.arange(len(order)) - np.repeat(np.cumsum(count) - count, count)  # within the joint's run
    order = order[rank < cap]
    return Peaks(xy[order], score[order].astype(np.float64), joint[order], located[order])


def _plateau_peaks(candidate: np.ndarray, maps: np.ndarray, threshold: float) -> Peaks:
    """One peak per plateau of the stride-8 maps wider than 2 cells, its cells removed from ``candidate``.

    Two candidates side by side are equal (each is at least the other), so a connected region of
    candidates is a plateau. Up to 2x2 cells it is the top of a hill centred between cells (a
    gaussian has no wider flat top), whose windows find the one upsampled maximum as usual. A wider
    one is a flat top (a saturated or constant map, a nearest-neighbour upsampled one): bicubic
    upsampling rings at its edges, so its upsampled maxima say nothing about where the joint is, and
    a constant map would give a peak per upsampled pixel. It gives one peak, at its centroid (in
    network-input pixels), scored by its value when that is above ``threshold``.
    """
    across, down = candidate[:, 1:] & candidate[:, :-1], candidate[1:] & candidate[:-1]
    if not (across.any() or down.any()):
        return Peaks()
    tied = np.zeros_like(candidate)
    tied[:, 1:] |= across
    tied[:, :-1] |= across
    tied[1:] |= down
    tied[:-1] |= down
    xy, score, joint = [], [], []
    for j in np.flatnonzero(tied.any(axis=(0, 1))).tolist():
        _, labels, stats, centroids = cv2.connectedComponentsWithStats(tied[..., j].astype(np.uint8), connectivity=4)
        wide = np.flatnonzero((stats[:, cv2.CC_STAT_WIDTH] > 2) | (stats[:, cv2.CC_STAT_HEIGHT] > 2))
        wide = wide[wide > 0]  # label 0: the background
        if not len(wide):
            continue
        ys, xs = np.nonzero(np.isin(labels, wide))
        candidate[ys, xs, j] = False
        label, member = np.unique(labels[ys, xs], return_index=True)  # = wide, sorted
        value = maps[ys[member], xs[member], j]
        keep = value > threshold
        xy.append(_fine_to_input(centroids[label[keep]], 1))  # cell centres
        score.append(value[keep])
        joint.append(np.full(int(keep.sum()), j))
    if not xy:
        return Peaks()
    xy = np.concatenate(xy)
    return Peaks(xy, np.concatenate(score).astype(np.float64), np.concatenate(joint), xy)


def _gaussian_refine(maps: np.ndarray, xy: np.ndarray, joint: np.ndarray) -> np.ndarray:
    """Re-place isolated peaks by a parabola through the log of the stride-8 values (per axis).

    Heatmaps are gaussians (the labels are; trained outputs approximate them), and the log of a
    sampled gaussian is exactly a parabola, so three cells locate its centre to a fraction of a
    pixel, where bicubic upsampling pulls it toward cell centres and flattens it against the map
    border. Only a peak that is alone in its coarse cell, at a coarse maximum along the axis with
    both neighbours inside the map, is re-placed; close people keep their upsampled peaks.
    """
    h, w = maps.shape[:2]
    cell = np.round((xy - (STRIDE - 1) / 2.0) / STRIDE).astype(np.int64)  # nearest cell: (x, y)
    cx, cy = np.clip(cell[:, 0], 0, w - 1), np.clip(cell[:, 1], 0, h - 1)
    key = (joint * h + cy) * w + cx
    alone = np.bincount(key)[key] == 1
    out = xy.copy()
    for axis, (c, size) in enumerate(((cx, w), (cy, h))):
        inside = alone & (c > 0) & (c < size - 1)
        lo, hi = np.maximum(c - 1, 0), np.minimum(c + 1, size - 1)
        at = (lambda k: maps[cy, k, joint]) if axis == 0 else (lambda k: maps[k, cx, joint])
        left, centre, right = (np.log(np.maximum(at(k), 1e-6)) for k in (lo, c, hi))
        ok = inside & (centre >= left) & (centre >= right)
        offset = _parabola(left, centre, right)
        out[:, axis] = np.where(ok, (c + offset) * STRIDE + (STRIDE - 1) / 2.0, xy[:, axis])
    return out


@functools.cache
def _window_weights(factor: int, centre: int) -> tuple[np.ndarray, int]:
    """Bicubic weights (upsampled pixels x crop cells) of the refinement window along one axis, and
    the upsampled index (in crop coordinates) of the window's first inner pixel."""
    first = int(np.ceil((centre - 1 + 0.5) * factor - 0.5))
    last = int(np.floor((centre + 1 + 0.5) * factor - 0.5))
    fine = np.arange(first - 1, last + 2)
    src = (fine + 0.5) / factor - 0.5
    base = np.floor(src).astype(np.int64)
    weights = np.zeros((len(fine), _CROP))
    np.put_along_axis(weights, base[:, None] + np.arange(-1, 3), _cubic_weights(src - base), axis=1)
    weights = weights.astype(np.float32)
    weights.flags.writeable = False  # cached: shared by every call
    return weights, first


def _parabola(left: np.ndarray, centre: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Offset in [-0.5, 0.5] of the vertex of the parabola through three equally spaced values."""
    curvature = left - 2.0 * centre + right
    offset = np.where(curvature < 0, 0.5 * (left - right) / np.where(curvature < 0, curvature, -1.0), 0.0)
    return np.clip(offset, -0.5, 0.5)


def _cubic_weights(t: np.ndarray) -> np.ndarray:
    """OpenCV's bicubic weights for fractional offsets t: (..., 4) for taps -1, 0, 1, 2."""
    a = _CUBIC_A
    w0 = ((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a
    w1 = ((a + 2) * t - (a + 3)) * t * t + 1
    u = 1 - t
    w2 = ((a + 2) * u - (a + 3)) * u * u + 1
    return np.stack([w0, w1, w2, 1 - w0 - w1 - w2], axis=-1)


@functools.cache
def _row_taps(h: int, fy: int) -> tuple[np.ndarray, np.ndarray]:
    """For each upsampled row of a map h rows high: the row, in the map padded by two replicated rows
    each side (resize's border rule), of its first bicubic source row (the 4 taps are it and the next
    three), and the 4 weights: lookup tables (h * fy,) and (4, h * fy)."""
    fine = np.arange(h * fy)
    src = (fine + 0.5) / fy - 0.5
    base = np.floor(src).astype(np.intp)
    return base + 1, np.ascontiguousarray(_cubic_weights(src - base).T.astype(np.float32))


@dataclass(frozen=True)
class _Segments:
    """Candidate limbs as segments on the upsampled grid, coordinate axis first, so that arrays of
    sample points are (samples, pairs): numpy's inner loops then run over the many pairs, not over a
    handful of samples or taps (which costs several times more)."""

    start: np.ndarray  # (2, N) upsampled-grid x, y of the first joint
    delta: np.ndarray  # (2, N) from the first joint to the second, upsampled-grid pixels
    unit: np.ndarray  # (2, N) limb direction in network-input pixels
    limb: np.ndarray  # (N,) limb index (PAF channels 2 * limb, 2 * limb + 1)

    def __getitem__(self, idx: np.ndarray) -> _Segments:
        return _Segments(self.start[:, idx], self.delta[:, idx], self.unit[:, idx], self.limb[idx])


@dataclass(frozen=True)
class _UpsampledPafs:
    """The PAFs upsampled along x only, over the rows each limb's samples can reach: flat, per limb
    a block of x-component rows then as many y-component rows, of the maps padded by two replicated
    rows above and below (resize's border rule), so that the 4 bicubic y taps of any upsampled row
    are 4 consecutive rows. Along y the taps are applied per sample point only, which gives the same
    bicubic value as upsampling everything."""

    values: np.ndarray
    h: int  # map rows
    fy: int
    width: int  # upsampled columns
    block: np.ndarray  # (L,) first row of each limb's block
    top: np.ndarray  # (L,) padded-map row the block starts at
    rows: np.ndarray  # (L,) rows per component in the block

    @classmethod
    def of(cls, pafs: np.ndarray, upsampling: tuple[int, int], reach: np.ndarray) -> _UpsampledPafs:
        """``reach``: (L, 2) lowest and highest upsampled row each limb's samples can lie on. A crowd
        spans the image, but a few people leave most rows unsampled."""
        fy, fx = upsampling
        h, w, channels = pafs.shape
        first, _ = _row_taps(h, fy)
        empty = reach[:, 0] > reach[:, 1]  # limbs without candidates
        lo = np.clip(reach[:, 0], 0, h * fy - 1)
        hi = np.clip(reach[:, 1], 0, h * fy - 1)
        top = np.where(empty, 0, first[lo])
        rows = np.where(empty, 0, first[hi] + 4 - top)
        per_channel = np.repeat(rows, 2)  # channels 2k, 2k + 1 of limb k
        start = np.cumsum(per_channel) - per_channel
        channel = np.repeat(np.arange(channels), per_channel)
        padded = np.pad(pafs.astype(np.float32), ((2, 2), (0, 0), (0, 0)), mode="edge")
        planes = padded.transpose(2, 0, 1).reshape(-1, w)  # a row per (channel, padded map row)
        picked = planes.take(channel * (h + 4) + top[channel // 2] + np.arange(len(channel)) - start[channel], axis=0)
        # one single-channel image: OpenCV's fastest resize path (twice as fast as x, y in two channels)
        fine = cv2.resize(picked, (w * fx, len(picked)), interpolation=cv2.INTER_CUBIC) if len(picked) else picked
        return cls(fine.ravel(), h, fy, w * fx, start[::2], top, rows)

    def dots(self, seg: _Segments, t: np.ndarray) -> np.ndarray:
        """PAF . limb direction at fractions ``t`` along each segment, the points rounded to the
        upsampled grid: (len(t), N)."""
        first, weights = _row_taps(self.h, self.fy)
        t = t.astype(np.float32)[:, None]
        col = np.clip(np.rint(seg.start[0] + t * seg.delta[0]), 0, self.width - 1).astype(np.intp)
        row = np.clip(np.rint(seg.start[1] + t * seg.delta[1]), 0, self.h * self.fy - 1).astype(np.intp)
        at = (self.block[seg.limb] - self.top[seg.limb] + first.take(row)) * self.width + col  # x, first tap
        to_y = self.rows[seg.limb] * self.width
        vx = np.zeros(at.shape, np.float32)
        vy = np.zeros(at.shape, np.float32)
        for k in range(4):  # tap by tap: no (4, len(t), N) temporaries
            wk = weights[k].take(row)
            tap = at + k * self.width
            vx += self.values.take(tap) * wk
            vy += self.values.take(tap + to_y) * wk
        return vx * seg.unit[0] + vy * seg.unit[1]


def _segments(xy: np.ndarray, fine: np.ndarray, ia: np.ndarray, ib: np.ndarray, limb: np.ndarray) -> _Segments:
    """Segments of candidate pairs (peaks ia -> ib) from the peaks' network-input and upsampled-grid
    positions (computed once per peak, not per pair)."""
    start = fine.take(ia, axis=1)
    d = (xy.take(ib, axis=1) - xy.take(ia, axis=1)).astype(np.float32)
    unit = d / np.maximum(np.hypot(d[0], d[1]), 1e-6)
    return _Segments(start, fine.take(ib, axis=1) - start, unit, limb)


def _limb_scores(pafs: _UpsampledPafs, seg: _Segments, length: np.ndarray, params: DecodeParams,
                 net_h: int) -> tuple[np.ndarray, np.ndarray]:
    """(score, accepted) of N candidate pairs (segments of ``length`` network-input pixels).

    Most pairs join joints of different people and fail everywhere, so sampling runs in chunks: first
    as many interior points as may fail, then the rest in two halves; after each chunk, pairs with
    more failures than ``min_paf_fraction`` allows are dropped (they could not pass, so the outcome
    is exactly that of sampling everything), and no point is sampled twice."""
    n = params.num_samples
    t = np.linspace(0.0, 1.0, n)
    allowed_failures = n - int(np.ceil(params.min_paf_fraction * n - 1e-9))
    # interior points: at the ends, a joint shared with a neighbour's field could pass by accident
    subset = sorted({round(k * (n - 1) / (allowed_failures + 2)) for k in range(1, allowed_failures + 2)})
    if len(subset) == allowed_failures + 1 and len(subset) < n:
        rest = [i for i in range(n) if i not in subset]
        chunks = [subset, rest[: len(rest) // 2], rest[len(rest) // 2:]]
    else:
        chunks = [list(range(n))]
    total = np.zeros(len(length))
    failures = np.zeros(len(length), np.int64)
    idx = np.arange(len(length))
    for chunk in (c for c in chunks if c):
        dots = pafs.dots(seg if len(idx) == len(length) else seg[idx], t[chunk])
        total[idx] += dots.sum(axis=0)
        failures[idx] += (dots <= params.paf_threshold).sum(axis=0)
        idx = idx[failures[idx] <= allowed_failures]
        if not len(idx):
            break
    score = np.full(len(length), -np.inf)
    accepted = np.zeros(len(length), bool)
    if len(idx):
        prior = np.minimum(0.5 * net_h / np.maximum(length[idx], 1e-6) - 1.0, 0.0)
        score[idx] = total[idx] / n + prior
        accepted[idx] = (score[idx] > 0) & (length[idx] > 0)
    return score, accepted


@functools.cache
def assembly_plan(skeleton: Skeleton) -> tuple[tuple[int, ...], frozenset[int]]:
    """Limb processing order and the redundant limbs, from the skeleton's graph alone.

    Limbs are taken outwards from the pose config's ``assembly_start`` joints (by default the
    best-connected joint, the default skeleton's neck), by the graph distance of their nearer joint
    (ties in PAF channel order), so a person grows from its torso; a limb
    closing a cycle in that order (e.g. eye-ear, once ear and eye hang off shoulder and nose)
    is redundant: it can confirm or join people but never start one. Nothing depends on the
    skeleton's limb (channel) order beyond tie-breaking.
    """
    degree = np.bincount(np.asarray(skeleton.limbs).ravel(), minlength=skeleton.num_joints)
    depth = np.full(skeleton.num_joints, skeleton.num_joints)
    depth[list(skeleton.assembly_start) or [int(degree.argmax())]] = 0
    for _ in range(skeleton.num_joints):  # Bellman-Ford on unit edges: enough rounds for any tree
        for a, b in skeleton.limbs:
            depth[a] = min(depth[a], depth[b] + 1)
            depth[b] = min(depth[b], depth[a] + 1)
    order = sorted(range(len(skeleton.limbs)), key=lambda k: (min(depth[j] for j in skeleton.limbs[k]), k))
    root = list(range(skeleton.num_joints))

    def find(j: int) -> int:
        while root[j] != j:
            j = root[j]
        return j

    redundant = set()
    for k in order:
        ra, rb = (find(j) for j in skeleton.limbs[k])
        if ra == rb:
            redundant.add(k)
        root[ra] = rb
    return tuple(order), frozenset(redundant)


@functools.cache
def _bridges(skeleton: Skeleton) -> np.ndarray:
    """(m, a, b) for joints a, b that are not linked to each other but both to m (e.g. right
    shoulder and right hip via the neck): the pairs that can join two fragments missing m."""
    linked = np.zeros((skeleton.num_joints,) * 2, bool)
    for a, b in skeleton.limbs:
        linked[a, b] = linked[b, a] = True
    out = [(m, a, b) for m in range(skeleton.num_joints) for a in np.flatnonzero(linked[m])
           for b in np.flatnonzero(linked[m]) if a < b and not linked[a, b]]
    return np.array(out, np.int64).reshape(-1, 3)


def _merge_fragments(parts: np.ndarray, score: np.ndarray, xy: np.ndarray, skeleton: Skeleton,
                     params: DecodeParams) -> tuple[np.ndarray, np.ndarray]:
    """Join fragments of one person that no limb connects, by geometry.

    A person whose linking joint is missing (the neck when a shoulder is unlabelled or unseen) falls
    apart into, e.g., an upper body and a pair of legs: the skeleton has no shoulder-hip limb, and no
    PAF joins them. Two fragments with disjoint joints are joined through a joint m missing in both
    when a joint a of one and b of the other are both linked to m and lie within ``merge_ratio``
    times the longest limb already found in the two fragments (a torso is about one thigh long);
    the closest such pairs join first, as long as their joints stay disjoint.
    """
    alive = np.flatnonzero((parts >= 0).sum(axis=1) > 0)
    if len(alive) < 2 or params.merge_ratio <= 0:
        return parts, score
    frag = parts[alive]
    has = frag >= 0
    # only fragments with disjoint joints can join (the whole people of a crowd never do)
    i, j = np.nonzero(np.triu((has.astype(np.int64) @ has.T.astype(np.int64)) == 0, 1))
    if not len(i):
        return parts, score
    pos = np.where(has[..., None], xy[np.maximum(frag, 0)], np.nan)  # (F, J, 2)
    limbs = np.asarray(skeleton.limbs)
    lengths = np.linalg.norm(pos[:, limbs[:, 0]] - pos[:, limbs[:, 1]], axis=-1)  # (F, L), nan if missing
    longest = np.nanmax(np.where(np.isnan(lengths), -np.inf, lengths), axis=1)
    scale = np.maximum(longest[i], longest[j])
    bridges = _bridges(skeleton)
    m, a, b = (np.concatenate([bridges[:, 0]] * 2), np.concatenate([bridges[:, 1], bridges[:, 2]]),
               np.concatenate([bridges[:, 2], bridges[:, 1]]))  # both directions
    gap = np.linalg.norm(pos[i][:, a] - pos[j][:, b], axis=-1)  # (pairs, 2B): i's joint a to j's joint b
    ok = ~has[i][:, m] & ~has[j][:, m] & ~np.isnan(gap)
    best = np.where(ok, gap, np.inf).min(axis=-1) / np.maximum(scale, 1e-6)
    close = best <= params.merge_ratio
    i, j, best = i[close], j[close], best[close]
    group = {int(f): int(f) for f in alive}  # a fragment joined into another lives on in that one

    def find(f: int) -> int:
        while group[f] != f:
            f = group[f]
        return f

    for k in np.argsort(best, kind="stable").tolist():
        a, b = find(int(alive[i[k]])), find(int(alive[j[k]]))
        if a != b and not ((parts[a] >= 0) & (parts[b] >= 0)).any():
            group[b] = a
            parts[a] = np.maximum(parts[a], parts[b])
            score[a] += score[b]
            parts[b] = -1
            score[b] = 0.0
    return parts, score


def _limb_reach(fine_y: np.ndarray, joint: np.ndarray, skeleton: Skeleton) -> np.ndarray:
    """(L, 2) lowest and highest upsampled row a limb's sample points can lie on: those of its
    joints' peaks, one row wider for rounding (empty, low > high, without peaks)."""
    low = np.full(skeleton.num_joints, np.inf)
    high = np.full(skeleton.num_joints, -np.inf)
    np.minimum.at(low, joint, fine_y)
    np.maximum.at(high, joint, fine_y)
    ja, jb = np.asarray(skeleton.limbs).T
    has = np.isfinite(low[ja]) & np.isfinite(low[jb])
    lo = np.where(has, np.floor(np.minimum(low[ja], low[jb])) - 1, 1)
    hi = np.where(has, np.ceil(np.maximum(high[ja], high[jb])) + 1, 0)
    return np.stack([lo, hi], axis=1).astype(np.int64)


def _candidate_pairs(joint: np.ndarray, skeleton: Skeleton) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(limb, peak a, peak b) of every pair of a limb's two joints, all limbs at once, from the
    peaks' joints (sorted: each joint's peaks are one run)."""
    count = np.bincount(joint, minlength=skeleton.num_joints)
    first = np.cumsum(count) - count
    ja, jb = np.asarray(skeleton.limbs).T
    size = count[ja] * count[jb]
    limb = np.repeat(np.arange(len(ja)), size)
    q = np.arange(len(limb)) - np.repeat(np.cumsum(size) - size, size)  # index within the limb's pairs
    per_b = count[jb][limb]
    return limb, first[ja][limb] + q // np.maximum(per_b, 1), first[jb][limb] + q % np.maximum(per_b, 1)


def decode(heatmaps: np.ndarray, pafs: np.ndarray, params: DecodeParams, net_h: int,
           skeleton: Skeleton = BPNET_SKELETON) -> list[Person]:
    """People from one image's stride-8 maps ((h, w, J+1) heatmaps, (h, w, 2L) PAFs)."""
    peaks = find_peaks(heatmaps, params)
    joints = skeleton.num_joints
    if len(peaks.score) == 0:
        return []
    fy, fx = params.upsampling
    limb, ia, ib = _candidate_pairs(peaks.joint, skeleton)
    if not len(limb):
        return []
    xy = np.ascontiguousarray(peaks.xy.T)  # (2, peaks): coordinates first, see _Segments
    fine = np.stack([_input_to_fine(xy[0], fx), _input_to_fine(xy[1], fy)]).astype(np.float32)
    upsampled = _UpsampledPafs.of(pafs, params.upsampling, _limb_reach(fine[1], peaks.joint, skeleton))
    length = np.hypot(*(xy.take(ib, axis=1) - xy.take(ia, axis=1)))
    score, ok = _limb_scores(upsampled, _segments(xy, fine, ia, ib, limb), length, params, net_h)
    limb, ia, ib, score = limb[ok], ia[ok], ib[ok], score[ok]
    plan_order, redundant = assembly_plan(skeleton)
    rank = np.empty(len(skeleton.limbs), np.int64)
    rank[list(plan_order)] = np.arange(len(plan_order))
    strength = score * np.sqrt(peaks.score[ia] * peaks.score[ib])  # PAF and both joints' evidence
    order = np.lexsort((-strength, rank[limb]))  # by limb in assembly order, best first
    limb, ia, ib, score = limb[order], ia[order], ib[order], score[order]

    # plain Python lists: the loop touches single elements, which numpy makes several times slower
    parts_of: list[list[int]] = []  # per person: peak id per joint, -1 = missing
    people_score: list[float] = []
    peak_score = peaks.score.tolist()
    owner: dict[int, int] = {}  # peak id -> person
    used: set[int] = set()
    current = -1
    for k, a, b, s in zip(limb.tolist(), ia.tolist(), ib.tolist(), score.tolist(), strict=True):
        if k != current:
            current, used = k, set()
        if a in used or b in used:
            continue  # greedy matching: each peak joins at most one connection per limb
        used.update((a, b))
        ja, jb = skeleton.limbs[k]
        pa, pb = owner.get(a), owner.get(b)
        if pa is None and pb is None:
            if k in redundant:
                continue
            person = [-1] * joints
            person[ja], person[jb] = a, b
            parts_of.append(person)
            people_score.append(peak_score[a] + peak_score[b] + s)
            owner[a] = owner[b] = len(people_score) - 1
        elif pb is None:
            if parts_of[pa][jb] == -1:
                parts_of[pa][jb] = b
                owner[b] = pa
                people_score[pa] += peak_score[b] + s
        elif pa is None:
            if parts_of[pb][ja] == -1:
                parts_of[pb][ja] = a
                owner[a] = pb
                people_score[pb] += peak_score[a] + s
        elif pa != pb and all(p < 0 or q < 0 for p, q in zip(parts_of[pa], parts_of[pb], strict=True)):
            parts_of[pa] = [max(p, q) for p, q in zip(parts_of[pa], parts_of[pb], strict=True)]  # disjoint: merge
            people_score[pa] += people_score[pb] + s
            for peak in parts_of[pb]:
                if peak >= 0:
                    owner[peak] = pa
            parts_of[pb] = [-1] * joints
            people_score[pb] = 0.0

    parts = np.array(parts_of, np.int64).reshape(-1, joints)
    parts, people_score = _merge_fragments(parts, np.asarray(people_score), peaks.xy, skeleton, params)
    count = (parts >= 0).sum(axis=1)
    enough = count >= params.min_parts
    mean = np.where(enough, people_score, 0.0) / np.maximum(count, 1)
    kept = np.flatnonzero(enough & (mean >= params.min_person_score))
    found = parts[kept] >= 0
    peak = np.maximum(parts[kept], 0)
    kps = np.concatenate([np.where(found[..., None], peaks.located[peak], 0.0),
                          np.where(found, peaks.score[peak], 0.0)[..., None]], axis=-1)  # (people, J, 3)
    people = [Person(kps[i], float(mean[k]), int(count[k])) for i, k in enumerate(kept.tolist())]
    people.sort(key=lambda p: -p.score)
    return people
