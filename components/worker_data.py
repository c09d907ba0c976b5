"""A training worker's share of the train Dataset artifact, read straight from its object-store URI.

A worker is not a KFP pod: nothing is downloaded for it. It reads the records manifest, then only
its own record shards and the images and masks their records name (``bpnet.data.partition``
decides which; the MinIO credentials come from the environment, as for every step), so n workers
together move the train split once instead of n times. The launcher checks the same share before
it creates a job, so shards that do not divide among the workers fail the step at once.
"""

from __future__ import annotations

import logging
from pathlib import Path

from bpnet.artifacts import parse_manifest, read_manifest
from bpnet.data.convert import output_paths
from bpnet.data.partition import WorkerShare, worker_share
from bpnet.errors import DataError
from bpnet.folders import SPLITS
from bpnet.layout import DATASET_SPEC, RAW_DIR, RECORDS_DIR
from bpnet.storage import open_store
from components.distributed import store_uri

log = logging.getLogger("bpnet.components")

TRAIN_PREFIX = next(iter(SPLITS))  # the train split's record prefix
RECORDS_MANIFEST = output_paths(Path(RECORDS_DIR) / TRAIN_PREFIX)[0].as_posix()


def train_share(uri: str, rank: int, workers: int) -> WorkerShare:
    """Worker ``rank`` of ``workers``'s share of the train Dataset artifact at ``uri``, from its
    records manifest (one small object); shards that do not divide among the workers raise."""
    where = f"{uri}/{RECORDS_MANIFEST}"
    raw = open_store(store_uri(uri)).read_bytes(RECORDS_MANIFEST)
    if raw is None:
        raise DataError(f"{where}: missing; not a train Dataset artifact of dataset_convert")
    return worker_share(parse_manifest(raw, where)["metadata"], rank, workers, where)


def fetch_train_share(uri: str, dest: Path, rank: int, workers: int) -> WorkerShare:
    """Download into ``dest`` what worker ``rank`` of ``workers`` reads of the train Dataset
    artifact at ``uri``: its dataset spec and records manifest, its own shards and their files.
    Each object arrives whole or not at all (the store's temp + rename); the trainer checks the
    shards against the manifest."""
    store = open_store(store_uri(uri))
    store.download_file(RECORDS_MANIFEST, dest / RECORDS_MANIFEST)
    share = worker_share(read_manifest(dest / RECORDS_MANIFEST)["metadata"], rank, workers,
                         f"{uri}/{RECORDS_MANIFEST}")
    for relative in (DATASET_SPEC, *(f"{RECORDS_DIR}/{s}" for s in share.shards),
                     *(f"{RAW_DIR}/{f}" for f in share.files)):
        store.download_file(relative, dest / relative)
    log.info("worker %d of %d: fetched %d shard(s) (%d samples) and %d image/mask file(s) of %s", rank, workers,
             len(share.shards), share.samples, len(share.files), uri)
    return share
