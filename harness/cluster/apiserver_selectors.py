"""Label and field selectors of list/watch requests, parsed as kube-apiserver parses them — pure.

Label selectors follow k8s.io/apimachinery v0.35.0 pkg/labels/selector.go (``Parse``):
``key``, ``!key``, ``key=v``, ``key==v``, ``key!=v``, ``key in (a,b)``, ``key notin (a,b)``,
``key>N`` and ``key<N``, comma-separated, all ANDed. Field selectors follow
pkg/fields/selector.go (``ParseSelector``): ``f=v``, ``f==v``, ``f!=v``, comma-separated; which
fields a resource supports comes from its registry's field-label conversion (pods:
kubernetes v1.35.0 pkg/registry/core/pod/strategy.go ``ToSelectableFields``; every other kind
here: ``metadata.name`` and ``metadata.namespace``). A bad selector raises ``SelectorError``,
which the HTTP layer answers with a 400 BadRequest Status, as kube-apiserver does.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_KEY = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                  r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
_TOKEN = re.compile(r"\s*(==|!=|=|\(|\)|,|!|>|<|[^\s=!(),<>]+)")


class SelectorError(ValueError):
    """A selector kube-apiserver would refuse; the message is the one a client sees."""


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # exists, !, =, !=, in, notin, gt, lt
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        has = self.key in labels
        v = labels.get(self.key)
        if self.op == "exists":
            return has
        if self.op == "!":
            return not has
        if self.op in ("=", "in"):
            return has and v in self.values
        if self.op in ("!=", "notin"):
            return not has or v not in self.values
        # gt/lt: the label must hold an integer (labels/selector.go Requirement.Matches)
        try:
            n = int(v) if v is not None else None
        except ValueError:
            return False
        if n is None:
            return False
        bound = int(self.values[0])
        return n > bound if self.op == "gt" else n < bound


def _check_key(key: str) -> str:
    if not _KEY.match(key) or len(key.rpartition("/")[2]) > 63:
        raise SelectorError(f"unable to parse requirement: invalid label key \"{key}\": name part must consist "
                            "of alphanumeric characters, '-', '_' or '.'")
    return key


def _check_value(value: str) -> str:
    if not _VALUE.match(value):
        raise SelectorError(f"unable to parse requirement: invalid label value: \"{value}\"")
    return value


def _tokens(text: str) -> list[str]:
    out: list[str] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if m is None:  # pragma: no cover - the pattern matches any non-space character
            raise SelectorError(f"unable to parse requirement: unexpected {text[pos:]!r}")
        out.append(m.group(1))
        pos = m.end()
    return out


def parse_label_selector(text: str | None) -> tuple[Requirement, ...]:
    """The requirements of a ``labelSelector`` query value (empty: everything matches)."""
    toks = _tokens(text or "")
    reqs: list[Requirement] = []
    i = 0

    def take() -> str:
        nonlocal i
        if i >= len(toks):
            raise SelectorError(f"unable to parse requirement: found '', expected: identifier in {text!r}")
        i += 1
        return toks[i - 1]

    while i < len(toks):
        tok = take()
        if tok == "!":
            reqs.append(Requirement(_check_key(take()), "!"))
        else:
            key = _check_key(tok)
            nxt = toks[i] if i < len(toks) else ","
            if nxt == ",":
                reqs.append(Requirement(key, "exists"))
            elif nxt in ("=", "==", "!="):
                i += 1
                value = toks[i] if i < len(toks) and toks[i] != "," else ""
                if value:
                    i += 1
                reqs.append(Requirement(key, "!=" if nxt == "!=" else "=", (_check_value(value),)))
            elif nxt in (">", "<"):
                i += 1
                value = take()
                if not value.lstrip("-").isdigit():
                    raise SelectorError(f"unable to parse requirement: for 'Gt', 'Lt' operators, the value must be "
                                        f"an integer, got {value!r}")
                reqs.append(Requirement(key, "gt" if nxt == ">" else "lt", (value,)))
            elif nxt in ("in", "notin"):
                i += 1
                if take() != "(":
                    raise SelectorError(f"unable to parse requirement: found '{toks[i - 1]}', expected: '(' "
                                        f"in {text!r}")
                values: list[str] = []
                while True:
                    v = take()
                    if v == ")":
                        break
                    if v == ",":
                        continue
                    values.append(_check_value(v))
                if not values:
                    raise SelectorError(f"unable to parse requirement: for 'in', 'notin' operators, values set "
                                        f"can't be empty in {text!r}")
                reqs.append(Requirement(key, nxt, tuple(values)))
            else:
                raise SelectorError(f"unable to parse requirement: found '{nxt}', expected: "
                                    f"'=', '!=', '==', 'in', notin' in {text!r}")
        if i < len(toks):
            if toks[i] != ",":
                raise SelectorError(f"unable to parse requirement: found '{toks[i]}', expected: ',' or "
                                    f"'end of string' in {text!r}")
            i += 1
            if i >= len(toks):
                raise SelectorError(f"unable to parse requirement: found '', expected: identifier after ',' "
                                    f"in {text!r}")
    return tuple(reqs)


# Field labels a kind accepts in a fieldSelector, and how to read each from the object.
def _path(*keys: str) -> Callable[[dict[str, Any]], str]:
    def get(obj: dict[str, Any]) -> str:
        cur: Any = obj
        for k in keys:
            cur = cur.get(k) if isinstance(cur, dict) else None
        return "" if cur is None else str(cur)
    return get


_META_FIELDS = {"metadata.name": _path("metadata", "name"), "metadata.namespace": _path("metadata", "namespace")}
# kubernetes v1.35.0 pkg/registry/core/pod/strategy.go: ToSelectableFields (the subset we serve)
_POD_FIELDS = {**_META_FIELDS, "spec.nodeName": _path("spec", "nodeName"),
               "spec.restartPolicy": _path("spec", "restartPolicy"),
               "spec.schedulerName": _path("spec", "schedulerName"),
               "spec.serviceAccountName": _path("spec", "serviceAccountName"),
               "status.phase": _path("status", "phase"), "status.podIP": _path("status", "podIP")}
FIELDS_BY_KIND = {"Pod": _POD_FIELDS, "Namespace": {**_META_FIELDS, "status.phase": _path("status", "phase")}}


@dataclass(frozen=True)
class FieldRequirement:
    field: str
    negate: bool
    value: str
    get: Callable[[dict[str, Any]], str]

    def matches(self, obj: dict[str, Any]) -> bool:
        return (self.get(obj) == self.value) != self.negate


def parse_field_selector(text: str | None, kind: str) -> tuple[FieldRequirement, ...]:
    """The requirements of a ``fieldSelector`` query value for objects of ``kind``."""
    if not text:
        return ()
    fields = FIELDS_BY_KIND.get(kind, _META_FIELDS)
    out = []
    for part in text.split(","):
        part = part.strip()
        m = re.match(r"^([^=!]+)(==|!=|=)(.*)$", part)
        if m is None:
            raise SelectorError(f"invalid selector: '{text}'; can't understand '{part}'")
        name, op, value = m.group(1).strip(), m.group(2), m.group(3).strip()
        if name not in fields:
            raise SelectorError(f"field label not supported: {name}")
        out.append(FieldRequirement(name, op == "!=", value, fields[name]))
    return tuple(out)


@dataclass(frozen=True)
class Selector:
    """A request's label and field selectors together; the empty one matches everything."""

    labels: tuple[Requirement, ...] = ()
    fields: tuple[FieldRequirement, ...] = ()

    @classmethod
    def parse(cls, label_selector: str | None, field_selector: str | None, kind: str) -> Selector:
        return cls(parse_label_selector(label_selector), parse_field_selector(field_selector, kind))

    def matches(self, obj: dict[str, Any] | None) -> bool:
        if obj is None:
            return False
        labels = obj.get("metadata", {}).get("labels") or {}
        return all(r.matches(labels) for r in self.labels) and all(f.matches(obj) for f in self.fields)
