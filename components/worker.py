"""``python -m components.worker``: the entry point of every pod of a multi-worker training job;
the work is described in $BPNET_WORKER_TASK (components.distributed.WorkerTask). Of the train
Dataset artifact a worker fetches only its own share (components.worker_data)."""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from bpnet.cluster import cluster_from_env
from bpnet.errors import BpnetError
from bpnet.storage import open_store
from components import runtime
from components.distributed import WorkerTask, store_uri
from components.training_jobs import TASK_ENV
from components.worker_data import fetch_train_share

log = logging.getLogger("bpnet.components")


def run_worker(task: WorkerTask, work: Path) -> dict[str, Any]:
    """One worker pod: fetch its share of the train data and the other inputs, restore the chief's
    checkpoints if a previous attempt left some, train (bpnet.train picks MultiWorkerMirroredStrategy
    from the cluster), and as the chief upload the checkpoints (always) and the results (on success)."""
    cluster = cluster_from_env()
    chief = cluster is None or cluster.is_chief
    rank, workers = (cluster.rank, cluster.size) if cluster else (0, 1)
    inputs = {"train_data": work / "train_data"}
    fetch_train_share(task.train_data, inputs["train_data"], rank, workers)
    for name in ("val_data", "pretrained"):
        uri = getattr(task, name)
        if uri:
            inputs[name] = work / name
            open_store(store_uri(uri)).mirror(inputs[name])
    results = work / "model"
    checkpoints = open_store(f"{store_uri(task.output)}/checkpoints")
    if checkpoints.exists():
        checkpoints.fetch(results / "checkpoints")
        log.info("restored the chief's checkpoints from %s/checkpoints", task.output)
    try:
        metadata = runtime.train(inputs["train_data"], task.train_spec, task.pose_config, results, task.gpus,
                                 pretrained_dir=inputs.get("pretrained"), warm_start=task.warm_start,
                                 val_dir=inputs.get("val_data"), overrides=task.overrides, role=task.role,
                                 own_shards=workers > 1)
    finally:
        if chief and (results / "checkpoints").is_dir():
            checkpoints.upload_tree(results / "checkpoints")
    if chief:
        open_store(f"{store_uri(task.output)}/model").upload_tree(results)
        log.info("chief: results uploaded to %s/model", task.output)
    return metadata


def worker_main() -> int:
    """``python -m components.worker``: the task from $BPNET_WORKER_TASK."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    text = os.environ.get(TASK_ENV)
    if not text:
        log.error("%s is not set: this entry point runs inside a training job's pod", TASK_ENV)
        return 2
    try:
        with tempfile.TemporaryDirectory(prefix="bpnet-worker-") as work:
            run_worker(WorkerTask.from_json(text), Path(work))
    except BpnetError as exc:
        log.error("%s", exc)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(worker_main())
