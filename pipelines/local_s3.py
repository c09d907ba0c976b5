"""A local S3 server for ``make run-containers``: moto's, on 127.0.0.1, for the length of one run.

The container run reads its dataset from and publishes its release to this server through the
same code (``bpnet.storage``) and the same ``BPNET_S3_*`` variables that reach MinIO on a cluster.
moto keeps objects in memory: what the run published is copied back to a folder before the server
stops (``fetch`` verifies it against its manifest on the way). Its keys are throwaway values for a
server that lives only inside this process and listens only on the loopback address.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bpnet.storage import S3Settings, open_store

log = logging.getLogger(__name__)

BUCKET = "bpnet-local"
_KEYS = {"BPNET_S3_ACCESS_KEY": "local-run", "BPNET_S3_SECRET_KEY": "local-run-secret"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class LocalS3:
    """A running server: its variables (as a step receives them) and the bucket's URI."""

    environment: dict[str, str]

    @property
    def root(self) -> str:
        return f"s3://{BUCKET}"

    def upload(self, folder: str | Path, prefix: str) -> str:
        """Every file of ``folder`` under ``s3://bpnet-local/<prefix>``; returns that URI."""
        uri = f"{self.root}/{prefix}"
        files = sorted(p for p in Path(folder).rglob("*") if p.is_file())
        store = open_store(uri)
        for path in files:
            store.upload_file(path, path.relative_to(folder).as_posix())
        log.info("uploaded %d files of %s to %s", len(files), folder, uri)
        return uri


@contextlib.contextmanager
def local_s3() -> Iterator[LocalS3]:
    """Start moto on a free loopback port, create the bucket, set ``BPNET_S3_*`` in this process's
    environment (restored afterwards) and stop the server on the way out."""
    import minio
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    environment = {"BPNET_S3_ENDPOINT": f"http://127.0.0.1:{port}", "BPNET_S3_SECURE": "false",
                   "BPNET_S3_REGION": "us-east-1", **_KEYS}
    saved = {name: os.environ.get(name) for name in environment}
    os.environ.update(environment)
    try:
        settings = S3Settings.from_env()
        minio.Minio(settings.endpoint, access_key=settings.access_key, secret_key=settings.secret_key,
                    secure=False, region=settings.region).make_bucket(BUCKET)
        log.info("local S3 server (moto) on 127.0.0.1:%d, bucket %s", port, BUCKET)
        yield LocalS3(environment)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        server.stop()
