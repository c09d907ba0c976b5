"""Artifact store: one ``Store`` protocol over a local folder (``LocalStore``) and a MinIO/S3
prefix (``S3Store``, ``s3://bucket/prefix``); ``open_store(uri)`` picks the implementation, so a
caller never asks which kind it holds.

Endpoint, keys and TLS come from the environment only (never from specs, logs or pipeline
YAML): ``BPNET_S3_ENDPOINT`` (host:port or URL), ``BPNET_S3_ACCESS_KEY``, ``BPNET_S3_SECRET_KEY``,
``BPNET_S3_SECURE`` (true/false), ``BPNET_S3_REGION``; the usual ``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` and ``AWS_REGION`` are the fallbacks.

A published folder (``upload_tree``) is complete only when its manifest (``MANIFEST.json``:
relative path, size and sha256 of every file) exists: on S3 it is uploaded last and removed first
on re-publish; locally the folder is built beside its destination and renamed into place. A reader
(``fetch``) refuses a folder without a manifest and any file whose checksum differs. Single
objects are written atomically (temp file + rename locally; one PUT on S3), and ``write_if`` is a
compare-and-swap on the version ``read_versioned`` returned. Transient S3 failures are retried
with exponential backoff; wrong credentials, a missing bucket or an unreachable endpoint end in a
``StorageError`` that says which.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import logging
import os
import secrets
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import urlparse

from bpnet.artifacts import (
    MANIFEST_NAME,
    ArtifactError,
    atomic_output,
    atomic_write_bytes,
    build_manifest,
    check_layout,
    manifest_bytes,
    parse_manifest,
    safe_relpath,
    staging_dir,
    swap_into_place,
    verify_files,
    write_manifest,
)
from bpnet.errors import StepError
from bpnet.lock import BusyError, exclusive

log = logging.getLogger(__name__)
R = TypeVar("R")
OnFile = Callable[[str], None]

_TRANSIENT_CODES = {"InternalError", "SlowDown", "ServiceUnavailable", "RequestTimeout", "RequestTimeTooSkewed"}
_AUTH_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken", "ExpiredToken"}


CLAIM_NAME = ".bpnet-claim.json"
"""The first object of a folder ``create_tree`` publishes: who claimed it (not in its manifest)."""


class StorageError(StepError, RuntimeError):
    """A storage operation failed for a reason worth telling the user plainly."""


def _taken(uri: str, claim: bytes | None) -> StorageError:
    holder = ""
    if claim:
        try:
            found = json.loads(claim)
            holder = f" (claimed by {found.get('command')}, pid {found.get('pid')} on host {found.get('host')}, " \
                     f"{found.get('started')})"
        except (ValueError, AttributeError):
            pass
    return StorageError(f"{uri}: exists already; a published release is never overwritten{holder} (ids are "
                        "unique per publish: publish again)")


def _claim() -> bytes:
    return (json.dumps({"command": "bpnet publish", "host": socket.gethostname(), "pid": os.getpid(),
                        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                        "token": secrets.token_hex(8)}) + "\n").encode()


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


class Store(Protocol):
    """Files under one root (a folder or an S3 prefix), addressed by relative posix paths."""

    uri: str

    def read_bytes(self, relative: str) -> bytes | None:
        """The content, or None if there is no such object."""

    def write_bytes(self, data: bytes, relative: str) -> None:
        """Replace the object atomically: a reader sees the old content or the new, never a part."""

    def read_versioned(self, relative: str) -> tuple[bytes, str] | None:
        """(content, version) or None; the version is what ``write_if`` compares against."""

    def write_if(self, data: bytes, relative: str, version: str | None) -> bool:
        """Compare-and-swap: write only if the object is still at ``version`` (None: only if it does
        not exist yet); False when another writer got there first, so a read-modify-write cannot
        lose someone else's update."""

    def upload_file(self, local: Path, relative: str) -> None: ...

    def download_file(self, relative: str, local: Path) -> None:
        """Copy the object to ``local`` atomically."""

    def upload_tree(self, local_dir: str | Path, on_file: OnFile | None = None,
                    metadata: dict[str, Any] | None = None) -> dict:
        """Publish ``local_dir`` here with its manifest (complete only once the manifest is there)."""

    def create_tree(self, local_dir: str | Path, metadata: dict[str, Any] | None = None) -> dict:
        """Publish ``local_dir`` here only if nothing is here yet: of writers racing for the same
        root exactly one succeeds, the others get a StorageError before they write anything.
        The root is claimed first (``CLAIM_NAME``), the manifest comes last."""

    def fetch(self, local_dir: str | Path) -> dict:
        """Copy the published folder here to ``local_dir``, verified against its manifest."""

    def mirror(self, local_dir: str | Path, on_file: OnFile | None = None) -> int:
        """Copy every object (no manifest of ours, e.g. a raw COCO dataset); the number of files."""

    def list_objects(self) -> list[tuple[str, int, str]]:
        """(relative path, size, version tag) of every object, sorted; the tag changes with the content."""

    def exists(self) -> bool:
        """Whether anything is stored under this root."""

    def fingerprint(self) -> str:
        """A short digest of the listing, to key a pipeline cache without reading the data."""


