"""Bytes each pipeline step reads from the object store per run, today, measured on a synthetic
dataset of N images against a local S3 server (moto) and projected to COCO train2017 and 10x COCO.

What is measured: the raw dataset and the two Dataset artifacts that dataset_convert makes are
put on the S3 server; each step's read is then done the way it happens on a cluster (KFP
downloads every input artifact whole into the step's pod; a multi-worker job's workers each fetch
the train artifact by URI, components.worker) and the bytes that came back are counted. The
projection scales the measured per-sample record bytes and uses COCO's image bytes (train2017:
118,287 images, 18.0 GiB; val2017: 5,000 images, 0.77 GiB).

Only "before" figures are printed: the per-worker shard reads and the small calibration-image
artifact of issue 26, section 3, are not implemented yet.

    python benchmarks/data_movement.py [--images 2000] [--workers 4]
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import tempfile
import uuid
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

COCO = {"train": (118_287, 18.0 * 2**30), "val": (5_000, 0.77 * 2**30)}  # images, image bytes
EVALUATIONS = 6  # unpruned, pruned, retrained, Keras at the export mode, ONNX fp32, ONNX INT8


def fetched_bytes(uri: str, dest: Path) -> int:
    """Download everything under ``uri`` as a step's pod gets it; the bytes that arrived."""
    from bpnet.storage import open_store

    open_store(uri).mirror(dest)
    return sum(f.stat().st_size for f in dest.rglob("*") if f.is_file())


def split_sizes(folder: Path) -> tuple[int, int]:
    """(image bytes, everything else) of a Dataset artifact folder."""
    from bpnet.layout import RAW_DIR

    files = [f for f in folder.rglob("*") if f.is_file()]
    images = sum(f.stat().st_size for f in files if RAW_DIR in f.relative_to(folder).parts)
    return images, sum(f.stat().st_size for f in files) - images


def gib(n: float) -> str:
    return f"{n / 2**30:8.2f} GiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000, help="synthetic train images (val: a tenth)")
    parser.add_argument("--workers", type=int, default=4, help="workers of a multi-worker train/retrain")
    args = parser.parse_args()

    from moto.server import ThreadedMotoServer

    from bpnet.data.synth import generate
    from bpnet.storage import S3Store, open_store
    from components import runtime

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    os.environ.update(BPNET_S3_ENDPOINT=f"http://127.0.0.1:{port}", BPNET_S3_ACCESS_KEY="bench",
                      BPNET_S3_SECRET_KEY="bench")
    try:
        S3Store("s3://bench").client.make_bucket("bench")
        root = f"s3://bench/{uuid.uuid4().hex}"
        with tempfile.TemporaryDirectory(prefix="bpnet-data-movement-") as tmp:
            work = Path(tmp)
            generate(work / "raw", seed=3, train_images=args.images, val_images=max(1, args.images // 10),
                     image_size=(640, 480))
            open_store(f"{root}/raw").upload_tree(work / "raw")
            spec = (work / "raw" / "coco_spec.json").read_text()
            runtime.dataset_convert(f"{root}/raw", spec, work / "train_data", work / "val_data", True, 1)
            for split in ("train_data", "val_data"):
                open_store(f"{root}/{split}").upload_tree(work / split)
            raw = fetched_bytes(f"{root}/raw", work / "get" / "raw")
            train = fetched_bytes(f"{root}/train_data", work / "get" / "train")
            val = fetched_bytes(f"{root}/val_data", work / "get" / "val")
            train_images, train_other = split_sizes(work / "train_data")
            val_images, val_other = split_sizes(work / "val_data")
    finally:
        server.stop()

    n_train, n_val = args.images, max(1, args.images // 10)
    steps = {"dataset_convert (raw dataset)": raw, "train (train artifact)": train,
             "retrain (train artifact)": train, "calibrate (train artifact)": train,
             f"evaluate x{EVALUATIONS} + inference (val artifact)": (EVALUATIONS + 1) * val}
    total = sum(steps.values())
    print(f"measured on the S3 server: {n_train} train + {n_val} val synthetic images (640x480)")
    for name, size in steps.items():
        print(f"  {name:44s} {size / 2**20:10.1f} MiB")
    print(f"  {'per run':44s} {total / 2**20:10.1f} MiB")
    print(f"  a {args.workers}-worker train (each worker fetches the train artifact): "
          f"{args.workers * train / 2**20:.1f} MiB instead of {train / 2**20:.1f} MiB")

    per_train_record = train_other / n_train  # records, masks, specs per sample
    per_val_record = val_other / n_val
    for label, scale in (("COCO train2017/val2017", 1), ("10x COCO", 10)):
        (ti, tb), (vi, vb) = COCO["train"], COCO["val"]
        train_artifact = scale * (tb + ti * per_train_record)
        val_artifact = scale * (vb + vi * per_val_record)
        raw_bytes = scale * (tb + vb)
        run = raw_bytes + 3 * train_artifact + (EVALUATIONS + 1) * val_artifact
        print(f"projection, {label}: train artifact {gib(train_artifact)}, val artifact {gib(val_artifact)}, "
              f"per run {gib(run)} (+{gib((args.workers - 1) * 2 * train_artifact)} with {args.workers}-worker "
              "train and retrain)")
    print("after: not measured — per-worker shard reads and the calibration-image artifact are not implemented")


if __name__ == "__main__":
    main()
