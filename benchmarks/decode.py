"""Milliseconds per image of decoding (everything after the network) on one core, and its AP.

368x368 input, 8x upsampling (the guide's defaults), maps rendered by the label generator for 1,
5 and 20 standing people in a grid (with a little noise so that peaks are not perfect), decoded
and scored with pycocotools (``benchmarks/decode_real.py`` does the same on real COCO crowds).
Times are CPU time per image on one core, the median and the best of the repetitions (the machine
is shared: state its load). Goals: <= 5 ms for 5 people and <= 8 ms (median) for 20.
Last, uniform-random maps (an untrained network's output): peaks, people, time and peak memory
(``max_peaks_per_joint`` bounds them; before it: 7,495 peaks, 4.3 s, 910 MB).
"""

from __future__ import annotations

import os
import time
import tracemalloc

import numpy as np
from decode_real import round_trip  # the sibling script (benchmarks/ is on sys.path when run)

from bpnet.data.synth import COCO_KEYPOINTS
from bpnet.infer.decode import DecodeParams, decode, find_peaks

# A standing person, COCO order, unit height, centred on the origin.
POSE = np.array([(0, -.41), (.025, -.44), (-.025, -.44), (.055, -.43), (-.055, -.43), (.11, -.32), (-.11, -.32),
                 (.2, -.18), (-.2, -.18), (.24, -.05), (-.24, -.05), (.07, 0), (-.07, 0), (.09, .23), (-.09, .23),
                 (.09, .46), (-.09, .46)])


def people_doc(count: int, size: int, rng: np.random.Generator) -> dict:
    """A one-image COCO document: ``count`` people in a grid on a size x size image."""
    cols = int(np.ceil(np.sqrt(count)))
    rows = int(np.ceil(count / cols))
    height = 0.8 * size / rows
    anns = []
    for k in range(count):
        r, c = divmod(k, cols)
        centre = ((c + 0.5) * size / cols, (r + 0.5) * size / rows)
        xy = POSE * height * rng.uniform(0.9, 1.1) + centre + rng.normal(0, 1.5, (17, 2))
        low, high = xy.min(axis=0), xy.max(axis=0)
        anns.append({"id": k + 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "num_keypoints": 17,
                     "keypoints": np.concatenate([xy, np.full((17, 1), 2.0)], axis=1).ravel().tolist(),
                     "bbox": [*low.tolist(), *(high - low).tolist()], "area": float(np.prod(high - low))})
    return {"images": [{"id": 1, "height": size, "width": size}], "annotations": anns,
            "categories": [{"id": 1, "name": "person", "keypoints": list(COCO_KEYPOINTS)}]}


def main(size: int = 368, reps: int = 50) -> None:
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    rng = np.random.default_rng(0)
    for count in (1, 5, 20):
        stats, median, best = round_trip(people_doc(count, size, rng), size, noise=rng, reps=reps)
        goal = 5.0 if count <= 5 else 8.0
        print(f"decode {count:2d} people at {size}x{size}, 8x upsampling: {median:.2f} ms/image median, "
              f"{best:.2f} best, AP {stats[0]:.3f} (goal {goal:.0f} ms: {median / goal:.2f}x)")
    noise(size, rng)


def noise(size: int, rng: np.random.Generator, reps: int = 5) -> None:
    """Decode uniform-random maps: the worst case the cap on peaks per joint bounds."""
    cells = size // 8
    heat = rng.uniform(0, 1, (cells, cells, 19)).astype(np.float32)
    paf = rng.uniform(-1, 1, (cells, cells, 38)).astype(np.float32)
    params = DecodeParams()
    peaks = len(find_peaks(heat, params).score)
    seconds = []
    for _ in range(reps):
        t0 = time.process_time()
        people = decode(heat, paf, params, size)
        seconds.append(time.process_time() - t0)
    tracemalloc.start()
    decode(heat, paf, params, size)
    peak_mb = tracemalloc.get_traced_memory()[1] / 1e6
    tracemalloc.stop()
    print(f"decode uniform noise at {size}x{size}: {peaks} peaks (cap {params.max_peaks_per_joint} per joint), "
          f"{len(people)} people, {1e3 * np.median(seconds):.0f} ms median, {1e3 * min(seconds):.0f} best, "
          f"{peak_mb:.0f} MB peak traced memory")


if __name__ == "__main__":
    main()
