"""Two or three writers race for one target (a results folder, an output prefix, a release id on a
folder or on S3): exactly one succeeds, the others are refused, and nothing a loser touched is lost.

The writers are threads started together; the winner, once inside its critical section, waits
until every other writer has returned, so the race is real and its order is hypothesis's (which
writer arrives first, and whether the target already holds an earlier complete output). Two
writers in the critical section at once (the bug) would both wait, and both succeed: the test
fails.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bpnet.errors import BpnetError

KINDS = ("convert", "publish_local", "publish_s3", "train")
GIVE_UP_S = 120  # the winner stops waiting for the losers after this (only if two got in)


def tree_digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


class Race:
    """Start ``n`` writers together; the first into the critical section (``enter``) waits there
    until the others have returned."""

    def __init__(self, n: int):
        self.n, self.returned, self.lock = n, 0, threading.Condition()
        self.start = threading.Barrier(n)

    def enter(self) -> None:
        with self.lock:
            self.lock.wait_for(lambda: self.returned >= self.n - 1, timeout=GIVE_UP_S)

    def run(self, writers: list[Callable[[], object]]) -> list[object]:
        outcomes: list[object] = [None] * len(writers)

        def go(i: int) -> None:
            self.start.wait()
            try:
                outcomes[i] = writers[i]()
            except BpnetError as exc:
                outcomes[i] = exc
            finally:
                with self.lock:
                    self.returned += 1
                    self.lock.notify_all()

        threads = [threading.Thread(target=go, args=(i,)) for i in range(len(writers))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return outcomes


def hooked(monkeypatch, owner: object, name: str, race: Race) -> None:
    """``owner.name`` (a function called inside the critical section) first waits in ``race``."""
    real = getattr(owner, name)
    entered = threading.local()

    def wrapper(*args, **kwargs):
        if not getattr(entered, "done", False):
            entered.done = True
            race.enter()
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapper)


def check_one_winner(outcomes: list[object]) -> tuple[int, list[BpnetError]]:
    winners = [i for i, o in enumerate(outcomes) if not isinstance(o, BaseException)]
    losers = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(winners) == 1, outcomes
    assert all("in use by" in str(e) or "exists already" in str(e) for e in losers), losers
    return winners[0], losers


@pytest.fixture(scope="module")
def s3_root():
    """A bucket on one moto server for every example (each example uses a prefix of its own)."""
    import os
    from unittest import mock

    from bpnet.storage import S3Store
    from tests.conftest import MotoServer

    server = MotoServer()
    server.start()
    env = {"BPNET_S3_ENDPOINT": f"http://{server.endpoint}", "BPNET_S3_ACCESS_KEY": "testing",
           "BPNET_S3_SECRET_KEY": "testing"}
    try:
        with mock.patch.dict(os.environ, env):
            S3Store("s3://race").client.make_bucket("race")
            yield "s3://race"
    finally:
        server.stop()


@settings(max_examples=8, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(kind=st.sampled_from(KINDS), writers=st.integers(2, 3), earlier=st.booleans())
def test_of_concurrent_writers_exactly_one_succeeds_and_nothing_is_lost(kind, writers, earlier, synth_dir, converted,
                                                                       s3_root, monkeypatch):
    with tempfile.TemporaryDirectory() as tmp, monkeypatch.context() as patch:
        RACES[kind](Path(tmp), writers, earlier, synth_dir, converted, s3_root, patch)


def race_convert(tmp: Path, n: int, earlier: bool, synth_dir: Path, converted: Path, s3_root: str, patch) -> None:
    from bpnet.data.convert import output_paths
    from bpnet.settings import ConvertSettings
    from bpnet.specs import DatasetSpec, load_spec
    from bpnet.steps import dataset_convert as step
    from bpnet.steps.dataset_convert import dataset_convert

    spec = load_spec(synth_dir / "coco_spec.json", DatasetSpec)
    prefix = tmp / "records" / "val"
    if earlier:
        dataset_convert(spec, prefix, ConvertSettings(mode="test"))
    inputs = tree_digest(synth_dir / "annotations")
    race = Race(n)
    hooked(patch, step, "convert_dataset", race)
    shards = [1 + i for i in range(n)]  # each writer its own sharding: the output says whose it is
    outcomes = race.run([lambda k=k: dataset_convert(spec, prefix, ConvertSettings(mode="test", num_shards=k))
                         for k in shards])
    winner, _ = check_one_winner(outcomes)
    from bpnet.artifacts import read_manifest, verify_files

    manifest = read_manifest(output_paths(prefix)[0])
    verify_files(prefix.parent, manifest)
    assert len(manifest["files"]) == shards[winner]  # the winner's output, whole
    assert tree_digest(synth_dir / "annotations") == inputs


def race_publish(tmp: Path, n: int, earlier: bool, root: str, patch, store: type) -> None:
    from bpnet.release import publish_release, read_latest
    from bpnet.storage import open_store

    if earlier:
        src = tmp / "earlier"
        (src / "model").mkdir(parents=True)
        (src / "model" / "weights.bin").write_bytes(b"earlier")
        publish_release(src, root, "r0", {"AP": 0.1})
    sources = []
    for i in range(n):
        src = tmp / f"src{i}"
        (src / "model").mkdir(parents=True)
        (src / "model" / "weights.bin").write_bytes(f"model {i}".encode() * 1000)
        (src / "metrics.json").write_text(json.dumps({"AP": 0.5 + i / 100}))
        sources.append(src)
    before = [tree_digest(s) for s in sources]
    race = Race(n)
    hooked(patch, store, "upload_file", race)
    polls: list[bool] = []  # whenever latest names a release, is its manifest there?
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            pointer = read_latest(root)
            if pointer is not None:
                polls.append(open_store(pointer["uri"]).read_bytes("MANIFEST.json") is not None)

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        outcomes = race.run([lambda i=i: publish_release(sources[i], root, "same-id", {"AP": 0.5 + i / 100})
                             for i in range(n)])
    finally:
        stop.set()
        poller.join()
    winner, _ = check_one_winner(outcomes)
    assert all(polls)
    latest = read_latest(root)
    assert latest["release"] == "same-id" and latest["metrics"] == {"AP": 0.5 + winner / 100}
    fetched = tmp / "fetched"
    open_store(latest["uri"]).fetch(fetched)  # complete: its manifest verifies ...
    assert tree_digest(fetched) == {**tree_digest(sources[winner]), "MANIFEST.json": tree_digest(fetched)[
        "MANIFEST.json"]}  # ... and the files are the winner's, whose AP latest names
    assert [tree_digest(s) for s in sources] == before
    if earlier:
        open_store(f"{root}/r0").fetch(tmp / "r0")  # the earlier release is untouched


def race_publish_local(tmp, n, earlier, synth_dir, converted, s3_root, patch) -> None:
    from bpnet.storage import LocalStore

    race_publish(tmp, n, earlier, str(tmp / "releases"), patch, LocalStore)


def race_publish_s3(tmp, n, earlier, synth_dir, converted, s3_root, patch) -> None:
    from bpnet.storage import S3Store

    race_publish(tmp, n, earlier, f"{s3_root}/{uuid.uuid4().hex}", patch, S3Store)


def race_train(tmp: Path, n: int, earlier: bool, synth_dir: Path, converted: Path, s3_root: str, patch) -> None:
    from bpnet.artifacts import read_manifest, verify_files
    from bpnet.settings import TrainSettings
    from bpnet.specs import TrainSpec, load_spec
    from bpnet.steps.train import train
    from tests.conftest import write_train_spec

    results = tmp / "run"
    results.mkdir()
    if earlier:
        (results / "notes.txt").write_text("the user's")
    spec = load_spec(write_train_spec(tmp / "t.yaml", synth_dir, converted, num_epoch=1), TrainSpec)
    race = Race(n)
    import bpnet.train

    hooked(patch, bpnet.train, "train", race)
    outcomes = race.run([lambda: train(spec, results, "tiny", TrainSettings()) for _ in range(n)])
    check_one_winner(outcomes)
    verify_files(results, read_manifest(results / "MANIFEST.json"))
    assert not earlier or (results / "notes.txt").read_text() == "the user's"


RACES = {"convert": race_convert, "publish_local": race_publish_local, "publish_s3": race_publish_s3,
         "train": race_train}
assert set(RACES) == set(KINDS)
