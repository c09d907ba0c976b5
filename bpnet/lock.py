"""One writer per output: an exclusive lock on a results folder (or output prefix) for as long
as a command writes it.

Two ``bpnet train -r SAME`` (or two ``dataset_convert -o SAME``) would otherwise interleave their
files and both report success. The lock is a file beside the target, ``.<name>.lock``, held with
``flock``: the kernel drops it when its process dies, so a lock left by a killed process is free
for the next command, which takes it over (and says whose it was). The file records the holder
(command, host, pid, start time), so the one refused reads in one line who has the folder. The
file sits beside the target, not in it, so it is never part of a manifest or a copied folder.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bpnet.errors import StepError

log = logging.getLogger(__name__)


class BusyError(StepError):
    """Another process is writing the same output."""


def lock_path(target: str | Path) -> Path:
    """The lock file of ``target``: ``.<name>.lock`` beside it."""
    target = Path(os.path.abspath(target))
    return target.with_name(f".{target.name}.lock")


def _holder(what: str) -> dict[str, object]:
    return {"command": what, "host": socket.gethostname(), "pid": os.getpid(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def _read(handle) -> dict[str, object]:
    handle.seek(0)
    try:
        found = json.loads(handle.read() or "{}")
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def _describe(holder: dict[str, object]) -> str:
    if not holder:
        return "another process (it has not written its name yet)"
    return (f"{holder.get('command', 'a bpnet command')} (pid {holder.get('pid')} on host {holder.get('host')}, "
            f"since {holder.get('started')})")


@contextmanager
def exclusive(target: str | Path, what: str) -> Iterator[Path]:
    """Hold the lock of ``target`` while the block writes it; a BusyError at once if another
    process holds it. ``what`` names the command in the lock (``bpnet train``)."""
    path = lock_path(target)
    created = [p for p in (path.parent, *path.parent.parents) if not p.exists()]
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with _held(path, target, what):
            yield path
    finally:
        for folder in created:  # made only to hold the lock: a command that wrote nothing leaves nothing
            try:
                folder.rmdir()
            except OSError:
                break


@contextmanager
def _held(path: Path, target: str | Path, what: str) -> Iterator[None]:
    while True:
        handle = open(path, "a+")  # noqa: SIM115 - held for the whole block
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read(handle)
            handle.close()
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise BusyError(f"{target}: in use by {_describe(holder)}; wait for it to finish or write elsewhere") \
                from None
        try:  # the file may have been removed by the holder that just released it: lock the current one
            same = os.fstat(handle.fileno()).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        handle.close()
    stale = _read(handle)
    if stale:
        log.warning("%s: taking over the lock left by %s, which is no longer running", target, _describe(stale))
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps(_holder(what)) + "\n")
    handle.flush()
    try:
        yield
    finally:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        handle.close()
