"""Atomic file output and checksummed manifests: the one way every step writes results.

A reader must never mistake a half-written output for a finished one. Files are written to a
temporary sibling and renamed into place; a set of outputs is complete only when its manifest
(relative path, size, sha256 of every file) exists, and the manifest is always written last.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import shutil
import tempfile
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bpnet.errors import StepError

MANIFEST_NAME = "MANIFEST.json"
MANIFEST_VERSION = 1
_CHUNK = 1 << 20
_UMASK = os.umask(0o022)
os.umask(_UMASK)


class ArtifactError(StepError, RuntimeError):
    """An artifact is incomplete, tampered with, or addressed unsafely."""


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; it replaces ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs are read by other steps/users
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def safe_relpath(relative: str) -> str:
    """Normalize a relative artifact path (``dir//x`` and ``dir/./x`` are ``dir/x``); refuse
    anything that could escape its root/prefix."""
    if not isinstance(relative, str):
        raise ArtifactError(f"artifact path {relative!r:.80}: expected a string, got {type(relative).__name__}")
    if not relative or relative.startswith(("/", "\\")) or "\\" in relative or ":" in relative.split("/")[0]:
        raise ArtifactError(f"unsafe artifact path '{relative}': must be relative, with '/' separators")
    parts = relative.split("/")
    if any(p == ".." for p in parts):
        raise ArtifactError(f"unsafe artifact path '{relative}': '..' is not allowed")
    normalized = posixpath.normpath(relative)
    if normalized in (".", "") or normalized.startswith("../"):
        raise ArtifactError(f"unsafe artifact path '{relative}'")
    return normalized


def check_layout(paths: Iterable[str], where: str) -> list[str]:
    """The normalized ``paths``, refused if two name the same file once normalized (``dir//x``
    and ``dir/x``) or if one is both a file and a folder (``x`` and ``x/y``): either would make
    one file silently overwrite another, or fail half-way through a copy."""
    normalized: dict[str, str] = {}
    for raw in paths:
        path = safe_relpath(raw)
        if path in normalized:
            raise ArtifactError(f"{where}: '{normalized[path]}' and '{raw}' name the same file '{path}'")
        normalized[path] = raw
    for path, raw in normalized.items():
        parts = path.split("/")
        for depth in range(1, len(parts)):
            folder = "/".join(parts[:depth])
            if folder in normalized:
                raise ArtifactError(f"{where}: '{normalized[folder]}' is a file but '{raw}' needs it to be a folder")
    return sorted(normalized)


def staging_dir(dest: Path) -> Path:
    """A fresh sibling directory for building ``dest`` (same filesystem, so it can be renamed)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".staging", dir=dest.parent))
    os.chmod(staging, 0o777 & ~_UMASK)
    return staging


def swap_into_place(staging: Path, dest: Path) -> None:
    """Replace ``dest`` by ``staging`` with renames; on failure the old ``dest`` is put back."""
    old = None
    if dest.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".old", dir=dest.parent))
        os.replace(dest, old)  # an empty directory is replaced by a rename
    try:
        os.replace(staging, dest)
    except OSError:
        if old is not None:
            os.replace(old, dest)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def staged_dir(dest: str | Path) -> Iterator[Path]:
    """Yield a staging folder that replaces ``dest`` only if the block succeeds; on failure (a
    full disk half-way) it is removed and ``dest`` stays as it was."""
    dest = Path(dest)
    staging = staging_dir(dest)
    try:
        yield staging
        swap_into_place(staging, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def list_files(root: str | Path) -> list[str]:
    """Relative posix paths of all files under ``root`` (sorted), excluding the manifest."""
    root = Path(root)
    files = [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()]
    return sorted(f for f in files if f != MANIFEST_NAME)


def build_manifest(root: str | Path, files: Iterable[str] | None = None,
                   metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """Describe ``files`` (default: every file under ``root``) by size and sha256."""
    root = Path(root)
    entries = []
    for rel in check_layout(files if files is not None else list_files(root), str(root)):
        full = root / rel
        entries.append({"path": rel, "size": full.stat().st_size, "sha256": sha256_file(full)})
    return {"version": MANIFEST_VERSION, "files": entries, "metadata": metadata or {}}


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    """The manifest as it is stored, locally and in S3 alike."""
    return (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()


def write_manifest(path: str | Path, manifest: dict[str, Any]) -> None:
    atomic_write_bytes(path, manifest_bytes(manifest))


def parse_manifest(text: str | bytes, where: str) -> dict[str, Any]:
    """A manifest read from outside, every entry type-checked (a reader indexes and joins paths
    with what it says); paths come back normalized."""
    try:
        manifest = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ArtifactError(f"{where}: manifest is not JSON: {str(exc)[:120]}") from None
    entries = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(entries, list):
        raise ArtifactError(f"{where}: manifest is malformed: expected an object with a 'files' list")
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ArtifactError(f"{where}: manifest is malformed: files[{i}] is not an object")
        path, size, digest = entry.get("path"), entry.get("size"), entry.get("sha256")
        if not isinstance(path, str):
            raise ArtifactError(f"{where}: manifest is malformed: files[{i}].path is {type(path).__name__}, "
                                "expected a string")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ArtifactError(f"{where}: manifest is malformed: files[{i}].size must be a byte count")
        if not isinstance(digest, str) or len(digest) != 64 or set(digest) - set("0123456789abcdef"):
            raise ArtifactError(f"{where}: manifest is malformed: files[{i}].sha256 must be 64 hex digits")
    normalized = check_layout([e["path"] for e in entries], where)
    by_path = {safe_relpath(e["path"]): e for e in entries}
    manifest["files"] = [{**by_path[p], "path": p} for p in normalized]
    return manifest


def read_manifest(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: no manifest; the output is incomplete or was never published")
    return parse_manifest(path.read_bytes(), str(path))


def verify_files(root: str | Path, manifest: dict[str, Any], only: Collection[str] | None = None) -> None:
    """Check every manifest entry under ``root`` (or those whose path is in ``only``) by size and sha256."""
    root = Path(root)
    for entry in manifest["files"]:
        if only is not None and entry["path"] not in only:
            continue
        full = root / entry["path"]
        if not full.is_file():
            raise ArtifactError(f"{full}: listed in the manifest but missing")
        if full.stat().st_size != entry["size"] or sha256_file(full) != entry["sha256"]:
            raise ArtifactError(f"{full}: checksum mismatch with the manifest (corrupt or tampered)")
