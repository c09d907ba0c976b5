"""Releases on a real S3 server (moto) and on local paths: complete releases, the latest pointer,
the promotion gate, warm starts, and a publish killed half-way."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from bpnet.artifacts import ArtifactError
from bpnet.layout import MODEL_FILE
from bpnet.release import (
    LATEST,
    RELEASE_UNPRUNED,
    new_release_id,
    promotion_decision,
    promotion_gate,
    publish_release,
    read_latest,
)
from bpnet.storage import S3Store, StorageError, open_store
from components import runtime


@pytest.fixture
def s3(moto_server, monkeypatch) -> str:
    """A fresh release root on the S3 server (moto keeps its state per process: a new prefix each time)."""
    monkeypatch.setenv("BPNET_S3_ENDPOINT", f"http://{moto_server.endpoint}")
    monkeypatch.setenv("BPNET_S3_ACCESS_KEY", "testing")
    monkeypatch.setenv("BPNET_S3_SECRET_KEY", "testing")
    store = S3Store("s3://bpnet")
    if not store.client.bucket_exists("bpnet"):
        store.client.make_bucket("bpnet")
    return f"s3://bpnet/{uuid.uuid4().hex}/releases"


def release_dir(root: Path, ap: float, files: int = 3) -> Path:
    (root / "model").mkdir(parents=True)
    for i in range(files):
        (root / "model" / f"part{i:03d}.bin").write_bytes(os.urandom(2048))
    (root / "metrics.json").write_text(json.dumps({"AP": ap}))
    return root


@pytest.mark.parametrize("where", ["s3", "local"])
def test_publish_is_complete_and_moves_latest(request, tmp_path, where):
    root = request.getfixturevalue("s3") if where == "s3" else str(tmp_path / "releases")
    assert read_latest(root) is None
    first = publish_release(release_dir(tmp_path / "r1", 0.4), root, "r1", {"AP": 0.4})
    assert first["promoted"]
    assert read_latest(root) == {k: v for k, v in first.items() if k not in ("promoted", "reason")}
    assert first["uri"].endswith("/r1")
    open_store(first["uri"]).fetch(tmp_path / "fetched")  # a complete, verifiable release
    assert (tmp_path / "fetched" / "metrics.json").is_file()
    publish_release(release_dir(tmp_path / "r2", 0.5), root, "r2", {"AP": 0.5})
    assert read_latest(root)["release"] == "r2"


@pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe", b'["r1"]', b'{"metrics": {}}'])
def test_an_unreadable_latest_pointer_stops_the_gate_naming_it(tmp_path, content):
    root = tmp_path / "releases"
    root.mkdir()
    (root / LATEST).write_bytes(content)
    with pytest.raises(ArtifactError, match=f"{LATEST}: not a release pointer"):
        promotion_gate(0.9, 0.0, str(root))


def test_promotion_gate_against_the_minimum_and_the_latest_release(s3, tmp_path):
    root = s3
    assert promotion_gate(0.3, 0.2, root) == "promote"  # first release
    assert promotion_gate(0.1, 0.2, root).startswith("hold: AP 0.1000 is below the minimum 0.2000")
    publish_release(release_dir(tmp_path / "r1", 0.4), root, "r1", {"AP": 0.4})
    assert promotion_gate(0.35, 0.2, root) == "hold: AP 0.3500 is below the latest release r1 (0.4000)"
    assert promotion_gate(0.4, 0.2, root) == "promote"  # not lower: promoted
    assert promotion_decision(0.5, 0.2, None)[0]


def kill_publish_midway(src: Path, root: str, release_id: str, ap: float, objects: int = 1) -> S3Store:
    """Start publishing ``src`` in a child process and SIGKILL it once ``objects`` objects of the
    release are in the store; returns the release's store. (The deadline only stops a hang.)"""
    code = ("from bpnet.release import publish_release; "
            f"publish_release({str(src)!r}, {root!r}, {release_id!r}, {{'AP': {ap}}})")
    proc = subprocess.Popen([sys.executable, "-c", code], env=os.environ.copy())
    store = S3Store(f"{root}/{release_id}")
    try:
        deadline = time.monotonic() + 60
        while len(store.list_objects()) < objects:
            assert proc.poll() is None, "publish ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    return store


