"""Releases: one complete, checksummed folder per release, and a ``latest`` pointer.

A release is published to ``<release_root>/<release_id>/`` (a folder or an ``s3://`` prefix)
through ``bpnet.storage.publish_dir``, whose manifest is written last; only then is
``<release_root>/latest.json`` replaced (one atomic write or object put) to name it. A run that
fails or is killed before that leaves ``latest`` on the previous release; a half-published
release has no manifest and is refused by every reader.

``latest.json``: ``{"release": id, "uri": <release folder>, "metrics": {...}, "published": UTC}``.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import time
from pathlib import Path
from typing import Any

from bpnet.artifacts import atomic_write_text, parse_manifest, sha256_file
from bpnet.storage import MANIFEST_NAME, S3Store, StorageError, download_file, is_remote, publish_dir

log = logging.getLogger(__name__)

LATEST = "latest.json"


def _join(root: str, name: str) -> str:
    return f"{root.rstrip('/')}/{name}"


def read_latest(release_root: str) -> dict[str, Any] | None:
    """The ``latest`` pointer, or None when nothing was released yet."""
    if is_remote(release_root):
        raw = S3Store(release_root).read_bytes(LATEST)
        return None if raw is None else json.loads(raw)
    path = Path(release_root) / LATEST
    return json.loads(path.read_text()) if path.is_file() else None


def promotion_decision(ap: float, min_ap: float, previous: dict[str, Any] | None,
                       metric: str = "AP") -> tuple[bool, str]:
    """Promote only if ``ap`` reaches ``min_ap`` and is not below the latest release's."""
    if not math.isfinite(ap):
        return False, f"{metric} is {ap}: not a number"
    if not ap >= min_ap:
        return False, f"{metric} {ap:.4f} is below the minimum {min_ap:.4f}"
    if previous is not None:
        before = float(previous.get("metrics", {}).get(metric, float("-inf")))
        if ap < before:
            return False, f"{metric} {ap:.4f} is below the latest release {previous['release']} ({before:.4f})"
        return True, f"{metric} {ap:.4f} >= minimum {min_ap:.4f} and >= release {previous['release']} ({before:.4f})"
    return True, f"{metric} {ap:.4f} >= minimum {min_ap:.4f} (first release)"


def publish_release(src_dir: str | Path, release_root: str, release_id: str, metrics: dict[str, Any]) -> dict:
    """Publish ``src_dir`` as release ``release_id`` and then point ``latest`` at it."""
    dest = _join(release_root, release_id)
    manifest = publish_dir(src_dir, dest, metadata={"release": release_id, "metrics": metrics})
    pointer = {"release": release_id, "uri": dest, "metrics": metrics,
               "published": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    text = json.dumps(pointer, indent=2) + "\n"
    if is_remote(release_root):
        S3Store(release_root).upload_bytes(text.encode(), LATEST)
    else:
        atomic_write_text(Path(release_root) / LATEST, text)
    log.info("released %s (%d files); latest -> %s", dest, len(manifest["files"]), release_id)
    return pointer


def fetch_latest_file(release_root: str, relative: str, local: str | Path) -> dict[str, Any]:
    """Download one file of the latest release, checked against that release's manifest (size and
    sha256); returns the ``latest`` pointer."""
    pointer = read_latest(release_root)
    if pointer is None:
        raise StorageError(f"{release_root}: no release yet ({LATEST} missing)")
    uri, local = pointer["uri"], Path(local)
    with tempfile.TemporaryDirectory() as tmp:
        download_file(_join(uri, MANIFEST_NAME), Path(tmp) / MANIFEST_NAME)
        manifest = parse_manifest((Path(tmp) / MANIFEST_NAME).read_bytes(), _join(uri, MANIFEST_NAME))
    entry = next((f for f in manifest["files"] if f["path"] == relative), None)
    if entry is None:
        raise StorageError(f"{uri}: the release has no {relative}")
    download_file(_join(uri, relative), local)
    if local.stat().st_size != entry["size"] or sha256_file(local) != entry["sha256"]:
        local.unlink()
        raise StorageError(f"{_join(uri, relative)}: checksum mismatch with the release manifest")
    return pointer
