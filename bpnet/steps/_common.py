"""What several steps check before any work: the model key and their output paths.

The rule for an output file (``replaceable_output``): one that is one of the command's inputs is
refused before any work (``export -m X -o X`` would replace the trained model); one that exists
is replaced (atomically, by the writer) only when it is an artifact of the same kind bpnet wrote,
as a rerun of a TLT script expects; anything else needs ``--overwrite``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path

from bpnet.errors import BpnetError, UsageError

KEY_ENV = "BPNET_MODEL_KEY"


def model_key(key: str | None, required: bool = True) -> str | None:
    """``key``, else $BPNET_MODEL_KEY (which keeps it out of process lists); missing is a UsageError
    when ``required`` (plain ONNX and unencrypted files need none)."""
    key = key or os.environ.get(KEY_ENV)
    if required and not key:
        raise UsageError(f"missing — pass the model key or set ${KEY_ENV}", field="key")
    if key and key != key.strip():
        raise UsageError("begins or ends with a space or a newline (read from a file with its line end?); "
                         "remove it: the key is used exactly as given", field="key")
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


Recognise = Callable[[Path], bool]
"""Whether an existing file is an artifact of the kind an output is (so bpnet may replace it)."""


def replaceable_output(field: str, path: str | Path, inputs: Mapping[str, str | Path | None], kind: str,
                       recognise: Recognise, overwrite: bool = False) -> Path:
    """``path`` checked as an output of ``kind`` before any work: not a folder, not one of
    ``inputs`` (by name: the flag or setting), and, if it exists, either recognised as ``kind``
    or ``overwrite`` given."""
    path = output_file(field, path)
    for name, given in inputs.items():
        if given is not None and path.exists() and Path(given).exists() and os.path.samefile(path, given):
            raise UsageError(f"{path} — is the input {name}; an output never replaces an input: write it elsewhere",
                             field=field)
    if path.exists() and not overwrite and not recognise(path):
        raise UsageError(f"{path} — exists and is not {kind} bpnet wrote (with this key, if encrypted); pass "
                         "--overwrite to replace it, or write elsewhere", field=field)
    return path


def is_model_file(key: str | None) -> Recognise:
    """A bpnet model (``.tlt``): a Keras archive, encrypted with ``key`` or plain."""
    from bpnet.crypto import MAGIC, decrypt

    def recognise(path: Path) -> bool:
        blob = path.read_bytes()
        try:
            data = decrypt(blob, key, str(path)) if blob.startswith(MAGIC) else blob
        except BpnetError:
            return False
        return data[:2] == b"PK"
    return recognise


def is_exported_file(key: str | None) -> Recognise:
    """An exported model (``.etlt``/``.onnx``): ONNX with bpnet's metadata, readable with ``key``."""
    def recognise(path: Path) -> bool:
        from bpnet.model.exported import read_exported

        try:
            read_exported(path, key)
        except BpnetError:
            return False
        return True
    return recognise


def is_json_with(*keys: str) -> Recognise:
    """A JSON record bpnet wrote: an object with these keys."""
    def recognise(path: Path) -> bool:
        try:
            record = json.loads(path.read_bytes())
        except (ValueError, OSError):
            return False
        return isinstance(record, dict) and all(k in record for k in keys)
    return recognise
