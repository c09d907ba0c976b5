"""Throughput of dataset_convert on the demo data: images/s with and without mask generation.

Prints one line per figure. Run with `make bench`.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

from bpnet.data.convert import ConvertSettings, convert_dataset
from bpnet.data.synth import generate
from bpnet.specs import DatasetSpec, load_spec


def main(train_images: int = 256) -> None:
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "demo"
        t0 = time.perf_counter()
        generate(root, seed=0, train_images=train_images, val_images=8, hard_scenes=True)
        synth_s = time.perf_counter() - t0
        print(f"synth: {train_images / synth_s:.1f} images/s ({train_images} images)")
        spec = load_spec(root / "coco_spec.json", DatasetSpec)
        convert_dataset(spec, Path(tmp) / "warmup", ConvertSettings(mode="test"))  # imports TF once
        figures = {}
        for label, options in (("records only", ConvertSettings()),
                               ("records + masks", ConvertSettings(generate_masks=True)),
                               ("records + masks + check_files",
                                ConvertSettings(generate_masks=True, check_files=True))):
            t0 = time.perf_counter()
            summary = convert_dataset(spec, Path(tmp) / "out" / "train", options)
            elapsed = time.perf_counter() - t0
            figures[label] = summary.images_read / elapsed
            print(f"dataset_convert ({label}): {figures[label]:.1f} images/s, "
                  f"{summary.samples_written / elapsed:.1f} samples/s")
        base = figures["records only"]
        for label, value in figures.items():
            print(f"ratio {label} / records only: {value / base:.2f}")


if __name__ == "__main__":
    main()
