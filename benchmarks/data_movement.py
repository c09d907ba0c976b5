"""Bytes each pipeline step reads from the object store per run, before and after issue 26's
section 3 (each step moves only what it needs), measured on a synthetic dataset of N images
against a local S3 server (moto) and projected to COCO train2017 and 10x COCO.

What is measured: the raw dataset and the two Dataset artifacts dataset_convert makes are put on
the S3 server; each step's read is then really done, and the bytes the S3 client downloaded are
counted (``S3Store.download_file``, which every read goes through):

- before: KFP downloads every input artifact whole into a step's pod (train, retrain and
  calibrate each got the whole train artifact); a multi-worker job's workers each fetched the
  whole train artifact by URI (``Store.mirror``).
- after: calibration_data fetches from the raw dataset only the ``cal_batches x cal_batch_size``
  images calibration takes, and calibrate downloads that small artifact; each of W workers fetches
  only its own record shards and their images (``components.worker.fetch_train_share``). A
  single-pod train/retrain keeps the KFP download, and so does a multi-worker step's launcher pod
  (KFP downloads its train_data input although it only passes the URI on: counted in both).

The evaluations (6) and inference read the val artifact whole, before and after. The projection
scales the measured bytes per sample (records, masks, specs) and the measured overhead of the
worker shares, with COCO's image bytes (train2017: 118,287 images, 18.0 GiB; val2017: 5,000
images, 0.77 GiB).

    python benchmarks/data_movement.py [--images 2000] [--workers 4] [--shards 8] [--cal-images 500]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

COCO = {"train": (118_287, 18.0 * 2**30), "val": (5_000, 0.77 * 2**30)}  # images, image bytes
EVALUATIONS = 6  # unpruned, pruned, retrained, Keras at the export mode, ONNX fp32, ONNX INT8


class Downloads:
    """Counts the bytes the S3 client downloads while a step's read is done."""

    def __init__(self) -> None:
        from bpnet.storage import S3Store

        self.total = 0
        original = S3Store.download_file

        def counted(store: S3Store, relative: str, local: Path) -> None:
            original(store, relative, local)
            self.total += local.stat().st_size

        S3Store.download_file = counted  # type: ignore[method-assign]

    def measure(self, read: Callable[[], object]) -> int:
        before = self.total
        read()
        return self.total - before


def image_bytes(folder: Path) -> tuple[int, int]:
    """(image bytes, everything else) of a Dataset artifact folder."""
    from bpnet.layout import RAW_DIR

    files = [f for f in folder.rglob("*") if f.is_file()]
    images = sum(f.stat().st_size for f in files if RAW_DIR in f.relative_to(folder).parts
                 and f.suffix.lower() in (".jpg", ".jpeg", ".png"))
    return images, sum(f.stat().st_size for f in files) - images


def gib(n: float) -> str:
    return f"{n / 2**30:8.2f} GiB"


