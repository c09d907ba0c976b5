"""Milliseconds per image of decoding (everything after the network) on one core.

368x368 input, 8x upsampling (the guide's defaults), maps rendered by the label generator for 1,
5 and 20 people (with a little noise so that peaks are not perfect). Decoding is upsampling,
peaks, limb scoring and assembly. Goal: <= 5 ms for 5 people and <= 8 ms for 20.
"""

from __future__ import annotations

import os

os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

import time  # noqa: E402

import numpy as np  # noqa: E402

from bpnet.data import labels  # noqa: E402
from bpnet.infer.decode import DecodeParams, decode  # noqa: E402
from bpnet.pose import BPNET_SKELETON, COCO_KEYPOINTS, dataset_to_model_keypoints  # noqa: E402

# A standing person, COCO order, unit height, centred on the origin.
POSE = np.array([(0, -.41), (.025, -.44), (-.025, -.44), (.055, -.43), (-.055, -.43), (.11, -.32), (-.11, -.32),
                 (.2, -.18), (-.2, -.18), (.24, -.05), (-.24, -.05), (.07, 0), (-.07, 0), (.09, .23), (-.09, .23),
                 (.09, .46), (-.09, .46)])


def people(count: int, size: int, rng: np.random.Generator) -> np.ndarray:
    cols = int(np.ceil(np.sqrt(count)))
    rows = int(np.ceil(count / cols))
    height = 0.8 * size / rows
    out = np.zeros((count, 17, 3), np.float32)
    for k in range(count):
        r, c = divmod(k, cols)
        centre = ((c + 0.5) * size / cols, (r + 0.5) * size / rows)
        out[k, :, :2] = POSE * height * rng.uniform(0.9, 1.1) + centre + rng.normal(0, 1.5, (17, 2))
        out[k, :, 2] = 2
    return dataset_to_model_keypoints(out, COCO_KEYPOINTS)


def main(size: int = 368, reps: int = 50) -> None:
    rng = np.random.default_rng(0)
    params = DecodeParams(upsampling=(8, 8))
    for count in (1, 5, 20):
        kps = people(count, size, rng)
        heat = labels.heatmaps(kps, size // 8, size // 8, 8, 7.0) + rng.uniform(0, 0.03, (46, 46, 19))
        paf = labels.pafs(kps, BPNET_SKELETON, size // 8, size // 8, 8, 8.0, 0.24) + rng.normal(0, 0.02, (46, 46, 38))
        heat, paf = heat.astype(np.float32), paf.astype(np.float32)
        found = decode(heat, paf, params, size)
        t0 = time.perf_counter()
        for _ in range(reps):
            decode(heat, paf, params, size)
        ms = (time.perf_counter() - t0) / reps * 1e3
        goal = 5.0 if count <= 5 else 8.0
        print(f"decode {count:2d} people at {size}x{size}, 8x upsampling: {ms:.2f} ms/image "
              f"({len(found)} found; goal {goal:.0f} ms: {ms / goal:.2f}x)")


if __name__ == "__main__":
    main()
