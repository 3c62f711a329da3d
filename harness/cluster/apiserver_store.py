"""The served objects: one resourceVersion counter, a bounded event history, watch fan-out — pure.

Like etcd under kube-apiserver, every write gets the next revision of one global counter, so
resourceVersions increase across all kinds and each event in the history has the revision after
its predecessor's (an event is found by arithmetic, not a search). The history keeps the last
``history`` events; a watch from a revision older than that gets ``410 Expired`` ("too old
resource version"), which makes client-go's reflector relist (client-go v0.35.7
tools/cache/reflector.go: isExpiredError -> setIsLastSyncResourceVersionUnavailable).

Watch semantics follow kube-apiserver v1.35 staging/src/k8s.io/apiserver/pkg/storage/cacher:
- ``resourceVersion`` unset or "0": synthetic ADDED events for what exists, then changes;
  a specific revision: the changes after it, nothing synthetic;
- ``sendInitialEvents=true`` (watch-list): the synthetic ADDED events, then a BOOKMARK at the
  snapshot's revision annotated ``k8s.io/initial-events-end: "true"`` (the reflector waits for
  it: client-go v0.35.7 tools/cache/reflector.go handleListWatch, metav1.InitialEventsAnnotationKey);
- with a selector, a modification that makes an object match is sent as ADDED and one that
  makes it stop matching as DELETED (cacher.go: watchCacheEvent with PrevObject).

Stored dicts are never mutated after a write (each write stores a new dict), so readers share
them and each event's JSON is encoded once for every watcher.
"""

from __future__ import annotations

import contextlib
import copy
import json
import secrets
import threading
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from harness.cluster.apiserver_objects import BY_KIND, Resource, rfc3339
from harness.cluster.apiserver_selectors import Selector

INITIAL_EVENTS_END = "k8s.io/initial-events-end"
# Server-owned metadata: ignored when deciding whether a published object changed.
_SERVER_META = ("uid", "resourceVersion", "creationTimestamp", "generation", "managedFields", "selfLink")


