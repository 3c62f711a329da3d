"""The HTTP face of the store: kube-apiserver's URL layout, discovery, LIST/WATCH/GET/CREATE/
UPDATE/PATCH/DELETE, and ``Status`` errors.

The HTTP layer is the standard library's ``ThreadingHTTPServer``: a thread per connection suits
a watch (it blocks on the store's condition variable between events, no event loop to bridge
to), the clients are a handful of controllers and kubectl, and it adds no dependency to a
harness that must run as root from a bare venv. HTTP/1.1 keep-alive; a watch is a chunked
response of newline-separated ``{"type","object"}`` JSON (apimachinery v0.35.0
pkg/util/framer; the JSON framer only needs concatenated objects).

What a client sees, per kube-apiserver v1.35 (staging/src/k8s.io/apiserver/pkg/endpoints):
- every body is JSON; a request that prefers protobuf
  (``Accept: application/vnd.kubernetes.protobuf,application/json``, client-go's default for
  built-in types) gets JSON with ``Content-Type: application/json``, which client-go decodes
  (client-go v0.35.7 rest/request.go transformResponse picks the decoder by Content-Type);
- aggregated discovery (``Accept: ...;g=apidiscovery.k8s.io;v=v2``) is answered with the legacy
  documents; client-go's discovery client falls back on the Content-Type (client-go v0.35.7
  discovery/discovery_client.go: downloadAPIs);
- a watch from a revision past the history is a 200 stream with one ERROR event carrying a
  410 Expired Status (the cacher's errWatcher: apiserver pkg/storage/cacher/cacher.go), which
  client-go's reflector turns into a relist;
- ``sendInitialEvents`` needs ``resourceVersionMatch=NotOlderThan`` and ``allowWatchBookmarks``
  (apimachinery pkg/apis/meta/internalversion/validation: ValidateListOptions) — else 422.
"""

from __future__ import annotations

import json
import logging
import socket
import socketserver
import threading
import time
import urllib.parse
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from harness.cluster.apiserver_objects import BY_NAME, GROUP_VERSIONS, RESOURCES, Resource
from harness.cluster.apiserver_selectors import Selector, SelectorError
from harness.cluster.apiserver_store import ApiError, Store

log = logging.getLogger(__name__)

MAX_BODY = 3 * 1024 * 1024  # kube-apiserver's default request body limit (3 MiB, apiserver options)
DEFAULT_WATCH_TIMEOUT = 1800.0  # kube-apiserver: --min-request-timeout
VERSION = {"major": "1", "minor": "35", "gitVersion": "v1.35.0-netpol-harness", "gitCommit": "",
           "gitTreeState": "clean", "buildDate": "", "goVersion": "", "compiler": "gc",
           "platform": "linux/amd64"}


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (also used for strategic merge patches: lists are replaced
    whole, which is what a strategic patch does for every list this harness serves but
    containers/conditions)."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def _bool(q: dict[str, str], key: str) -> bool:
    v = q.get(key, "")
    if v.lower() in ("", "false", "0"):
        return False
    if v.lower() in ("true", "1"):
        return True
    raise ApiError(400, "BadRequest", f"{key}: invalid boolean value {v!r}")


def _parse_path(path: str) -> tuple[Resource, str | None, str | None, bool]:
    """``/api/v1/...`` or ``/apis/g/v/...`` -> (resource, namespace, name, legacy-watch-prefix)."""
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["api"] and len(parts) >= 2:
        group, version, rest = "", parts[1], parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    watch_prefix = rest[:1] == ["watch"]
    if watch_prefix:
        rest = rest[1:]
    namespace = None
    if len(rest) >= 3 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    elif len(rest) == 2 and rest[0] == "namespaces":  # GET /api/v1/namespaces/NAME
        pass
    if not rest or len(rest) > 2:
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    res = BY_NAME.get((group, version, rest[0]))
    if res is None:
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    if namespace is not None and not res.namespaced:
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    return res, namespace, rest[1] if len(rest) == 2 else None, watch_prefix