def open_store(uri: str | Path, settings: S3Settings | None = None) -> Store:
    """``s3://bucket/prefix`` -> ``S3Store`` (``settings`` default to the environment), else a folder."""
    text = str(uri)
    return S3Store(text, settings) if text.startswith("s3://") else LocalStore(text)


class _Reader:
    """What both stores do the same way on top of their primitives."""

    uri: str
    read_bytes: Callable[[str], bytes | None]
    download_file: Callable[[str, Path], None]
    list_objects: Callable[[], list[tuple[str, int, str]]]

    def fetch(self, local_dir: str | Path) -> dict:
        """Only the files the manifest lists, each verified by size and sha256 in a staging
        folder before the folder is swapped into place."""
        local_dir = Path(local_dir)
        raw = self.read_bytes(MANIFEST_NAME)
        if raw is None:
            raise StorageError(f"{self.uri}: no {MANIFEST_NAME}; the artifact is incomplete or was never published")
        manifest = parse_manifest(raw, f"{self.uri}/{MANIFEST_NAME}")
        staging = staging_dir(local_dir)
        try:
            for entry in manifest["files"]:
                self.download_file(entry["path"], staging / entry["path"])
            try:
                verify_files(staging, manifest)
            except ArtifactError as exc:
                raise StorageError(f"{self.uri}: {str(exc).replace(str(staging), '').lstrip('/')}") from None
            write_manifest(staging / MANIFEST_NAME, manifest)
            swap_into_place(staging, local_dir)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return manifest

    def mirror(self, local_dir: str | Path, on_file: OnFile | None = None) -> int:
        """Sizes are checked in a staging folder that is swapped into place only when all files arrived."""
        local_dir = Path(local_dir)
        listing = self.list_objects()
        if not listing:
            raise StorageError(f"{self.uri}: no objects under this prefix")
        try:
            check_layout([relative for relative, _, _ in listing], self.uri)
        except ArtifactError as exc:
            raise StorageError(str(exc)) from None
        staging = staging_dir(local_dir)
        try:
            for relative, size, _ in listing:
                target = staging / safe_relpath(relative)
                self.download_file(relative, target)
                if target.stat().st_size != size:
                    raise StorageError(f"{self.uri}/{relative}: got {target.stat().st_size} bytes, listed {size}")
                if on_file:
                    on_file(relative)
            swap_into_place(staging, local_dir)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return len(listing)

    def fingerprint(self) -> str:
        entries = [f"{name}\t{size}\t{tag}" for name, size, tag in self.list_objects()]
        if not entries:
            raise StorageError(f"{self.uri}: nothing to fingerprint (no files)")
        return hashlib.sha256("\n".join(entries).encode()).hexdigest()[:16]


