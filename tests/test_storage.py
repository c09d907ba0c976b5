"""The artifact store against a real S3-protocol server (moto) with the real minio SDK."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bpnet.artifacts import MANIFEST_NAME, ArtifactError, read_manifest, safe_relpath
from bpnet.storage import (
    S3Settings,
    S3Store,
    StorageError,
    download_file,
    fetch_dir,
    fetch_tree,
    fingerprint,
    publish_dir,
    upload_file,
)


def settings_for(server, access: str = "testing", secret: str = "testing-secret", **kw) -> S3Settings:
    return S3Settings(endpoint=server.endpoint, access_key=access, secret_key=secret, secure=False,
                      region="us-east-1", retries=kw.pop("retries", 3), backoff_s=kw.pop("backoff_s", 0.01))


def make_bucket(server, name: str = "artifacts") -> None:
    S3Store(f"s3://{name}", settings_for(server)).client.make_bucket(name)


@pytest.fixture
def sample_dir(tmp_path: Path) -> Path:
    root = tmp_path / "model"
    (root / "sub").mkdir(parents=True)
    (root / "big.bin").write_bytes(os.urandom(6 * 1024 * 1024 + 123))  # > minio's 5 MiB part size
    (root / "empty.txt").write_bytes(b"")
    (root / "sub" / "spec.yaml").write_text("stages: 3\n")
    return root


def test_directory_round_trip_with_large_and_empty_files(moto_server, sample_dir, tmp_path):
    make_bucket(moto_server)
    settings = settings_for(moto_server)
    manifest = publish_dir(sample_dir, "s3://artifacts/runs/1/model", settings)
    assert sorted(e["path"] for e in manifest["files"]) == ["big.bin", "empty.txt", "sub/spec.yaml"]
    out = tmp_path / "fetched"
    fetch_dir("s3://artifacts/runs/1/model", out, settings)
    for rel in ("big.bin", "empty.txt", "sub/spec.yaml"):
        assert (out / rel).read_bytes() == (sample_dir / rel).read_bytes()
    assert read_manifest(out / MANIFEST_NAME)["files"] == manifest["files"]


def test_tampered_object_is_refused(moto_server, sample_dir, tmp_path):
    make_bucket(moto_server)
    settings = settings_for(moto_server)
    publish_dir(sample_dir, "s3://artifacts/m", settings)
    S3Store("s3://artifacts/m", settings).upload_bytes(b"stages: 6\n", "sub/spec.yaml")
    with pytest.raises(StorageError, match="sub/spec.yaml: checksum mismatch"):
        fetch_dir("s3://artifacts/m", tmp_path / "out", settings)
    assert not (tmp_path / "out").exists()


def test_prefix_without_manifest_is_refused(moto_server, tmp_path):
    make_bucket(moto_server)
    settings = settings_for(moto_server)
    S3Store("s3://artifacts/half", settings).upload_bytes(b"x", "a.bin")
    with pytest.raises(StorageError, match="no MANIFEST.json"):
        fetch_dir("s3://artifacts/half", tmp_path / "out", settings)


def test_server_stopped_mid_publish_gives_clear_error_and_no_manifest(moto_server, sample_dir):
    make_bucket(moto_server)
    settings = settings_for(moto_server)
    store = S3Store("s3://artifacts/partial", settings)
    with pytest.raises(StorageError, match="cannot reach S3 endpoint"):
        publish_dir(sample_dir, "s3://artifacts/partial", settings, on_file=lambda _: moto_server.stop())
    moto_server.start()  # same in-memory backend: what was uploaded before the stop is still there
    assert store.read_bytes("big.bin") is not None
    assert store.read_bytes(MANIFEST_NAME) is None


def test_missing_bucket_is_named(moto_server, sample_dir):
    with pytest.raises(StorageError, match="bucket 'nope' does not exist"):
        publish_dir(sample_dir, "s3://nope/x", settings_for(moto_server))


def test_unreachable_endpoint_is_named(sample_dir):
    from tests.conftest import free_port

    settings = S3Settings(endpoint=f"127.0.0.1:{free_port()}", access_key="a", secret_key="b", secure=False,
                          region="us-east-1", retries=2, backoff_s=0.01)
    with pytest.raises(StorageError, match=r"cannot reach S3 endpoint 127\.0\.0\.1:\d+ after 2 attempts"):
        publish_dir(sample_dir, "s3://artifacts/x", settings)


def test_rejected_credentials_are_named(moto_server, sample_dir, monkeypatch):
    import moto.settings

    make_bucket(moto_server)
    # moto checks request signatures against its IAM users once this count of calls is spent.
    monkeypatch.setattr(moto.settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)
    with pytest.raises(StorageError, match=r"credentials rejected .*\(InvalidAccessKeyId\)"):
        publish_dir(sample_dir, "s3://artifacts/x", settings_for(moto_server, access="AKIAWRONGWRONGWRONG"))


@pytest.mark.parametrize("bad", ["../escape", "a/../../b", "/abs/path", "", "a\\b"])
def test_keys_cannot_escape_their_prefix(bad):
    with pytest.raises(ArtifactError):
        safe_relpath(bad)


def test_uri_with_dotdot_prefix_is_refused():
    with pytest.raises(ArtifactError):
        S3Store("s3://bucket/a/../../b", S3Settings(endpoint="127.0.0.1:1", secure=False))


def test_single_file_round_trip(moto_server, tmp_path):
    make_bucket(moto_server)
    settings = settings_for(moto_server)
    src = tmp_path / "model.onnx"
    src.write_bytes(b"onnx bytes")
    upload_file(src, "s3://artifacts/release/model.onnx", settings)
    download_file("s3://artifacts/release/model.onnx", tmp_path / "back.onnx", settings)
    assert (tmp_path / "back.onnx").read_bytes() == b"onnx bytes"


def test_local_publish_and_fetch_verify_checksums(sample_dir, tmp_path):
    dest = tmp_path / "published"
    publish_dir(sample_dir, str(dest))
    assert (dest / MANIFEST_NAME).is_file()
    fetch_dir(str(dest), tmp_path / "copy")
    (dest / "sub" / "spec.yaml").write_text("tampered\n")
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        fetch_dir(str(dest), tmp_path / "copy2")


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


def test_raw_prefix_is_fetched_whole_and_fingerprinted_by_its_listing(moto_server, sample_dir, tmp_path):
    """Raw datasets carry no manifest of ours: fetch_tree mirrors the prefix; fingerprint tracks it."""
    make_bucket(moto_server)
    settings = settings_for(moto_server)
    store = S3Store("s3://artifacts/coco", settings)
    for rel in ("big.bin", "empty.txt", "sub/spec.yaml"):
        store.upload_file(sample_dir / rel, rel)
    S3Store("s3://artifacts/coco-other", settings).upload_bytes(b"not mine", "x.bin")  # a sibling prefix
    assert fetch_tree("s3://artifacts/coco", tmp_path / "raw", settings) == 3
    assert sorted(p.relative_to(tmp_path / "raw").as_posix() for p in (tmp_path / "raw").rglob("*") if p.is_file()
                  ) == ["big.bin", "empty.txt", "sub/spec.yaml"]
    assert (tmp_path / "raw" / "big.bin").read_bytes() == (sample_dir / "big.bin").read_bytes()

    before = fingerprint("s3://artifacts/coco", settings)
    assert fingerprint("s3://artifacts/coco", settings) == before
    store.upload_bytes(b"stages: 4\n", "sub/spec.yaml")
    assert fingerprint("s3://artifacts/coco", settings) != before


def test_fetch_tree_of_an_empty_prefix_is_named(moto_server, tmp_path):
    make_bucket(moto_server)
    with pytest.raises(StorageError, match="s3://artifacts/nothing: no objects under this prefix"):
        fetch_tree("s3://artifacts/nothing", tmp_path / "raw", settings_for(moto_server))
    assert not (tmp_path / "raw").exists()


def test_local_fetch_tree_copies_every_file(sample_dir, tmp_path):
    assert fetch_tree(str(sample_dir), tmp_path / "copy") == 3
    assert (tmp_path / "copy" / "sub" / "spec.yaml").read_text() == "stages: 3\n"
