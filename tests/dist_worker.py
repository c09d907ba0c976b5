"""One worker of the two-worker tests (run as ``python -m tests.dist_worker SPEC RESULTS OUT
[PARTITIONS]``): ``bpnet.train.train`` with TF_CONFIG from the environment (or alone without it,
making the global batches of PARTITIONS workers), appending a
sha256 of the worker's weights after every step to OUT.trace and saving the weights after the
first step to OUT-step1.npz, so the test can compare workers step by step and with one process."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np

from bpnet import train as trainer
from bpnet.specs import TrainSpec, load_spec


def traced_step_fn(out: str):
    original = trainer.Trainer._step_fn

    def step_fn(self: trainer.Trainer):
        step = original(self)

        def run(images, labels):
            result = step(images, labels)
            weights = [np.ascontiguousarray(v.numpy()) for v in self.model.weights]
            with open(f"{out}.trace", "a") as f:
                f.write(hashlib.sha256(b"".join(w.tobytes() for w in weights)).hexdigest() + "\n")
            if not Path(f"{out}-step1.npz").exists():
                np.savez(f"{out}-step1.npz", *weights)
            return result

        return run

    return step_fn


def main(spec: str, results: str, out: str, partitions: str = "1") -> None:
    trainer.Trainer._step_fn = traced_step_fn(out)
    trainer.train(load_spec(spec, TrainSpec), results, key="dist", partitions=int(partitions))


if __name__ == "__main__":
    main(*sys.argv[1:5])
