"""Artifact store: one API over local directories and MinIO/S3 (``s3://bucket/prefix``).

Endpoint, keys and TLS come from the environment only (never from specs, logs or pipeline
YAML): ``BPNET_S3_ENDPOINT`` (host:port or URL), ``BPNET_S3_ACCESS_KEY``, ``BPNET_S3_SECRET_KEY``,
``BPNET_S3_SECURE`` (true/false), ``BPNET_S3_REGION``; the usual ``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` and ``AWS_REGION`` are the fallbacks.

A published directory is complete only when its manifest (``MANIFEST.json``: relative path, size
and sha256 of every file) exists; it is uploaded last and removed first on re-publish. A reader
refuses a prefix without a manifest and any file whose checksum differs. Transient failures are
retried with exponential backoff; wrong credentials, a missing bucket or an unreachable endpoint
end in a ``StorageError`` that says which.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

from bpnet.artifacts import (
    MANIFEST_NAME,
    ArtifactError,
    atomic_output,
    build_manifest,
    check_layout,
    list_files,
    parse_manifest,
    read_manifest,
    safe_relpath,
    staging_dir,
    swap_into_place,
    verify_files,
    write_manifest,
)
from bpnet.errors import StepError

log = logging.getLogger(__name__)
R = TypeVar("R")

_TRANSIENT_CODES = {"InternalError", "SlowDown", "ServiceUnavailable", "RequestTimeout", "RequestTimeTooSkewed"}
_AUTH_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken", "ExpiredToken"}


class StorageError(StepError, RuntimeError):
    """A storage operation failed for a reason worth telling the user plainly."""


def _env(*names: str, default: str | None = None) -> str | None:
    for name in names:
        if os.environ.get(name):
            return os.environ[name]
    return default


@dataclass(frozen=True)
class S3Settings:
    """Connection settings; ``repr`` never shows the keys."""

    endpoint: str
    access_key: str | None = field(default=None, repr=False)
    secret_key: str | None = field(default=None, repr=False)
    secure: bool = True
    region: str | None = None
    retries: int = 4
    backoff_s: float = 0.5

    @classmethod
    def from_env(cls) -> S3Settings:
        raw = _env("BPNET_S3_ENDPOINT", "AWS_ENDPOINT_URL")
        if not raw:
            raise StorageError("no S3 endpoint configured: set BPNET_S3_ENDPOINT (host:port or http(s)://host:port)")
        secure_env = _env("BPNET_S3_SECURE")
        endpoint, secure = raw, True
        if "://" in raw:
            parsed = urlparse(raw)
            endpoint, secure = parsed.netloc, parsed.scheme == "https"
        if secure_env is not None:
            secure = secure_env.strip().lower() in ("1", "true", "yes", "on")
        return cls(
            endpoint=endpoint,
            access_key=_env("BPNET_S3_ACCESS_KEY", "AWS_ACCESS_KEY_ID"),
            secret_key=_env("BPNET_S3_SECRET_KEY", "AWS_SECRET_ACCESS_KEY"),
            secure=secure,
            region=_env("BPNET_S3_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"),
            retries=int(_env("BPNET_S3_RETRIES", default="4") or 4),
            backoff_s=float(_env("BPNET_S3_BACKOFF_S", default="0.5") or 0.5),
        )


def is_remote(uri: str | Path) -> bool:
    return str(uri).startswith("s3://")


def _split_s3(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    bucket, prefix = parsed.netloc, parsed.path.strip("/")
    if not bucket:
        raise StorageError(f"{uri}: no bucket in the URI (expected s3://bucket/prefix)")
    return bucket, (safe_relpath(prefix) if prefix else "")


class S3Store:
    """Objects under ``s3://bucket/prefix`` through the minio SDK."""

    def __init__(self, uri: str, settings: S3Settings | None = None):
        import urllib3
        from minio import Minio

        self.uri = uri.rstrip("/")
        self.bucket, self.prefix = _split_s3(uri)
        self.settings = settings or S3Settings.from_env()
        http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=5.0, read=60.0),
                                   retries=urllib3.Retry(total=0, raise_on_status=False))
        self.client = Minio(self.settings.endpoint, access_key=self.settings.access_key,
                            secret_key=self.settings.secret_key, secure=self.settings.secure,
                            region=self.settings.region, http_client=http)

    def key(self, relative: str) -> str:
        rel = safe_relpath(relative)
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def _call(self, what: str, fn: Callable[[], R]) -> R:
        """Run ``fn`` with retries on transient errors; translate the rest into StorageError."""
        from minio.error import S3Error

        delay = self.settings.backoff_s
        for attempt in range(1, self.settings.retries + 1):
            try:
                return fn()
            except S3Error as exc:
                if exc.code == "NoSuchBucket":
                    raise StorageError(f"{what}: bucket '{self.bucket}' does not exist "
                                       f"at {self.settings.endpoint}") from None
                if exc.code in _AUTH_CODES:
                    raise StorageError(f"{what}: credentials rejected by {self.settings.endpoint} "
                                       f"({exc.code}); check BPNET_S3_ACCESS_KEY / BPNET_S3_SECRET_KEY") from None
                if exc.code not in _TRANSIENT_CODES or attempt == self.settings.retries:
                    raise StorageError(f"{what}: {exc.code}: {exc.message}") from None
                reason = exc.code
            except Exception as exc:  # urllib3/minio transport errors share no narrower base
                if not _is_transient(exc):
                    raise
                if attempt == self.settings.retries:
                    raise StorageError(f"{what}: cannot reach S3 endpoint {self.settings.endpoint} after "
                                       f"{attempt} attempts ({type(exc).__name__}: {_short(exc)})") from None
                reason = type(exc).__name__
            log.warning("%s: transient failure (%s), retry %d/%d in %.1fs",
                        what, reason, attempt, self.settings.retries - 1, delay)
            time.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")

    def upload_file(self, local: Path, relative: str) -> None:
        key = self.key(relative)
        self._call(f"upload {self.uri}/{relative}", lambda: self.client.fput_object(self.bucket, key, str(local)))

    def upload_bytes(self, data: bytes, relative: str) -> None:
        key = self.key(relative)
        self._call(f"upload {self.uri}/{relative}",
                   lambda: self.client.put_object(self.bucket, key, io.BytesIO(data), len(data)))

    def download_file(self, relative: str, local: Path) -> None:
        key = self.key(relative)
        with atomic_output(local) as tmp:
            self._call(f"download {self.uri}/{relative}",
                       lambda: self.client.fget_object(self.bucket, key, str(tmp)))

    def read_bytes(self, relative: str) -> bytes | None:
        """The object's content, or None if it does not exist."""
        found = self.read_versioned(relative)
        return None if found is None else found[0]

    def list_objects(self) -> list[tuple[str, int, str]]:
        """(path relative to the prefix, size, etag) of every object under the prefix, sorted."""
        root = f"{self.prefix}/" if self.prefix else ""

        def listing() -> list[tuple[str, int, str]]:
            return sorted((o.object_name[len(root):], int(o.size or 0), (o.etag or "").strip('"'))
                          for o in self.client.list_objects(self.bucket, prefix=root, recursive=True)
                          if not o.is_dir)

        return self._call(f"list {self.uri}", listing)

    def remove(self, relative: str) -> None:
        key = self.key(relative)
        self._call(f"remove {self.uri}/{relative}", lambda: self.client.remove_object(self.bucket, key))

    def read_versioned(self, relative: str) -> tuple[bytes, str] | None:
        """(content, ETag) of the object, or None if it does not exist: the ETag is what a later
        ``put_if`` compares against, so a read-modify-write cannot lose another writer's update."""
        from minio.error import S3Error

        key = self.key(relative)

        def get() -> tuple[bytes, str] | None:
            try:
                response = self.client.get_object(self.bucket, key)
            except S3Error as exc:
                if exc.code == "NoSuchKey":
                    return None
                raise
            try:
                return response.read(), (response.headers.get("ETag") or "").strip('"')
            finally:
                response.close()
                response.release_conn()

        return self._call(f"read {self.uri}/{relative}", get)

    def put_if(self, data: bytes, relative: str, etag: str | None) -> bool:
        """Compare-and-swap: write the object only if its ETag is still ``etag`` (``None``: only if
        it does not exist yet), as S3 conditional writes (``If-Match`` / ``If-None-Match: *``) do;
        False when another writer got there first. minio-py's public ``put_object`` turns extra
        headers into user metadata, so the request goes through its ``_put_object``."""
        from minio.error import S3Error

        key = self.key(relative)
        headers = {"Content-Type": "application/json",
                   **({"If-Match": f'"{etag}"'} if etag is not None else {"If-None-Match": "*"})}

        def put() -> bool:
            try:
                self.client._put_object(self.bucket, key, data, headers)  # noqa: SLF001 - see docstring
            except S3Error as exc:
                if exc.code in ("PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey"):
                    return False
                raise
            return True

        return self._call(f"conditional upload {self.uri}/{relative}", put)


