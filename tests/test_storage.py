"""The artifact store: every ``Store`` operation on a local folder and on a real S3-protocol
server (moto's ThreadedMotoServer on 127.0.0.1) through the real minio SDK, plus what only S3 has
(endpoints, credentials, buckets, a server that goes away)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from bpnet.artifacts import MANIFEST_NAME, ArtifactError, read_manifest, safe_relpath
from bpnet.storage import LocalStore, S3Settings, S3Store, StorageError, Store, open_store


def settings_for(server, access: str = "testing", secret: str = "testing-secret", **kw) -> S3Settings:
    return S3Settings(endpoint=server.endpoint, access_key=access, secret_key=secret, secure=False,
                      region="us-east-1", retries=kw.pop("retries", 3), backoff_s=kw.pop("backoff_s", 0.01))


def make_bucket(server, name: str = "artifacts") -> None:
    S3Store(f"s3://{name}", settings_for(server)).client.make_bucket(name)


@pytest.fixture(params=["local", "s3"])
def store_at(request, tmp_path) -> Callable[[str], Store]:
    """A store for a name under one fresh root: a folder, or a prefix of a bucket on moto."""
    if request.param == "local":
        return lambda name: open_store(str(tmp_path / "root" / name))
    server = request.getfixturevalue("moto_server")
    make_bucket(server)
    return lambda name: open_store(f"s3://artifacts/root/{name}", settings_for(server))


@pytest.fixture
def sample_dir(tmp_path: Path) -> Path:
    root = tmp_path / "model"
    (root / "sub").mkdir(parents=True)
    (root / "big.bin").write_bytes(os.urandom(6 * 1024 * 1024 + 123))  # > minio's 5 MiB part size
    (root / "empty.txt").write_bytes(b"")
    (root / "sub" / "spec.yaml").write_text("stages: 3\n")
    return root


SAMPLE_FILES = ["big.bin", "empty.txt", "sub/spec.yaml"]


def test_open_store_picks_the_implementation_by_uri(moto_server, tmp_path):
    assert isinstance(open_store(tmp_path), LocalStore)
    assert isinstance(open_store("s3://artifacts/x", settings_for(moto_server)), S3Store)


def test_objects_round_trip(store_at, tmp_path):
    store = store_at("objects")
    assert not store.exists() and store.read_bytes("a.json") is None and store.list_objects() == []
    store.write_bytes(b"{}", "a.json")
    store.write_bytes(b"second", "a.json")
    src = tmp_path / "model.onnx"
    src.write_bytes(b"onnx bytes")
    store.upload_file(src, "dir/model.onnx")
    assert store.exists() and store.read_bytes("a.json") == b"second"
    store.download_file("dir/model.onnx", tmp_path / "back" / "model.onnx")
    assert (tmp_path / "back" / "model.onnx").read_bytes() == b"onnx bytes"
    assert [(name, size) for name, size, _ in store.list_objects()] == [("a.json", 6), ("dir/model.onnx", 10)]


def test_write_if_is_a_compare_and_swap(store_at):
    store = store_at("cas")
    assert store.read_versioned("latest.json") is None
    assert store.write_if(b"one", "latest.json", None)
    assert not store.write_if(b"other", "latest.json", None)  # it exists now: a create-only write loses
    found = store.read_versioned("latest.json")
    assert found is not None and found[0] == b"one"
    assert store.write_if(b"two", "latest.json", found[1])
    assert not store.write_if(b"stale", "latest.json", found[1])  # another writer moved it since our read
    again = store.read_versioned("latest.json")
    assert again is not None and again[0] == b"two" and again[1] != found[1]
    assert not store.write_if(b"made up", "latest.json", "not-a-version")


def test_tree_round_trip_with_large_and_empty_files(store_at, sample_dir, tmp_path):
    store = store_at("runs/1/model")
    manifest = store.upload_tree(sample_dir, metadata={"release": "r1"})
    assert sorted(e["path"] for e in manifest["files"]) == SAMPLE_FILES
    assert store.read_bytes(MANIFEST_NAME) is not None
    out = tmp_path / "fetched"
    assert store.fetch(out)["metadata"] == {"release": "r1"}
    for rel in SAMPLE_FILES:
        assert (out / rel).read_bytes() == (sample_dir / rel).read_bytes()
    assert read_manifest(out / MANIFEST_NAME)["files"] == manifest["files"]


def test_tampered_file_is_refused(store_at, sample_dir, tmp_path):
    store = store_at("m")
    store.upload_tree(sample_dir)
    store.write_bytes(b"stages: 6\n", "sub/spec.yaml")
    with pytest.raises(StorageError, match="sub/spec.yaml: checksum mismatch"):
        store.fetch(tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_folder_without_manifest_is_refused(store_at, tmp_path):
    store = store_at("half")
    store.write_bytes(b"x", "a.bin")
    with pytest.raises(StorageError, match="no MANIFEST.json"):
        store.fetch(tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_upload_tree_of_a_missing_folder_is_named(store_at, tmp_path):
    with pytest.raises(StorageError, match="not a directory"):
        store_at("x").upload_tree(tmp_path / "nothing")


def test_raw_folder_is_mirrored_whole_and_fingerprinted_by_its_listing(store_at, sample_dir, tmp_path):
    """Raw datasets carry no manifest of ours: mirror copies everything; fingerprint tracks the listing."""
    store = store_at("coco")
    for rel in SAMPLE_FILES:
        store.upload_file(sample_dir / rel, rel)
    store_at("coco-other").write_bytes(b"not mine", "x.bin")  # a sibling with a common name prefix
    assert store.mirror(tmp_path / "raw") == 3
    assert sorted(p.relative_to(tmp_path / "raw").as_posix() for p in (tmp_path / "raw").rglob("*")
                  if p.is_file()) == SAMPLE_FILES
    assert (tmp_path / "raw" / "big.bin").read_bytes() == (sample_dir / "big.bin").read_bytes()

    before = store.fingerprint()
    assert store.fingerprint() == before
    store.write_bytes(b"stages: 4\n", "sub/spec.yaml")
    assert store.fingerprint() != before


def test_mirror_of_an_empty_root_is_named(store_at, tmp_path):
    with pytest.raises(StorageError, match="nothing: no objects under this prefix"):
        store_at("nothing").mirror(tmp_path / "raw")
    assert not (tmp_path / "raw").exists()
    with pytest.raises(StorageError, match="nothing to fingerprint"):
        store_at("nothing").fingerprint()


@pytest.mark.parametrize("bad", ["../escape", "a/../../b", "/abs/path", "", "a\\b"])
def test_keys_cannot_escape_their_root(store_at, bad):
    with pytest.raises(ArtifactError):
        safe_relpath(bad)
    with pytest.raises(ArtifactError):
        store_at("r").write_bytes(b"x", bad)


# ---- S3 only: the server, the bucket, the credentials -------------------------------------------

def test_server_stopped_mid_publish_gives_clear_error_and_no_manifest(moto_server, sample_dir):
    make_bucket(moto_server)
    store = S3Store("s3://artifacts/partial", settings_for(moto_server))
    with pytest.raises(StorageError, match="cannot reach S3 endpoint"):
        store.upload_tree(sample_dir, on_file=lambda _: moto_server.stop())
    moto_server.start()  # same in-memory backend: what was uploaded before the stop is still there
    assert store.read_bytes("big.bin") is not None
    assert store.read_bytes(MANIFEST_NAME) is None


def test_republish_removes_the_old_manifest_first(moto_server, sample_dir):
    make_bucket(moto_server)
    store = S3Store("s3://artifacts/again", settings_for(moto_server))
    store.upload_tree(sample_dir)

    def stop(_: str) -> None:
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        store.upload_tree(sample_dir, on_file=stop)
    assert store.read_bytes(MANIFEST_NAME) is None  # half a re-publish is not a complete folder


def test_missing_bucket_is_named(moto_server, sample_dir):
    with pytest.raises(StorageError, match="bucket 'nope' does not exist"):
        S3Store("s3://nope/x", settings_for(moto_server)).upload_tree(sample_dir)


def test_unreachable_endpoint_is_named(sample_dir):
    from tests.conftest import free_port

    settings = S3Settings(endpoint=f"127.0.0.1:{free_port()}", access_key="a", secret_key="b", secure=False,
                          region="us-east-1", retries=2, backoff_s=0.01)
    with pytest.raises(StorageError, match=r"cannot reach S3 endpoint 127\.0\.0\.1:\d+ after 2 attempts"):
        S3Store("s3://artifacts/x", settings).upload_tree(sample_dir)


def test_rejected_credentials_are_named(moto_server, sample_dir, monkeypatch):
    import moto.settings

    make_bucket(moto_server)
    # moto checks request signatures against its IAM users once this count of calls is spent.
    monkeypatch.setattr(moto.settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)
    store = S3Store("s3://artifacts/x", settings_for(moto_server, access="AKIAWRONGWRONGWRONG"))
    with pytest.raises(StorageError, match=r"credentials rejected .*\(InvalidAccessKeyId\)"):
        store.upload_tree(sample_dir)


def test_uri_with_dotdot_prefix_is_refused():
    with pytest.raises(ArtifactError):
        S3Store("s3://bucket/a/../../b", S3Settings(endpoint="127.0.0.1:1", secure=False))


def test_settings_from_env_keep_keys_out_of_repr(monkeypatch):
    monkeypatch.setenv("BPNET_S3_ENDPOINT", "https://minio.example:9000")
    monkeypatch.setenv("BPNET_S3_ACCESS_KEY", "AKIAEXAMPLEKEY")
    monkeypatch.setenv("BPNET_S3_SECRET_KEY", "supersecretvalue")
    s = S3Settings.from_env()
    assert (s.endpoint, s.secure, s.access_key) == ("minio.example:9000", True, "AKIAEXAMPLEKEY")
    assert "supersecretvalue" not in repr(s) and "AKIAEXAMPLEKEY" not in repr(s)


def test_missing_endpoint_setting_is_explained(monkeypatch):
    for name in ("BPNET_S3_ENDPOINT", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(StorageError, match="BPNET_S3_ENDPOINT"):
        S3Settings.from_env()