class ApiHTTPServer(ThreadingHTTPServer):
    """The server: a store, the address clients use, the open connections (closed on stop)."""

    daemon_threads = False  # server_close() joins every handler thread: nothing outlives stop()
    block_on_close = True

    def __init__(self, sock: socket.socket, store: Store, *, bookmark_interval: float = 5.0):
        # BaseServer, not TCPServer.__init__: that would make a socket of its own in the calling
        # thread's (the root) namespace; the listening socket comes bound from the lab's.
        socketserver.BaseServer.__init__(self, sock.getsockname()[:2], Handler)
        self.socket = sock
        self.server_address = sock.getsockname()[:2]
        self.store = store
        self.bookmark_interval = bookmark_interval
        self.stopping = threading.Event()
        self.conns: set[socket.socket] = set()
        self.conns_lock = threading.Lock()
        # The last requests (verb, path with query): what tests and a debugging user look at to see
        # how a client listed and watched (e.g. that client-go relisted after a 410).
        self.recent: deque[tuple[str, str]] = deque(maxlen=512)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.conns_lock:
            self.conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.conns_lock:
            self.conns.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Cut every open connection (idle keep-alives block their thread in a read)."""
        with self.conns_lock:
            for c in list(self.conns):
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


class Handler(BaseHTTPRequestHandler):
    """One connection; one method per HTTP verb, all answering JSON."""

    protocol_version = "HTTP/1.1"
    server_version = "netpol-harness-apiserver"
    server: ApiHTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        log.debug("%s %s", self.address_string(), format % args)

    # -- answers ---------------------------------------------------------------------------------
    def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, code: int, obj: Any) -> None:
        self._send(code, json.dumps(obj, separators=(",", ":")).encode())

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Malformed HTTP (bad request line, headers): a Status, not the base class's HTML."""
        reason = {400: "BadRequest", 404: "NotFound", 405: "MethodNotAllowed", 408: "Timeout",
                  413: "RequestEntityTooLarge", 414: "RequestURITooLong", 431: "BadRequest",
                  501: "MethodNotAllowed", 505: "BadRequest"}.get(code, "InternalError")
        self.close_connection = True
        if not hasattr(self, "command") or self.command is None:
            self.command = "GET"
        if not getattr(self, "request_version", None) or self.request_version == "HTTP/0.9":
            self.request_version = "HTTP/1.1"
        body = json.dumps(ApiError(code, reason, message or "bad request").status()).encode()
        try:
            self.send_response(code, message)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass

    # -- verbs -----------------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 - BaseHTTPRequestHandler's naming
        self._dispatch("GET")

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")

    def do_PATCH(self) -> None:  # noqa: N802
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")

    def do_OPTIONS(self) -> None:  # noqa: N802
        self._dispatch("OPTIONS")

    def _dispatch(self, verb: str) -> None:
        self.server.recent.append((verb, self.path))
        try:
            url = urllib.parse.urlsplit(self.path)
            try:
                q = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True, strict_parsing=False))
            except ValueError as e:
                raise ApiError(400, "BadRequest", f"invalid query: {e}") from None
            body = self._read_body() if verb in ("POST", "PUT", "PATCH", "DELETE") else b""
            if verb == "GET" and self._discovery(url.path):
                return
            if verb == "OPTIONS":
                raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested "
                                                        "resource")
            try:
                res, namespace, name, watch_prefix = _parse_path(url.path)
            except ApiError:
                if not url.path.rstrip("/").endswith("/status"):
                    raise
                res, namespace, name, watch_prefix = _parse_path(url.path.rstrip("/")[:-len("/status")])
                if name is None or watch_prefix:
                    raise
                self._status(verb, res, namespace, name, body)
                return
            self._resource(verb, res, namespace, name, q, body, watch_prefix)
        except ApiError as e:
            self._json(e.code, e.status())
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as e:  # a bug must not take the server down: a 500 Status, logged
            log.exception("apiserver: %s %s", verb, self.path)
            self.close_connection = True
            try:
                self._json(500, ApiError(500, "InternalError", f"an error on the server ({e}) has prevented "
                                                               "the request from succeeding").status())
            except OSError:
                pass

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            raise ApiError(411, "BadRequest", "chunked request bodies are not supported; send Content-Length")
        try:
            n = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise ApiError(400, "BadRequest", "invalid Content-Length") from None
        if n < 0:
            raise ApiError(400, "BadRequest", "invalid Content-Length")
        if n > MAX_BODY:
            self.close_connection = True
            raise ApiError(413, "RequestEntityTooLarge", f"the request body is too large ({n} > {MAX_BODY} bytes)")
        return self.rfile.read(n) if n else b""

    def _decode(self, body: bytes) -> Any:
        ctype = (self.headers.get("Content-Type") or "application/json").split(";")[0].strip()
        if "protobuf" in ctype or "yaml" in ctype:
            raise ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format - "
                                                        f"accepted media types include: application/json, "
                                                        f"application/merge-patch+json, "
                                                        f"application/strategic-merge-patch+json (got {ctype})")
        try:
            return json.loads(body or b"null")
        except (ValueError, UnicodeDecodeError) as e:
            raise ApiError(400, "BadRequest", f"the body of the request could not be decoded as JSON: {e}") from None

    # -- discovery -------------------------------------------------------------------------------
    def _discovery(self, path: str) -> bool:
        path = path.rstrip("/") or "/"
        if path in ("/healthz", "/readyz", "/livez"):
            self._send(200, b"ok", "text/plain; charset=utf-8")
            return True
        if path == "/version":
            self._json(200, VERSION)
            return True
        if path == "/api":
            host, port = self.server.server_address[:2]
            self._json(200, {"kind": "APIVersions", "versions": ["v1"],
                             "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0",
                                                             "serverAddress": f"{host}:{port}"}]})
            return True
        if path == "/apis":
            self._json(200, {"kind": "APIGroupList", "apiVersion": "v1",
                             "groups": [self._group(g) for g in sorted({g for g, _ in GROUP_VERSIONS if g})]})
            return True
        parts = [p for p in path.split("/") if p]
        if len(parts) == 2 and parts[0] == "apis" and any(g == parts[1] for g, _ in GROUP_VERSIONS):
            self._json(200, {"kind": "APIGroup", "apiVersion": "v1", **self._group(parts[1])})
            return True
        gv = ("", parts[1]) if parts[:1] == ["api"] and len(parts) == 2 else \
             (parts[1], parts[2]) if parts[:1] == ["apis"] and len(parts) == 3 else None
        if gv is not None and gv in GROUP_VERSIONS:
            group, version = gv
            self._json(200, {"kind": "APIResourceList", "apiVersion": "v1",
                             "groupVersion": f"{group}/{version}" if group else version,
                             "resources": [r.discovery() for r in RESOURCES if (r.group, r.version) == gv]})
            return True
        return False

    @staticmethod
    def _group(group: str) -> dict[str, Any]:
        versions = [{"groupVersion": f"{group}/{v}", "version": v} for g, v in GROUP_VERSIONS if g == group]
        return {"name": group, "versions": versions, "preferredVersion": versions[0]}

    # -- resources -------------------------------------------------------------------------------
    def _resource(self, verb: str, res: Resource, namespace: str | None, name: str | None, q: dict[str, str],
                  body: bytes, watch_prefix: bool) -> None:
        store = self.server.store
        if verb == "GET" and (watch_prefix or _bool(q, "watch")):
            if name is not None:  # a watch of one object: a fieldSelector on its name
                q = {**q, "fieldSelector": ",".join(filter(None, [q.get("fieldSelector"), f"metadata.name={name}"]))}
            self._watch(res, namespace, q)
        elif verb == "GET" and name is None:
            sel = self._selector(res, q)
            self._check_list_options(q, watch=False)
            items, rv = store.list(res, namespace, sel)
            self._json(200, {"kind": res.list_kind, "apiVersion": res.api_version,
                             "metadata": {"resourceVersion": str(rv)}, "items": items})
        elif verb == "GET":
            self._json(200, store.get(res, namespace, name))
        elif verb == "POST" and name is None:
            if res.namespaced and namespace is None:
                raise ApiError(405, "MethodNotAllowed", f"create of namespaced {res.name} needs a namespace in "
                                                        "the URL")
            self._json(201, store.create(res, self._decode(body), namespace))
        elif verb == "PUT" and name is not None:
            self._json(200, store.update(res, self._decode(body), namespace, name=name))
        elif verb == "PATCH" and name is not None:
            ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
            if ctype not in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
                raise ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format - "
                                                            f"accepted media types include: "
                                                            f"application/merge-patch+json, "
                                                            f"application/strategic-merge-patch+json (got {ctype!r})")
            patch = self._decode(body)
            if not isinstance(patch, dict):
                raise ApiError(400, "BadRequest", "a merge patch must be a JSON object")
            cur = store.get(res, namespace, name)
            new = merge_patch(cur, patch)
            new.setdefault("metadata", {})["resourceVersion"] = patch.get("metadata", {}).get("resourceVersion") \
                if isinstance(patch.get("metadata"), dict) else None
            self._json(200, store.update(res, new, namespace, name=name))
        elif verb == "DELETE" and name is not None:
            self._json(200, store.delete(res, namespace, name))
        else:
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested "
                                                    "resource")

    def _status(self, verb: str, res: Resource, namespace: str | None, name: str, body: bytes) -> None:
        """The ``status`` subresource (what a kubelet or a node controller writes): GET the object,
        PUT/PATCH change its status only (apiserver pkg/registry/core/pod/strategy.go:
        podStatusStrategy.PrepareForUpdate keeps the spec)."""
        store = self.server.store
        cur = store.get(res, namespace, name)
        if verb == "GET":
            self._json(200, cur)
            return
        if verb not in ("PUT", "PATCH"):
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested "
                                                    "resource")
        new_obj = self._decode(body)
        if not isinstance(new_obj, dict):
            raise ApiError(400, "BadRequest", "the body of the request was not a JSON object")
        status = merge_patch(cur.get("status"), new_obj.get("status")) if verb == "PATCH" else new_obj.get("status")
        meta = dict(cur["metadata"])
        want = (new_obj.get("metadata") or {}).get("resourceVersion") if verb == "PUT" else None
        meta["resourceVersion"] = want
        self._json(200, store.update(res, {**cur, "metadata": meta, "status": status or {}}, namespace, name=name))

    @staticmethod
    def _selector(res: Resource, q: dict[str, str]) -> Selector:
        try:
            return Selector.parse(q.get("labelSelector"), q.get("fieldSelector"), res.kind)
        except SelectorError as e:
            raise ApiError(400, "BadRequest", str(e)) from None

    @staticmethod
    def _check_list_options(q: dict[str, str], *, watch: bool) -> None:
        match = q.get("resourceVersionMatch", "")
        if match not in ("", "NotOlderThan", "Exact"):
            raise ApiError(422, "Invalid", f"resourceVersionMatch: Unsupported value: {match!r}: supported values: "
                                           '"Exact", "NotOlderThan"')
        if match and not q.get("resourceVersion") and not (watch and _bool(q, "sendInitialEvents")):
            raise ApiError(422, "Invalid", "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden "
                                           "unless resourceVersion is provided")
        for key in ("limit", "timeoutSeconds"):
            v = q.get(key)
            if v not in (None, "") and not v.lstrip("-").isdigit():
                raise ApiError(400, "BadRequest", f"{key}: invalid integer value {v!r}")
        if "sendInitialEvents" in q:
            send = _bool(q, "sendInitialEvents")
            if not watch:
                raise ApiError(422, "Invalid", "sendInitialEvents: Forbidden: sendInitialEvents is forbidden for list")
            if send and match != "NotOlderThan":
                raise ApiError(422, "Invalid", "resourceVersionMatch: Forbidden: sendInitialEvents requires setting "
                                               "resourceVersionMatch to NotOlderThan")
            if send and not _bool(q, "allowWatchBookmarks"):
                raise ApiError(422, "Invalid", "allowWatchBookmarks: Forbidden: sendInitialEvents requires "
                                               "allowWatchBookmarks=true")
        elif watch and match:
            raise ApiError(422, "Invalid", "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden "
                                           "for watch unless sendInitialEvents is provided")

    def _watch(self, res: Resource, namespace: str | None, q: dict[str, str]) -> None:
        store = self.server.store
        sel = self._selector(res, q)
        self._check_list_options(q, watch=True)
        try:
            timeout = float(q["timeoutSeconds"]) if q.get("timeoutSeconds") else DEFAULT_WATCH_TIMEOUT
        except ValueError:
            raise ApiError(400, "BadRequest", f"invalid timeoutSeconds {q['timeoutSeconds']!r}: want an integer"
                           ) from None
        bookmarks = _bool(q, "allowWatchBookmarks")
        send_initial = _bool(q, "sendInitialEvents") if "sendInitialEvents" in q else None
        try:
            watcher = store.watch(res, namespace, sel, q.get("resourceVersion"), send_initial_events=send_initial)
            first = watcher.initial()
            error = None
        except ApiError as e:
            if e.code not in (410, 504):
                raise
            watcher, first, error = None, [], e
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        if error is not None:  # the cacher's errWatcher: one ERROR event, then the end
            self._chunk([json.dumps({"type": "ERROR", "object": error.status()}).encode()])
            self._end_chunks()
            return
        assert watcher is not None
        self._chunk(first)
        deadline = time.monotonic() + max(timeout, 0.0)
        next_bookmark = time.monotonic() + self.server.bookmark_interval
        while not self.server.stopping.is_set():
            now = time.monotonic()
            if now >= deadline:
                break
            wait = min(deadline, next_bookmark if bookmarks else deadline) - now
            try:
                events, closed = watcher.next(max(0.0, min(wait, 1.0)))
            except ApiError as e:  # fell out of the history while writing to a slow client
                self._chunk([json.dumps({"type": "ERROR", "object": e.status()}).encode()])
                break
            if events:
                self._chunk(events)
            if closed:
                break
            if bookmarks and time.monotonic() >= next_bookmark:
                self._chunk([watcher.bookmark()])
                next_bookmark = time.monotonic() + self.server.bookmark_interval
        self._end_chunks()

    def _chunk(self, events: list[bytes]) -> None:
        if not events:
            return
        data = b"".join(e + b"\n" for e in events)
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _end_chunks(self) -> None:
        try:
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:
            self.close_connection = True