def _is_transient(exc: BaseException) -> bool:
    import urllib3
    from minio.error import ServerError

    if isinstance(exc, ServerError):
        return exc.status_code >= 500
    return isinstance(exc, urllib3.exceptions.HTTPError | ConnectionError | TimeoutError)


def _short(exc: BaseException) -> str:
    text = str(exc)
    for marker in ("Connection refused", "timed out", "Name or service not known", "Connection reset"):
        if marker in text:
            return marker
    return text[:160]


def publish_dir(local_dir: str | Path, dest: str, settings: S3Settings | None = None,
                on_file: Callable[[str], None] | None = None, metadata: dict[str, Any] | None = None) -> dict:
    """Copy a directory to ``dest`` (local path or s3:// URI) with its manifest written last."""
    local_dir = Path(local_dir)
    if not local_dir.is_dir():
        raise StorageError(f"{local_dir}: not a directory")
    manifest = build_manifest(local_dir, metadata=metadata)
    if is_remote(dest):
        store = S3Store(dest, settings)
        store.remove(MANIFEST_NAME)  # a re-publish is incomplete until its new manifest lands
        for entry in manifest["files"]:
            store.upload_file(local_dir / entry["path"], entry["path"])
            if on_file:
                on_file(entry["path"])
        store.upload_bytes((json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode(), MANIFEST_NAME)
        return manifest
    dest_path = Path(dest)
    staging = staging_dir(dest_path)
    try:
        _copy_entries(local_dir, staging, manifest, on_file)
        write_manifest(staging / MANIFEST_NAME, manifest)
        swap_into_place(staging, dest_path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


def fetch_dir(src: str, local_dir: str | Path, settings: S3Settings | None = None) -> dict:
    """Copy a published directory to ``local_dir``: only the files its manifest lists, each
    verified by size and sha256 in a staging folder before the folder is swapped into place."""
    local_dir = Path(local_dir)
    if is_remote(src):
        store = S3Store(src, settings)
        raw = store.read_bytes(MANIFEST_NAME)
        if raw is None:
            raise StorageError(f"{src}: no {MANIFEST_NAME}; the artifact is incomplete or was never published")
        manifest = parse_manifest(raw, f"{src}/{MANIFEST_NAME}")
    else:
        manifest = read_manifest(Path(src) / MANIFEST_NAME)
    staging = staging_dir(local_dir)
    try:
        if is_remote(src):
            for entry in manifest["files"]:
                store.download_file(entry["path"], staging / entry["path"])
        else:
            _copy_entries(Path(src), staging, manifest)
        try:
            verify_files(staging, manifest)
        except ArtifactError as exc:
            message = f"{src}: {str(exc).replace(str(staging), '').lstrip('/')}"
            raise (StorageError(message) if is_remote(src) else ArtifactError(message)) from None
        write_manifest(staging / MANIFEST_NAME, manifest)
        swap_into_place(staging, local_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


def fetch_tree(src: str, local_dir: str | Path, settings: S3Settings | None = None,
               on_file: Callable[[str], None] | None = None) -> int:
    """Copy every file under ``src`` (a plain folder or an s3:// prefix with no manifest of ours,
    e.g. a raw COCO dataset) to ``local_dir``, checking sizes in a staging folder that is swapped
    into place only when all files arrived. Returns the number of files."""
    local_dir = Path(local_dir)
    staging = staging_dir(local_dir)
    try:
        if is_remote(src):
            store = S3Store(src, settings)
            listing = store.list_objects()
            if not listing:
                raise StorageError(f"{src}: no objects under this prefix")
            try:
                check_layout([relative for relative, _, _ in listing], src)
            except ArtifactError as exc:
                raise StorageError(str(exc)) from None
            for relative, size, _ in listing:
                target = staging / safe_relpath(relative)
                store.download_file(relative, target)
                if target.stat().st_size != size:
                    raise StorageError(f"{src}/{relative}: got {target.stat().st_size} bytes, listed {size}")
                if on_file:
                    on_file(relative)
            count = len(listing)
        else:
            root = Path(src)
            if not root.is_dir():
                raise StorageError(f"{src}: not a directory")
            files = list_files(root)
            _copy_entries(root, staging, {"files": [{"path": f} for f in files]}, on_file)
            count = len(files)
        swap_into_place(staging, local_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return count


def fingerprint(src: str, settings: S3Settings | None = None) -> str:
    """A short digest of what is under ``src`` (names, sizes and etags, or mtimes for a local folder):
    it changes when the data changes, so it can key a pipeline's cache without reading the data."""
    if is_remote(src):
        entries = [f"{name}\t{size}\t{etag}" for name, size, etag in S3Store(src, settings).list_objects()]
    else:
        root = Path(src)
        if not root.is_dir():
            raise StorageError(f"{src}: not a directory")
        entries = []
        for name in list_files(root):
            stat = (root / name).stat()
            entries.append(f"{name}\t{stat.st_size}\t{stat.st_mtime_ns}")
    if not entries:
        raise StorageError(f"{src}: nothing to fingerprint (no files)")
    return hashlib.sha256("\n".join(entries).encode()).hexdigest()[:16]


def _copy_entries(src: Path, dest: Path, manifest: dict, on_file: Callable[[str], None] | None = None) -> None:
    for entry in manifest["files"]:
        target = dest / entry["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / entry["path"], target)
        if on_file:
            on_file(entry["path"])


def upload_file(local: str | Path, dest: str, settings: S3Settings | None = None) -> None:
    """Copy one file to a local path or an ``s3://bucket/key`` URI (atomically where local)."""
    if is_remote(dest):
        parent, _, name = dest.rstrip("/").rpartition("/")
        S3Store(parent, settings).upload_file(Path(local), name)
        return
    with atomic_output(dest) as tmp:
        shutil.copyfile(local, tmp)


def download_file(src: str, local: str | Path, settings: S3Settings | None = None) -> None:
    if is_remote(src):
        parent, _, name = src.rstrip("/").rpartition("/")
        S3Store(parent, settings).download_file(name, Path(local))
        return
    with atomic_output(local) as tmp:
        shutil.copyfile(src, tmp)


__all__ = ["S3Settings", "S3Store", "StorageError", "download_file", "fetch_dir", "is_remote", "list_files",
           "publish_dir", "upload_file"]