def _content_version(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class LocalStore(_Reader):
    """Files under a local folder. ``write_if`` holds an exclusive ``flock`` on ``<name>.lock``
    (a file of its own, so the atomic rename of the object cannot swap the lock away; released by
    the kernel if the process dies, so a killed writer never leaves a stale lock) around the
    compare and the rename; the version is the content's sha256."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.uri = str(root).rstrip("/") or "/"

    def path(self, relative: str) -> Path:
        return self.root / safe_relpath(relative)

    def read_bytes(self, relative: str) -> bytes | None:
        path = self.path(relative)
        return path.read_bytes() if path.is_file() else None

    def write_bytes(self, data: bytes, relative: str) -> None:
        atomic_write_bytes(self.path(relative), data)

    def read_versioned(self, relative: str) -> tuple[bytes, str] | None:
        data = self.read_bytes(relative)
        return None if data is None else (data, _content_version(data))

    def write_if(self, data: bytes, relative: str, version: str | None) -> bool:
        path = self.path(relative)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_name(f"{path.name}.lock"), "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                current = self.read_bytes(relative)
                if (None if current is None else _content_version(current)) != version:
                    return False
                atomic_write_bytes(path, data)
                return True
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def upload_file(self, local: Path, relative: str) -> None:
        with atomic_output(self.path(relative)) as tmp:
            shutil.copyfile(local, tmp)

    def download_file(self, relative: str, local: Path) -> None:
        with atomic_output(local) as tmp:
            shutil.copyfile(self.path(relative), tmp)

    def upload_tree(self, local_dir: str | Path, on_file: OnFile | None = None,
                    metadata: dict[str, Any] | None = None) -> dict:
        """Built in a sibling staging folder, manifest last, then renamed into place."""
        local_dir = _existing_dir(local_dir)
        manifest = build_manifest(local_dir, metadata=metadata)
        staging = staging_dir(self.root)
        try:
            for entry in manifest["files"]:
                target = staging / entry["path"]
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(local_dir / entry["path"], target)
                if on_file:
                    on_file(entry["path"])
            write_manifest(staging / MANIFEST_NAME, manifest)
            swap_into_place(staging, self.root)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return manifest

    def create_tree(self, local_dir: str | Path, metadata: dict[str, Any] | None = None) -> dict:
        """Claimed by ``mkdir`` (one writer wins) under the folder's lock, built in place, manifest
        last. A folder a killed writer left (its claim, no manifest, its lock free) is removed by
        ``remove_abandoned``."""
        local_dir = _existing_dir(local_dir)
        manifest = build_manifest(local_dir, metadata=metadata)
        self.root.parent.mkdir(parents=True, exist_ok=True)
        try:
            with exclusive(self.root, "bpnet publish"):
                try:
                    self.root.mkdir()
                except FileExistsError:
                    raise _taken(self.uri, self.read_bytes(CLAIM_NAME)) from None
                try:
                    atomic_write_bytes(self.root / CLAIM_NAME, _claim())
                    for entry in manifest["files"]:
                        self.upload_file(local_dir / entry["path"], entry["path"])
                    write_manifest(self.root / MANIFEST_NAME, manifest)
                except BaseException:
                    shutil.rmtree(self.root, ignore_errors=True)  # ours, and never complete
                    raise
        except BusyError as exc:
            raise StorageError(str(exc)) from None
        return manifest

    def list_objects(self) -> list[tuple[str, int, str]]:
        """The version tag is the modification time in ns: cheap for a large dataset."""
        if not self.root.is_dir():
            return []
        listing = []
        for path in self.root.rglob("*"):
            if path.is_file():
                stat = path.stat()
                listing.append((path.relative_to(self.root).as_posix(), stat.st_size, str(stat.st_mtime_ns)))
        return sorted(listing)

    def exists(self) -> bool:
        return self.root.exists()


def remove_abandoned(root: str | Path) -> list[Path]:
    """Remove the folders under ``root`` that ``LocalStore.create_tree`` claimed and a killed
    writer left: a claim, no manifest and nobody holding the folder's lock. Folders without our
    claim are never touched. Returns those removed."""
    removed = []
    root = Path(root)
    for folder in sorted(root.iterdir()) if root.is_dir() else ():
        if not (folder / CLAIM_NAME).is_file() or (folder / MANIFEST_NAME).exists():
            continue
        try:
            with exclusive(folder, "bpnet publish (removing an abandoned release)"):
                if (folder / CLAIM_NAME).is_file() and not (folder / MANIFEST_NAME).exists():
                    log.warning("%s: removing the incomplete release a killed publish left", folder)
                    shutil.rmtree(folder)
                    removed.append(folder)
        except BusyError:
            continue  # being published right now
    return removed


def _existing_dir(local_dir: str | Path) -> Path:
    local_dir = Path(local_dir)
    if not local_dir.is_dir():
        raise StorageError(f"{local_dir}: not a directory")
    return local_dir


def _split_s3(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    bucket, prefix = parsed.netloc, parsed.path.strip("/")
    if not bucket:
        raise StorageError(f"{uri}: no bucket in the URI (expected s3://bucket/prefix)")
    return bucket, (safe_relpath(prefix) if prefix else "")


class S3Store(_Reader):
    """Objects under ``s3://bucket/prefix`` through the minio SDK; the version is the ETag."""

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
        from minio.error import InvalidResponseError, S3Error

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
            except InvalidResponseError as exc:  # e.g. a 403 without a body: no (or wrong) credentials
                keys = "set" if self.settings.access_key and self.settings.secret_key else "not set"
                raise StorageError(f"{what}: {self.settings.endpoint} refused the request (HTTP "
                                   f"{exc._code}, no S3 error document); BPNET_S3_ACCESS_KEY / BPNET_S3_SECRET_KEY "
                                   f"are {keys}: check them and the endpoint") from None  # noqa: SLF001
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

    def write_bytes(self, data: bytes, relative: str) -> None:
        key = self.key(relative)
        self._call(f"upload {self.uri}/{relative}",
                   lambda: self.client.put_object(self.bucket, key, io.BytesIO(data), len(data)))

    def download_file(self, relative: str, local: Path) -> None:
        key = self.key(relative)
        with atomic_output(local) as tmp:
            self._call(f"download {self.uri}/{relative}",
                       lambda: self.client.fget_object(self.bucket, key, str(tmp)))

    def read_bytes(self, relative: str) -> bytes | None:
        found = self.read_versioned(relative)
        return None if found is None else found[0]

    def list_objects(self) -> list[tuple[str, int, str]]:
        """Only the prefix as a folder: ``s3://b/coco`` does not list ``s3://b/coco-other``."""
        root = f"{self.prefix}/" if self.prefix else ""

        def listing() -> list[tuple[str, int, str]]:
            return sorted((o.object_name[len(root):], int(o.size or 0), (o.etag or "").strip('"'))
                          for o in self.client.list_objects(self.bucket, prefix=root, recursive=True)
                          if not o.is_dir)

        return self._call(f"list {self.uri}", listing)

    def exists(self) -> bool:
        root = f"{self.prefix}/" if self.prefix else ""
        return self._call(f"list {self.uri}", lambda: any(
            True for _ in self.client.list_objects(self.bucket, prefix=root, recursive=True)))

    def remove(self, relative: str) -> None:
        key = self.key(relative)
        self._call(f"remove {self.uri}/{relative}", lambda: self.client.remove_object(self.bucket, key))

    def upload_tree(self, local_dir: str | Path, on_file: OnFile | None = None,
                    metadata: dict[str, Any] | None = None) -> dict:
        """The old manifest goes first (a re-publish is incomplete until its new one lands), the
        new one last."""
        local_dir = _existing_dir(local_dir)
        manifest = build_manifest(local_dir, metadata=metadata)
        self.remove(MANIFEST_NAME)
        for entry in manifest["files"]:
            self.upload_file(local_dir / entry["path"], entry["path"])
            if on_file:
                on_file(entry["path"])
        self.write_bytes(manifest_bytes(manifest), MANIFEST_NAME)
        return manifest

    def create_tree(self, local_dir: str | Path, metadata: dict[str, Any] | None = None) -> dict:
        """Claimed by a conditional create of ``CLAIM_NAME`` (``If-None-Match: *``: of racing
        writers exactly one gets it), then the files, the manifest last and conditional too."""
        local_dir = _existing_dir(local_dir)
        manifest = build_manifest(local_dir, metadata=metadata)
        claim = _claim()
        if self.exists() or not self.write_if(claim, CLAIM_NAME, None):
            raise _taken(self.uri, self.read_bytes(CLAIM_NAME))
        if self.write_if(claim, CLAIM_NAME, None):  # the condition was ignored: a racer would have won too
            self.remove(CLAIM_NAME)
            raise StorageError(f"{self.uri}: {self.settings.endpoint} ignores conditional writes (If-None-Match: *), "
                               "so two publishers of one release id cannot be told apart; publish to a server "
                               "that supports them (MinIO, AWS S3)")
        for entry in manifest["files"]:
            self.upload_file(local_dir / entry["path"], entry["path"])
        if not self.write_if(manifest_bytes(manifest), MANIFEST_NAME, None):
            raise _taken(self.uri, self.read_bytes(CLAIM_NAME))
        return manifest

    def read_versioned(self, relative: str) -> tuple[bytes, str] | None:
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

    def write_if(self, data: bytes, relative: str, version: str | None) -> bool:
        """S3 conditional writes (``If-Match`` / ``If-None-Match: *``), supported by MinIO, AWS S3
        and moto. minio-py's public ``put_object`` turns extra headers into user metadata, so the
        request goes through its ``_put_object``."""
        from minio.error import S3Error

        key = self.key(relative)
        headers = {"Content-Type": "application/octet-stream",
                   **({"If-Match": f'"{version}"'} if version is not None else {"If-None-Match": "*"})}

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


__all__ = ["LocalStore", "S3Settings", "S3Store", "StorageError", "Store", "open_store", "remove_abandoned"]