class ApiError(Exception):
    """A request kube-apiserver would refuse; ``status()`` is the metav1.Status it answers."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self) -> dict[str, Any]:
        """The ``Status`` object (kind Status, apiVersion v1) for this error."""
        st: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                              "message": self.message, "reason": self.reason, "code": self.code}
        if self.details:
            st["details"] = self.details
        return st


def not_found(res: Resource, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{res.name}{"." + res.group if res.group else ""} "{name}" not found',
                    {"name": name, "group": res.group, "kind": res.name})


def expired(rv: int, oldest: int) -> ApiError:
    # apiserver pkg/storage/errors.go NewTooLargeResourceVersionError / watch_cache.go: the message
    # client-go logs and the reason it keys on
    return ApiError(410, "Expired", f"too old resource version: {rv} ({oldest})")


@dataclass
class Event:
    """One write: its revision, type (ADDED/MODIFIED/DELETED), resource, object and previous object."""

    rv: int
    type: str
    resource: Resource
    obj: dict[str, Any]
    prev: dict[str, Any] | None = None
    _json: bytes | None = field(default=None, repr=False)

    def encoded(self) -> bytes:
        """``{"type":..., "object":...}`` as sent on a watch stream (encoded once)."""
        if self._json is None:
            self._json = json.dumps({"type": self.type, "object": self.obj}, separators=(",", ":")).encode()
        return self._json


def _key(obj: dict[str, Any]) -> tuple[str, str]:
    m = obj.get("metadata") or {}
    return (m.get("namespace") or "", m.get("name") or "")


def _content(obj: dict[str, Any]) -> dict[str, Any]:
    m = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in _SERVER_META}
    return {**obj, "metadata": m}


class Store:
    """Objects of every served resource under one revision counter, with a bounded history."""

    def __init__(self, history: int = 4096):
        self._cond = threading.Condition()
        self._rv = 1  # kube-apiserver never serves revision 0 as a real version ("0" means "any")
        self._objects: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}
        self._hist: deque[Event] = deque(maxlen=history)
        self._closed = False
        self._epoch = 0  # bumped by compact(): watchers of an older epoch get 410 Expired

    # -- reads -----------------------------------------------------------------------------------
    @property
    def resource_version(self) -> int:
        """The revision of the last write."""
        with self._cond:
            return self._rv

    @property
    def oldest_watchable(self) -> int:
        """The oldest revision a watch may start from (older ones get 410 Expired)."""
        with self._cond:
            return self._oldest_locked()

    def _oldest_locked(self) -> int:
        return self._hist[0].rv - 1 if self._hist else self._rv

    def get(self, res: Resource, namespace: str | None, name: str) -> dict[str, Any]:
        """The object, or ApiError 404."""
        with self._cond:
            obj = self._objects.get(res.name, {}).get((namespace or "", name))
        if obj is None:
            raise not_found(res, name)
        return obj

    def list(self, res: Resource, namespace: str | None, selector: Selector | None = None
             ) -> tuple[list[dict[str, Any]], int]:
        """Matching objects (sorted by namespace/name, as etcd keys are) and the list's revision."""
        sel = selector or Selector()
        with self._cond:
            items = [o for k, o in sorted(self._objects.get(res.name, {}).items())
                     if (not namespace or k[0] == namespace) and sel.matches(o)]
            return items, self._rv

    # -- writes ----------------------------------------------------------------------------------
    def _write_locked(self, res: Resource, type_: str, obj: dict[str, Any], prev: dict[str, Any] | None) -> None:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        objs = self._objects.setdefault(res.name, {})
        if type_ == "DELETED":
            objs.pop(_key(obj), None)
        else:
            objs[_key(obj)] = obj
        self._hist.append(Event(self._rv, type_, res, obj, prev))
        self._cond.notify_all()

    def _check_namespace_locked(self, res: Resource, namespace: str) -> None:
        if res.namespaced and ("", namespace) not in self._objects.get("namespaces", {}):
            raise ApiError(404, "NotFound", f'namespaces "{namespace}" not found',
                           {"name": namespace, "kind": "namespaces"})

    def _prepare(self, res: Resource, obj: Any, namespace: str | None) -> dict[str, Any]:
        if not isinstance(obj, dict):
            raise ApiError(400, "BadRequest", "the body of the request was not a JSON object")
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise ApiError(400, "BadRequest", "metadata: must be an object")
        if obj.get("kind", res.kind) != res.kind:
            raise ApiError(400, "BadRequest", f"the object's kind {obj.get('kind')!r} is not {res.kind}")
        obj["kind"], obj["apiVersion"] = res.kind, res.api_version
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = f"{meta['generateName']}{secrets.token_hex(3)[:5]}"
        if not isinstance(meta.get("name"), str) or not meta["name"]:
            raise ApiError(422, "Invalid", f"{res.kind}.{res.group or 'core'} is invalid: metadata.name: "
                                           "Required value: name or generateName is required",
                           {"kind": res.kind, "causes": [{"reason": "FieldValueRequired", "field": "metadata.name"}]})
        if res.namespaced:
            ns = namespace or meta.get("namespace") or "default"
            if meta.get("namespace") not in (None, "", ns):
                raise ApiError(400, "BadRequest", "the namespace of the provided object does not match the "
                                                  "namespace sent on the request")
            meta["namespace"] = ns
        else:
            meta.pop("namespace", None)
        return obj

    def create(self, res: Resource, obj: Any, namespace: str | None = None) -> dict[str, Any]:
        """Create; ApiError 409 AlreadyExists if it exists, 404 if its namespace does not."""
        obj = self._prepare(res, obj, namespace)
        meta = obj["metadata"]
        with self._cond:
            self._check_namespace_locked(res, meta.get("namespace", ""))
            if _key(obj) in self._objects.get(res.name, {}):
                raise ApiError(409, "AlreadyExists", f'{res.name} "{meta["name"]}" already exists',
                               {"name": meta["name"], "group": res.group, "kind": res.name})
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = rfc3339()
            for k in ("resourceVersion", "deletionTimestamp"):
                meta.pop(k, None)
            self._write_locked(res, "ADDED", obj, None)
            return obj

    def update(self, res: Resource, obj: Any, namespace: str | None = None, *, name: str | None = None
               ) -> dict[str, Any]:
        """Replace an existing object (PUT); a stale ``metadata.resourceVersion`` is a 409 Conflict."""
        obj = self._prepare(res, obj, namespace)
        meta = obj["metadata"]
        if name is not None and meta["name"] != name:
            raise ApiError(400, "BadRequest", "the name of the object does not match the name on the URL")
        with self._cond:
            prev = self._objects.get(res.name, {}).get(_key(obj))
            if prev is None:
                raise not_found(res, meta["name"])
            want = meta.get("resourceVersion")
            if want and want != prev["metadata"]["resourceVersion"]:
                raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {res.name} "{meta["name"]}": '
                                                "the object has been modified; please apply your changes to the "
                                                "latest version and try again",
                               {"name": meta["name"], "group": res.group, "kind": res.name})
            meta["uid"] = prev["metadata"]["uid"]
            meta["creationTimestamp"] = prev["metadata"]["creationTimestamp"]
            self._write_locked(res, "MODIFIED", obj, prev)
            return obj

    def apply(self, res: Resource, obj: dict[str, Any]) -> dict[str, Any] | None:
        """The publisher's write: create or replace ``obj``; no event when its content is unchanged.
        Returns the stored object, or None when nothing changed."""
        obj = self._prepare(res, obj, None)
        with self._cond:
            prev = self._objects.get(res.name, {}).get(_key(obj))
            if prev is not None and _content(prev) == _content(obj):
                return None
            if prev is None:
                obj["metadata"]["uid"] = str(uuid.uuid4())
                obj["metadata"]["creationTimestamp"] = rfc3339()
            else:
                obj["metadata"]["uid"] = prev["metadata"]["uid"]
                obj["metadata"]["creationTimestamp"] = prev["metadata"]["creationTimestamp"]
            self._write_locked(res, "MODIFIED" if prev else "ADDED", obj, prev)
            return obj

    def delete(self, res: Resource, namespace: str | None, name: str) -> dict[str, Any]:
        """Delete and return the object's last state (its revision: the deletion's); 404 if absent.
        Deleting a namespace deletes what is in it (the namespace controller's job, done at once)."""
        with self._cond:
            prev = self._objects.get(res.name, {}).get((namespace or "", name))
            if prev is None:
                raise not_found(res, name)
            if res.name == "namespaces":
                for objs in list(self._objects.values()):
                    for key in [k for k in objs if k[0] == name]:
                        old = objs[key]
                        self._write_locked(BY_KIND[old["kind"]], "DELETED", {**old, "metadata": dict(old["metadata"])},
                                           old)
            obj = {**prev, "metadata": dict(prev["metadata"])}
            self._write_locked(res, "DELETED", obj, prev)
            return obj

    def keys(self, res: Resource) -> list[tuple[str, str]]:
        """(namespace, name) of every stored object of ``res``."""
        with self._cond:
            return list(self._objects.get(res.name, {}))

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Hold the store for several writes: watchers wake once and see them together (a burst
        larger than the history makes every live watch fall behind: 410, as after an etcd
        compaction)."""
        with self._cond:
            yield

    def compact(self) -> int:
        """Drop the whole history, as an etcd compaction past every watcher does: each open watch
        gets 410 Expired on its next read and its client must relist, and a new watch from any
        older revision gets 410 too. Returns the revision compacted at."""
        with self._cond:
            self._hist.clear()
            self._epoch += 1
            self._cond.notify_all()
            return self._rv

    def close(self) -> None:
        """Wake and end every watch (server shutdown)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    # -- watch -----------------------------------------------------------------------------------
    def watch(self, res: Resource, namespace: str | None, selector: Selector, resource_version: str | None,
              *, send_initial_events: bool | None = None) -> Watcher:
        """A watcher from ``resource_version`` (see the module docstring); ApiError 410 when it is
        older than the history, 504 when it is in the future."""
        with self._cond:
            initial = send_initial_events if send_initial_events is not None else resource_version in (None, "", "0")
            if resource_version in (None, "", "0"):
                start = self._rv
            else:
                try:
                    start = int(resource_version)
                except ValueError:
                    raise ApiError(400, "BadRequest", f"invalid resource version: {resource_version!r}") from None
                if start > self._rv:
                    # kube-apiserver waits up to 3 s for the revision, then answers this (cacher.go)
                    raise ApiError(504, "Timeout", f"Too large resource version: {start}, current: {self._rv}",
                                   {"causes": [{"reason": "ResourceVersionTooLarge",
                                                "message": "Too large resource version"}], "retryAfterSeconds": 1})
                if start < self._oldest_locked():
                    raise expired(start, self._oldest_locked())
            snapshot: list[Event] = []
            if initial:
                # The snapshot is the state at the current revision; changes after it follow.
                start = self._rv
                snapshot = [Event(int(o["metadata"]["resourceVersion"]), "ADDED", res, o)
                            for k, o in sorted(self._objects.get(res.name, {}).items())
                            if (not namespace or k[0] == namespace) and selector.matches(o)]
            w = Watcher(self, res, namespace, selector, start, snapshot, bool(send_initial_events))
            w.epoch = self._epoch
            return w

    def _events_after(self, rv: int, timeout: float, epoch: int | None = None) -> tuple[list[Event], int, bool]:
        """Events after revision ``rv`` (waiting up to ``timeout`` for one), the revision reached,
        and whether the store is closed. ApiError 410 when ``rv`` fell out of the history."""
        with self._cond:
            if self._rv <= rv and not self._closed and epoch in (None, self._epoch):
                self._cond.wait(timeout)
            if epoch is not None and epoch != self._epoch:
                raise expired(rv, self._rv)
            if self._rv <= rv:
                return [], rv, self._closed
            oldest = self._oldest_locked()
            if rv < oldest:
                raise expired(rv, oldest)
            first = self._hist[0].rv
            events = [self._hist[i] for i in range(rv + 1 - first, len(self._hist))]
            return events, self._rv, self._closed


