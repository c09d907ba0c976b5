"""A small stand-in for the Kubeflow Pipelines v2beta1 REST API on 127.0.0.1, for tests.

It keeps pipelines, versions, experiments, runs and recurring runs in memory, answers in the
JSON shapes ``kfp_server_api`` deserializes, and records every request (method, path, query,
headers, body) so tests can assert on exactly what the real ``kfp.Client`` sent.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

API = "/apis/v2beta1"


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body or b"{}")


@dataclass
class State:
    pipelines: dict[str, dict] = field(default_factory=dict)
    versions: dict[str, list[dict]] = field(default_factory=dict)
    experiments: dict[str, dict] = field(default_factory=dict)
    runs: dict[str, dict] = field(default_factory=dict)
    recurring: dict[str, dict] = field(default_factory=dict)
    uploads: list[bytes] = field(default_factory=list)
    refuse: dict[str, int] = field(default_factory=dict)  # "METHOD /route" -> HTTP status to answer
    multi_user: bool = False
    requests: list[Request] = field(default_factory=list)
    counter: int = 0

    def new_id(self, kind: str) -> str:
        self.counter += 1
        return f"{kind}-{self.counter}"


def _filter_value(query: dict[str, list[str]]) -> str | None:
    """The string value of a kfp 'display_name EQUALS x' filter, if any."""
    raw = query.get("filter", [None])[0]
    if not raw:
        return None
    predicates = json.loads(raw).get("predicates", [])
    return predicates[0].get("string_value", predicates[0].get("stringValue")) if predicates else None


def _multipart_file(body: bytes, content_type: str) -> bytes:
    boundary = content_type.split("boundary=")[-1].encode()
    for part in body.split(b"--" + boundary):
        if b"filename=" in part:
            return part.split(b"\r\n\r\n", 1)[1].rsplit(b"\r\n", 1)[0]
    return b""


class _Handler(BaseHTTPRequestHandler):
    state: State

    def log_message(self, *args: Any) -> None:  # keep test output quiet
        pass

    def _reply(self, status: int, doc: Any) -> None:
        data = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self) -> None:
        url = urlparse(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k.lower(): v for k, v in self.headers.items()}
        req = Request(self.command, url.path, parse_qs(url.query), headers, body)
        s = self.state
        s.requests.append(req)
        path, q = url.path, req.query
        if (status := s.refuse.get(f"{self.command} {path[len(API):]}")) is not None:
            return self._reply(status, {"error": "refused by test", "code": 7, "message": "permission denied"})
        if not path.startswith(API):
            return self._reply(404, {"error": f"no route {path}"})
        route = path[len(API):]
        if route == "/healthz":
            return self._reply(200, {"multi_user": s.multi_user})
        if route == "/pipelines" and self.command == "GET":  # a namespace's pipelines, or the shared ones
            name, namespace = _filter_value(q), q.get("namespace", [None])[0]
            found = [p for p in s.pipelines.values()
                     if (name is None or p["display_name"] == name) and p.get("namespace") == namespace]
            return self._reply(200, {"pipelines": found, "total_size": len(found)} if found else {})
        if route == "/pipelines/upload" and self.command == "POST":
            s.uploads.append(_multipart_file(body, self.headers["Content-Type"]))
            pid = s.new_id("pipeline")
            name, namespace = q["name"][0], q.get("namespace", [None])[0]
            if s.multi_user and namespace is None:
                return self._reply(403, {"error": "shared pipelines are admin-only", "code": 7,
                                         "message": "tenants must upload into their namespace"})
            s.pipelines[pid] = {"pipeline_id": pid, "display_name": name, "namespace": namespace}
            s.versions[pid] = [{"pipeline_id": pid, "pipeline_version_id": s.new_id("version"), "display_name": name}]
            return self._reply(200, s.pipelines[pid])
        if route == "/pipelines/upload_version" and self.command == "POST":
            s.uploads.append(_multipart_file(body, self.headers["Content-Type"]))
            pid = q["pipelineid"][0]
            version = {"pipeline_id": pid, "pipeline_version_id": s.new_id("version"), "display_name": q["name"][0]}
            s.versions[pid].append(version)
            return self._reply(200, version)
        if route.startswith("/pipelines/") and route.endswith("/versions") and self.command == "GET":
            versions = list(reversed(s.versions[route.split("/")[2]]))  # newest first
            return self._reply(200, {"pipeline_versions": versions, "total_size": len(versions)})
        if route == "/experiments" and self.command == "GET":
            name = _filter_value(q)
            found = [e for e in s.experiments.values() if name is None or e["display_name"] == name]
            return self._reply(200, {"experiments": found, "total_size": len(found)} if found else {})
        if route == "/experiments" and self.command == "POST":
            doc = req.json()
            eid = s.new_id("experiment")
            s.experiments[eid] = {"experiment_id": eid, "display_name": doc["display_name"],
                                  "namespace": doc.get("namespace")}
            return self._reply(200, s.experiments[eid])
        if route == "/runs" and self.command == "POST":
            doc = req.json()
            doc["run_id"] = s.new_id("run")
            s.runs[doc["run_id"]] = doc
            return self._reply(200, doc)
        if route == "/recurringruns" and self.command == "GET":  # paged: page_size, page_token
            eid = q.get("experiment_id", [None])[0]
            found = [r for r in s.recurring.values() if eid is None or r.get("experiment_id") == eid]
            start = int(q.get("page_token", ["0"])[0] or 0)
            size = int(q.get("page_size", ["10"])[0])
            page = found[start:start + size]
            doc = {"recurringRuns": page, "total_size": len(found)} if page else {}
            if start + size < len(found):
                doc["next_page_token"] = str(start + size)
            return self._reply(200, doc)
        if route == "/recurringruns" and self.command == "POST":
            doc = req.json()
            doc["recurring_run_id"] = s.new_id("recurring")
            s.recurring[doc["recurring_run_id"]] = doc
            return self._reply(200, doc)
        if route.startswith("/recurringruns/") and self.command == "DELETE":
            s.recurring.pop(route.split("/")[2], None)
            return self._reply(200, {})
        return self._reply(404, {"error": f"no route {self.command} {path}"})

    do_GET = do_POST = do_DELETE = _handle


class FakeKfpServer:
    """``with FakeKfpServer() as kfp: ...`` serves on ``kfp.url`` until the block ends."""

    def __init__(self) -> None:
        self.state = State()
        handler = type("Handler", (_Handler,), {"state": self.state})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FakeKfpServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()

    def requests(self, method: str, route: str) -> list[Request]:
        return [r for r in self.state.requests if r.method == method and r.path == API + route]
