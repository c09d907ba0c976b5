"""What several steps check before any work: the model key and their output paths."""

from __future__ import annotations

import os
from pathlib import Path

from bpnet.errors import UsageError

KEY_ENV = "BPNET_MODEL_KEY"


def model_key(key: str | None, required: bool = True) -> str | None:
    """``key``, else $BPNET_MODEL_KEY (which keeps it out of process lists); missing is a UsageError
    when ``required`` (plain ONNX and unencrypted files need none)."""
    key = key or os.environ.get(KEY_ENV)
    if required and not key:
        raise UsageError(f"missing — pass the model key or set ${KEY_ENV}", field="key")
    return key


def output_dir(field: str, path: str | Path) -> Path:
    """Refuse an output folder that is (or lies under) a file, before any work starts."""
    path = Path(path)
    for candidate in (path, *path.parents):
        if candidate.exists():
            if not candidate.is_dir():
                raise UsageError(f"{path} — {candidate} is a file; expected a folder", field=field)
            break
    return path


def output_file(field: str, path: str | Path) -> Path:
    """Refuse an output file path that is a folder or lies under a file."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{path} — is a folder; expected a file path", field=field)
    output_dir(field, path.parent)
    return path