def test_killed_publish_leaves_latest_on_the_previous_release(s3, tmp_path):
    root = s3
    publish_release(release_dir(tmp_path / "r1", 0.4), root, "r1", {"AP": 0.4})
    big = release_dir(tmp_path / "r2", 0.5, files=400)
    store = kill_publish_midway(big, root, "r2", 0.5)
    assert 0 < len(store.list_objects()) < 402  # stopped half-way
    assert read_latest(root)["release"] == "r1"
    with pytest.raises(StorageError, match="no MANIFEST.json"):
        open_store(f"{root}/r2").fetch(tmp_path / "half")
    open_store(read_latest(root)["uri"]).fetch(tmp_path / "latest")  # the release latest names is still complete
    with pytest.raises(StorageError, match="exists already; a published release is never overwritten"):
        publish_release(big, root, "r2", {"AP": 0.5})  # a retry under the same id is refused ...
    with pytest.raises(StorageError, match="exists already"):
        publish_release(big, root, "r1", {"AP": 0.5})  # ... and so is reusing a published release's id
    open_store(f"{root}/r1").fetch(tmp_path / "r1-again")


def test_release_ids_are_unique_even_for_one_model_in_one_second():
    ids = {new_release_id("ab" * 32) for _ in range(200)}
    assert len(ids) == 200 and all(re.fullmatch(r"\d{8}-\d{6}-abababab-[0-9a-f]{6}", i) for i in ids)


def test_a_same_second_retry_of_one_model_gets_its_own_release_and_latest_stays_complete(s3, tmp_path):
    """Issue 16's case: a kill during the second publish of one cached model used to take the
    manifest away from the release latest named. Now the retry is a new release id."""
    src = release_dir(tmp_path / "r", 0.4, files=200)
    first = publish_release(src, s3, new_release_id("d" * 64), {"AP": 0.4})
    retry_id = new_release_id("d" * 64)
    assert retry_id != first["release"]
    kill_publish_midway(src, s3, retry_id, 0.4, objects=20)
    with pytest.raises(StorageError, match="no MANIFEST.json"):
        open_store(f"{s3}/{retry_id}").fetch(tmp_path / "half")  # the retry was really stopped half-way
    polls = [read_latest(s3)["uri"] for _ in range(20)]
    assert set(polls) == {first["uri"]}
    open_store(first["uri"]).fetch(tmp_path / "fetched")  # its manifest is still there


def test_a_lower_ap_never_replaces_a_higher_one(s3, tmp_path):
    publish_release(release_dir(tmp_path / "a", 0.5), s3, "a", {"AP": 0.5})
    late = publish_release(release_dir(tmp_path / "b", 0.3), s3, "b", {"AP": 0.3})
    assert not late["promoted"] and late["reason"] == "AP 0.3000 is below the latest release a (0.5000)"
    assert read_latest(s3)["release"] == "a"
    open_store(late["uri"]).fetch(tmp_path / "b-fetched")  # published and complete, just not latest


@pytest.mark.parametrize("where", ["s3", "local"])
def test_the_rule_is_rechecked_when_another_publisher_wins_the_swap(request, tmp_path, monkeypatch, where):
    """Between our read of latest and our compare-and-swap, a better release lands: the swap fails
    on the version, the rule is re-checked against the winner, and latest stays on the winner."""
    root = request.getfixturevalue("s3") if where == "s3" else str(tmp_path / "releases")
    publish_release(release_dir(tmp_path / "a", 0.3), root, "a", {"AP": 0.3})
    store_type = type(open_store(root))
    original = store_type.read_versioned
    raced = []

    def read_then_lose_the_race(self, relative):
        found = original(self, relative)
        if not raced:
            raced.append(True)
            publish_release(release_dir(tmp_path / "c", 0.5), root, "c", {"AP": 0.5})
        return found

    monkeypatch.setattr(store_type, "read_versioned", read_then_lose_the_race)
    mine = publish_release(release_dir(tmp_path / "b", 0.4), root, "b", {"AP": 0.4})
    assert raced and not mine["promoted"] and "below the latest release c (0.5000)" in mine["reason"]
    assert read_latest(root)["release"] == "c"


