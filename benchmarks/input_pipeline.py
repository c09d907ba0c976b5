"""Samples/s per core of the full training input pipeline (decode + augment + labels + masks).

256x256 inputs with 32x32 targets on COCO-sized (640x480) JPEGs, person-centric augmentation
with the m1 spec's parameters, the process pinned to one CPU core. Also prints the cost of
decoding a 640x480 JPEG at full and half size on the same core, as reference points.
Goal: >= 260 samples/s per core.
"""

from __future__ import annotations

import os

os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core, before TF starts threads
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import logging  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import tensorflow as tf  # noqa: E402
import yaml  # noqa: E402

from bpnet.data.convert import ConvertSettings, convert_dataset  # noqa: E402
from bpnet.data.loader import build_dataset  # noqa: E402
from bpnet.data.synth import generate  # noqa: E402
from bpnet.specs import DatasetSpec, TrainSpec, load_spec  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def rate(fn, n: int) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return n / (time.perf_counter() - t0)


def main(images: int = 200, samples: int = 1500) -> None:
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "coco"
        generate(root, seed=1, train_images=images, val_images=2, image_size=(640, 480), hard_scenes=True)
        convert_dataset(load_spec(root / "coco_spec.json", DatasetSpec), Path(tmp) / "train",
                        ConvertSettings(generate_masks=True))
        spec_data = yaml.safe_load((REPO / "specs/bpnet_train_m1_coco.yaml").read_text())
        spec_data["dataloader"]["pose_config"]["pose_config_path"] = str(REPO / "specs/bpnet_18joints.json")
        spec_data["dataloader"]["dataset_config"].update(
            root_data_path=str(root), train_records_folder_path=tmp,
            dataset_specs={"coco": str(root / "coco_spec.json")})
        (Path(tmp) / "spec.yaml").write_text(yaml.safe_dump(spec_data))
        spec = load_spec(Path(tmp) / "spec.yaml", TrainSpec)
        paths = [Path(tmp) / "train-fold-000-of-001"]
        batch = spec.dataloader.batch_size
        it = iter(build_dataset(spec, paths, batch_size=batch))
        for _ in range(10):  # warm up: graph tracing, autotuning
            next(it)
        t0 = time.perf_counter()
        for _ in range(samples // batch):
            next(it)
        per_core = (samples // batch) * batch / (time.perf_counter() - t0)
        jpeg = (root / "train2017" / "000000000001.jpg").read_bytes()
        full = rate(lambda: tf.io.decode_jpeg(jpeg, channels=3), 300)
        half = rate(lambda: tf.io.decode_jpeg(jpeg, channels=3, ratio=2), 300)
        print(f"input pipeline (decode+augment+labels+masks, 256x256 -> 32x32, 640x480 JPEGs): "
              f"{per_core:.0f} samples/s per core")
        print(f"reference: decode 640x480 JPEG full size {full:.0f}/s, half size {half:.0f}/s per core")
        print(f"ratio pipeline / full-size decode: {per_core / full:.2f}; goal 260 samples/s: {per_core / 260:.2f}x")


if __name__ == "__main__":
    main()
