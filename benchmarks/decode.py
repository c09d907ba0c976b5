"""Milliseconds per image of decoding (everything after the network) on one core, and its AP.

368x368 input, 8x upsampling (the guide's defaults), maps rendered by the label generator for 1,
5 and 20 standing people in a grid (with a little noise so that peaks are not perfect), decoded
and scored with pycocotools (``benchmarks/decode_real.py`` does the same on real COCO crowds).
Times are CPU time per image on one core, the median and the best of the repetitions (the machine
is shared: state its load). Goals: <= 5 ms for 5 people and <= 8 ms (median) for 20.
"""

from __future__ import annotations

import os

import numpy as np
from decode_real import round_trip  # the sibling script (benchmarks/ is on sys.path when run)

from bpnet.pose import COCO_KEYPOINTS

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


if __name__ == "__main__":
    main()
