"""Pruning the full default model, and what pruning buys at inference on this CPU.

Prints: seconds to prune the default 3-stage BpNetLiteModel (16.8 M parameters, random weights,
the lowest threshold of a ladder that removes about half the parameters); then images/s of the
unpruned and the pruned model at 224x320 (the guide's smallest deployment size), batch 1 and 4,
with the ratio.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import time  # noqa: E402

import numpy as np  # noqa: E402

from bpnet.model.architecture import Architecture  # noqa: E402
from bpnet.model.bpnet import build_model, count_params  # noqa: E402
from bpnet.prune import PruneSettings, prune_model  # noqa: E402

HEIGHT, WIDTH = 224, 320


def images_per_second(model, batch: int, seconds: float = 8.0) -> float:
    x = np.random.default_rng(0).uniform(-0.5, 0.5, (batch, HEIGHT, WIDTH, 3)).astype(np.float32)
    model(x, training=False)  # trace once
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        model(x, training=False)
        done += batch
    return done / (time.perf_counter() - start)


def main() -> None:
    model = build_model(Architecture(stages=3), seed=1)
    # Random weights have flat filter norms: raise the threshold until about half the parameters go.
    for threshold in (0.90, 0.92, 0.94, 0.95, 0.96, 0.97, 0.98):
        start = time.perf_counter()
        result = prune_model(model, PruneSettings(pruning_threshold=threshold), flops_shape=(HEIGHT, WIDTH))
        took = time.perf_counter() - start
        if result.report["parameters"]["kept"] <= 0.55:
            break
    report = result.report
    print(f"prune default model ({count_params(model):,} params), -pth {threshold}: {took:.1f} s -> "
          f"{report['parameters']['after']:,} params ({report['parameters']['kept']:.0%} kept), "
          f"{report['flops']['after'] / 1e9:.1f} GFLOPs ({report['flops']['kept']:.0%} of "
          f"{report['flops']['before'] / 1e9:.1f}) at {HEIGHT}x{WIDTH}")
    for batch in (1, 4):
        unpruned = images_per_second(model, batch)
        pruned = images_per_second(result.model, batch)
        print(f"inference {HEIGHT}x{WIDTH} batch {batch}: unpruned {unpruned:.2f} img/s, pruned {pruned:.2f} img/s "
              f"(x{pruned / unpruned:.2f})")


if __name__ == "__main__":
    main()