@pytest.mark.parametrize("where", ["s3", "local"])
def test_concurrent_publishers_leave_the_best_release_in_latest(request, tmp_path, where):
    root = request.getfixturevalue("s3") if where == "s3" else str(tmp_path / "releases")
    go = tmp_path / "go"
    aps = [0.31, 0.52, 0.47, 0.12, 0.50, 0.29]
    procs = []
    for i, ap in enumerate(aps):
        src = release_dir(tmp_path / f"src{i}", ap, files=2)
        code = ("import os, time, json; from bpnet.release import publish_release\n"
                f"while not os.path.exists({str(go)!r}): time.sleep(0.005)\n"
                f"print(json.dumps(publish_release({str(src)!r}, {root!r}, 'p{i}', {{'AP': {ap}}})))")
        procs.append(subprocess.Popen([sys.executable, "-c", code], env=os.environ.copy(), stdout=subprocess.PIPE,
                                      text=True))
    time.sleep(3)  # every publisher imported and waiting
    go.write_text("go")
    results = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert read_latest(root)["release"] == "p1"  # AP 0.52, whatever the order of arrival
    # p1 won whatever the order; a weaker release is promoted only if it arrived before a better one
    # (e.g. p3 first, into an empty root), so which others were promoted depends on the arrival order
    assert next(r for r in results if r["release"] == "p1")["promoted"]


@pytest.mark.slow  # trains a model: make test-all
def test_warm_start_trains_from_the_latest_release(s3, tiny_model, synth_dir, tmp_path, monkeypatch):
    from bpnet.model.io import architecture_of, load_model
    from bpnet.prune import PruneSettings, prune_model
    from tests.conftest import write_train_spec

    monkeypatch.setenv("BPNET_MODEL_KEY", "tiny")
    model_file, _ = tiny_model
    released = prune_model(load_model(model_file, key="tiny"),
                           PruneSettings(pruning_threshold=0.95, pruning_granularity=2, min_num_filters=4), (64, 64))
    release = tmp_path / "release"
    (release / "model").mkdir(parents=True)
    from bpnet.model.io import save_model

    (release / RELEASE_UNPRUNED).parent.mkdir(parents=True)
    save_model(released.model, release / RELEASE_UNPRUNED, key="tiny")  # what warm starts load
    publish_release(release, s3, "r1", {"AP": 0.3})

    data = tmp_path / "train_data"
    runtime.dataset_convert(str(synth_dir), (synth_dir / "coco_spec.json").read_text(), data, tmp_path / "val_data",
                            True, 1)
    spec = write_train_spec(tmp_path / "t.yaml", synth_dir, tmp_path / "unbound", num_epoch=1).read_text()
    out = tmp_path / "model"
    summary = runtime.train(data, spec, "", out, 1, warm_start=s3)
    assert summary["warm_start"] == "r1"
    assert architecture_of(load_model(out / MODEL_FILE, key="tiny")) == released.architecture

    fresh = runtime.train(data, spec, "", tmp_path / "fresh", 1, warm_start=f"{s3}-empty")
    assert "warm_start" not in fresh  # no release there yet: trained from the spec


def test_incomplete_release_is_refused_and_nan_is_never_promoted(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ArtifactError, match="the release would be incomplete: missing"):
        runtime.publish(str(tmp_path / "releases"), empty, empty, empty, empty, {}, {}, {})
    assert read_latest(str(tmp_path / "releases")) is None
    assert promotion_decision(float("nan"), 0.0, None) == (False, "AP is nan: not a number")
