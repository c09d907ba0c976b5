"""A small fake Kubernetes API server on 127.0.0.1 for the launcher's tests: custom objects
(create/get/delete), pod listing by label selector and pod logs, with scripted status
transitions (each GET of a job moves it one step along its script), injected errors and delays."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

CUSTOM = re.compile(r"^/apis/(?P<group>[^/]+)/(?P<version>[^/]+)/namespaces/(?P<ns>[^/]+)/(?P<plural>[^/]+)"
                    r"(?:/(?P<name>[^/?]+))?$")
PODS = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/pods(?:/(?P<name>[^/]+)/log)?$")


def condition(kind: str, reason: str = "", message: str = "") -> dict[str, Any]:
    return {"type": kind, "status": "True", "reason": reason, "message": message}


@dataclass
class FakeCluster:
    """What the server holds and does; tests change it between and during calls."""

    script: list[list[dict[str, Any]]] = field(default_factory=list)  # conditions after the 1st, 2nd... GET
    chief_log: list[str] = field(default_factory=list)  # one more line is visible per log read
    chief_labels: dict[str, str] = field(default_factory=dict)
    errors: dict[tuple[str, str], int] = field(default_factory=dict)  # (method, plural) -> HTTP status
    delay: float = 0.0  # seconds before every answer (client timeouts)
    on_create: Callable[[dict[str, Any]], None] | None = None  # the "engine": called with each new job
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    gets: dict[str, int] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    log_reads: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(BaseHTTPRequestHandler):
    cluster: FakeCluster

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, body: Any, content: str = "application/json") -> None:
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _status(self, code: int, reason: str) -> None:
        self._send(code, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "code": code})

    def _handle(self, method: str) -> None:
        c = self.cluster
        path, _, query = self.path.partition("?")
        with c.lock:
            c.requests.append((method, path))
        time.sleep(c.delay)
        m = CUSTOM.match(path)
        if m:
            return self._custom(method, m["plural"], m["name"])
        m = PODS.match(path)
        if m:
            return self._pods(m["name"], query)
        self._status(404, "NotFound")

    def _custom(self, method: str, plural: str, name: str | None) -> None:
        c = self.cluster
        error = c.errors.get((method, plural))
        if error:
            return self._status(error, "Forbidden" if error == 403 else "NotFound")
        if method == "POST":
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            key = body["metadata"]["name"]
            with c.lock:
                if key in c.objects:
                    return self._status(409, "AlreadyExists")
                c.objects[key] = body
            if c.on_create:
                c.on_create(body)
            return self._send(201, body)
        with c.lock:
            obj = c.objects.get(name or "")
            if obj is None:
                return self._status(404, "NotFound")
            if method == "DELETE":
                del c.objects[name]
                return self._send(200, {"kind": "Status", "status": "Success"})
            n = c.gets[name] = c.gets.get(name, 0) + 1
            if c.script:
                obj["status"] = {"conditions": c.script[min(n, len(c.script)) - 1]}
            return self._send(200, obj)

    def _pods(self, log_of: str | None, query: str) -> None:
        c = self.cluster
        if log_of:
            with c.lock:
                c.log_reads += 1
                shown = c.chief_log[:c.log_reads]
            return self._send(200, "".join(f"{line}\n" for line in shown), "text/plain")
        items = []
        selector = parse_qs(query).get("labelSelector", [""])[0]
        wanted = dict(term.split("=", 1) for term in selector.split(",") if term)
        if c.chief_labels and wanted == c.chief_labels:
            items = [{"metadata": {"name": "chief-pod", "namespace": "team", "labels": c.chief_labels}}]
        return self._send(200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items})

    def do_GET(self) -> None:  # noqa: N802 (http.server's names)
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def do_DELETE(self) -> None:  # noqa: N802
        self._handle("DELETE")


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that timed out and hung up is part of the tests, not an error."""


class FakeApiServer:
    """The server on a free loopback port, in a thread; ``host`` is for kubernetes' Configuration."""

    def __init__(self, cluster: FakeCluster):
        handler = type("Handler", (_Handler,), {"cluster": cluster})
        self.cluster = cluster
        self.server = _QuietServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def host(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakeApiServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()
