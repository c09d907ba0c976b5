"""Which part of a train Dataset each training worker reads: whole record shards of its own, and
only the raw files (images, masks) that those shards' records name.

Several workers train one model on disjoint parts of the data, so that a worker needs (and, on a
cluster, fetches) only its part: worker ``i`` of ``n`` reads the ``i``-th of ``n`` equal runs of
consecutive shards. The shards must divide evenly among the workers (a worker with no shard, or
with more shards than another, would see its samples more often than the others), which is
checked here with an error naming the shard count and the worker count. dataset_convert writes
consecutive, equal-sized shards (they differ by one sample at most), so the workers' parts
differ by at most ``shards / n`` samples: over an epoch every sample is seen once up to that.

The same function partitions the shards in the trainer (``bpnet.data.loader``: which records a
worker's input pipeline reads) and in whatever fetches a worker's data (``worker_share``: which
objects of the Dataset artifact it downloads), so both agree by construction. Pure functions on
the dataset's layout: no storage, no cluster.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from bpnet.errors import DataError

T = TypeVar("T")


def worker_shards(shards: Sequence[T], workers: int) -> list[list[T]]:
    """The shards each of ``workers`` reads, in worker order: equal runs of consecutive shards."""
    if workers < 1:
        raise DataError(f"workers: {workers} — expected at least 1")
    if len(shards) < workers or len(shards) % workers:
        raise DataError(f"num_shards: {len(shards)} record shards cannot be split evenly among {workers} workers "
                        f"(each reads whole shards of its own): convert with num_shards a multiple of {workers}")
    per = len(shards) // workers
    return [list(shards[i * per:(i + 1) * per]) for i in range(workers)]


@dataclass(frozen=True)
class WorkerShare:
    """What one worker reads of a train Dataset: its record shards (names in the records folder),
    the raw files their records name (relative to the dataset root) and its sample count."""

    shards: list[str]
    files: list[str]
    samples: int


def worker_share(metadata: Mapping[str, Any], rank: int, workers: int, where: str = "records manifest") -> WorkerShare:
    """Worker ``rank`` of ``workers``'s share, from the metadata of dataset_convert's manifest
    (``shards``, ``shard_samples`` and the per-shard file index ``shard_files``)."""
    if not 0 <= rank < workers:
        raise DataError(f"worker rank {rank}: expected 0..{workers - 1}")
    index = metadata.get("shard_files")
    if index is None:
        raise DataError(f"{where}: has no per-shard file index (converted by an older version): convert the "
                        "dataset again so that each worker can fetch only its own shards' images")
    shards = worker_shards(metadata["summary"]["shards"], workers)[rank]
    files = sorted({f for shard in shards for f in index[shard]})
    return WorkerShare(shards, files, sum(metadata["shard_samples"][s] for s in shards))