def mib(n: float) -> str:
    return f"{n / 2**20:10.1f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000, help="synthetic train images (val: a tenth)")
    parser.add_argument("--workers", type=int, default=4, help="workers of a multi-worker train/retrain")
    parser.add_argument("--shards", type=int, default=8, help="record shards (a multiple of --workers)")
    parser.add_argument("--cal-images", type=int, default=500, help="cal_batches x cal_batch_size (cluster spec: 500)")
    args = parser.parse_args()

    from moto.server import ThreadedMotoServer

    from bpnet.data.synth import generate
    from bpnet.storage import S3Store, open_store
    from components import runtime
    from components.worker_data import fetch_train_share

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    os.environ.update(BPNET_S3_ENDPOINT=f"http://127.0.0.1:{port}", BPNET_S3_ACCESS_KEY="bench",
                      BPNET_S3_SECRET_KEY="bench")
    count = Downloads()
    n_train, n_val, w = args.images, max(1, args.images // 10), args.workers
    try:
        S3Store("s3://bench").client.make_bucket("bench")
        root = f"s3://bench/{uuid.uuid4().hex}"
        with tempfile.TemporaryDirectory(prefix="bpnet-data-movement-") as tmp:
            work = Path(tmp)
            generate(work / "raw", seed=3, train_images=n_train, val_images=n_val, image_size=(640, 480))
            open_store(f"{root}/raw").upload_tree(work / "raw")
            spec = (work / "raw" / "coco_spec.json").read_text()
            runtime.dataset_convert(f"{root}/raw", spec, work / "train_data", work / "val_data", True, args.shards)
            for split in ("train_data", "val_data"):
                open_store(f"{root}/{split}").upload_tree(work / split)

            def kfp_download(name: str) -> int:
                return count.measure(lambda: open_store(f"{root}/{name}").mirror(work / "get" / name))

            raw, train, val = kfp_download("raw"), kfp_download("train_data"), kfp_download("val_data")
            shares = [count.measure(lambda i=i: fetch_train_share(f"{root}/train_data", work / f"w{i}", i, w))
                      for i in range(w)]
            settings = json.dumps({"cal_batches": args.cal_images, "cal_batch_size": 1})
            cal_fetch = count.measure(lambda: runtime.calibration_data(f"{root}/raw", spec, settings,
                                                                       str(work / "cal")))
            open_store(f"{root}/cal").upload_tree(work / "cal")
            cal = kfp_download("cal")
            train_images, train_other = image_bytes(work / "train_data")
            val_images, val_other = image_bytes(work / "val_data")
    finally:
        server.stop()

    rows = [("dataset_convert (raw dataset)", raw, raw),
            ("calibration_data (its images of the raw dataset)", 0, cal_fetch),
            ("train, one pod (train artifact)", train, train),
            ("retrain, one pod (train artifact)", train, train),
            ("calibrate (before: train artifact; after: calibration images)", train, cal),
            (f"evaluate x{EVALUATIONS} + inference (val artifact)", (EVALUATIONS + 1) * val, (EVALUATIONS + 1) * val)]
    one_before, one_after = (sum(r[k] for r in rows) for k in (1, 2))
    print(f"measured on the S3 server: {n_train} train + {n_val} val synthetic images (640x480), "
          f"{args.shards} record shards, {args.cal_images} calibration images, {w} workers")
    print(f"  {'step (what it reads)':62s} {'before':>14s} {'after':>14s}")
    for name, was, now in rows:
        print(f"  {name:62s} {mib(was)} {mib(now)}")
    print(f"  {'per run, one-pod training':62s} {mib(one_before)} {mib(one_after)}")
    print(f"  {w} workers' train-data reads, per training: before {w} x {mib(train).strip()} = "
          f"{mib(w * train).strip()}; after " + " + ".join(mib(s).strip() for s in shares)
          + f" = {mib(sum(shares)).strip()} ({sum(shares) / train:.3f}x the artifact: only images some record "
          "names, and the records manifest each); the launcher pod's KFP download of the artifact in both")
    print(f"  {f'per run, {w}-worker train and retrain':62s} {mib(one_before + 2 * w * train)} "
          f"{mib(one_after + 2 * sum(shares))}")

    per_train_record = train_other / n_train  # records, masks, specs per image
    per_val_record = val_other / n_val
    shares_bound = max(1.0, sum(shares) / train)  # COCO: as if every train image were in some record
    cal_per_image = cal / args.cal_images / (train_images / n_train)  # artifact bytes per image byte
    print(f"projection (COCO image bytes, measured bytes per record; the {w} workers' reads taken as "
          f"{shares_bound:.3f}x the train artifact, an upper bound):")
    for label, scale in (("COCO train2017/val2017", 1), ("10x COCO", 10)):
        (ti, tb), (vi, vb) = COCO["train"], COCO["val"]
        train_artifact = scale * (tb + ti * per_train_record)
        val_artifact = scale * (vb + vi * per_val_record)
        cal_artifact = args.cal_images * (tb / ti) * cal_per_image  # fixed: it does not grow with the data
        common = scale * (tb + vb) + 2 * train_artifact + (EVALUATIONS + 1) * val_artifact
        before, after = common + train_artifact, common + 2 * cal_artifact
        print(f"  {label}: train artifact {gib(train_artifact).strip()}, val artifact {gib(val_artifact).strip()}, "
              f"calibration images {gib(cal_artifact).strip()}")
        print(f"    per run, one-pod training:   before {gib(before)}  after {gib(after)}")
        print(f"    per run, {w}-worker training: before {gib(before + 2 * w * train_artifact)}  after "
              f"{gib(after + 2 * shares_bound * train_artifact)}")


if __name__ == "__main__":
    main()