class Watcher:
    """One watch request's cursor over the store: ``initial()`` once, then ``next(timeout)``."""

    def __init__(self, store: Store, res: Resource, namespace: str | None, selector: Selector, start: int,
                 snapshot: list[Event], watch_list: bool):
        self.store, self.res, self.namespace, self.selector = store, res, namespace, selector
        self.rv = start  # the revision this watcher has seen everything up to
        self._snapshot = snapshot
        self.watch_list = watch_list
        self.epoch: int | None = None  # the store's compaction epoch when the watch began

    def bookmark(self, *, initial_events_end: bool = False) -> bytes:
        """A BOOKMARK event at the watcher's revision (only kind, apiVersion, resourceVersion)."""
        meta: dict[str, Any] = {"resourceVersion": str(self.rv)}
        if initial_events_end:
            meta["annotations"] = {INITIAL_EVENTS_END: "true"}
        obj = {"kind": self.res.kind, "apiVersion": self.res.api_version, "metadata": meta}
        return json.dumps({"type": "BOOKMARK", "object": obj}, separators=(",", ":")).encode()

    def initial(self) -> list[bytes]:
        """The synthetic ADDED events (and, for watch-list, the initial-events-end bookmark)."""
        out = [e.encoded() for e in self._snapshot]
        self._snapshot = []
        if self.watch_list:
            out.append(self.bookmark(initial_events_end=True))
        return out

    def next(self, timeout: float) -> tuple[list[bytes], bool]:
        """Encoded events after the cursor, waiting up to ``timeout``; and whether the store closed.
        ApiError 410 when the watcher fell behind the history."""
        events, reached, closed = self.store._events_after(self.rv, timeout, self.epoch)
        out = []
        for e in events:
            if e.resource.name != self.res.name:
                continue
            key_ns = _key(e.obj)[0]
            if self.namespace and key_ns != self.namespace:
                continue
            now, before = self.selector.matches(e.obj), self.selector.matches(e.prev)
            if e.type == "DELETED":
                if before:
                    out.append(e.encoded())
            elif now and (before or e.prev is None):
                out.append(e.encoded())
            elif now:  # started matching: ADDED for this watcher
                out.append(json.dumps({"type": "ADDED", "object": e.obj}, separators=(",", ":")).encode())
            elif before:  # stopped matching: DELETED for this watcher
                out.append(json.dumps({"type": "DELETED", "object": e.obj}, separators=(",", ":")).encode())
        self.rv = reached
        return out, closed
