"""Strict reading of YAML mappings: every key known, every value of the right type, and every
problem reported as one line naming the file and the field path.

    f = Fields(doc, "topologies/x.yaml", "nodes[2]")
    name = f.req("name", str)
    kind = f.opt("kind", str, "real", choices=("real", "virtual"))
    f.done()  # unknown keys -> ConfigError "topologies/x.yaml: nodes[2].colour: unknown field ..."
"""

from __future__ import annotations

import difflib
import os
import stat
from typing import Any

import yaml

from harness.errors import ConfigError
from harness.model.limits import (
    MAX_FILE_BYTES,
    MAX_YAML_ALIASES,
    MAX_YAML_DEPTH,
    MAX_YAML_NODES,
    cut,
    shown,
)

_TYPE_NAMES = {str: "a string", int: "an integer", bool: "a boolean", list: "a list", dict: "a mapping",
               float: "a number"}


def type_name(t: type | tuple[type, ...]) -> str:
    if isinstance(t, tuple):
        return " or ".join(type_name(x) for x in t)
    return _TYPE_NAMES.get(t, t.__name__)


def _is(value: Any, t: type | tuple[type, ...]) -> bool:
    types = t if isinstance(t, tuple) else (t,)
    # YAML booleans are ints in Python: never accept a bool where an int is meant.
    if isinstance(value, bool) and bool not in types:
        return False
    if isinstance(value, int) and float in types:
        return True
    return isinstance(value, types)


def join(path: str, key: str | int) -> str:
    """``nodes[2]`` + ``name`` -> ``nodes[2].name``; + 3 -> ``nodes[2][3]``."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


class Fields:
    """A mapping read strictly; call ``done()`` last to reject unknown keys."""

    def __init__(self, data: Any, source: str | None, path: str, *, what: str = "a mapping"):
        if not isinstance(data, dict):
            raise ConfigError(source, path or None, f"must be {what}, got {_describe(data)}")
        self.data = data
        self.source = source
        self.path = path
        self._seen: set[str] = set()

    def field(self, key: str) -> str:
        return join(self.path, key)

    def error(self, key: str | None, message: str) -> ConfigError:
        return ConfigError(self.source, self.field(key) if key else (self.path or None), message)

    def has(self, key: str) -> bool:
        return key in self.data

    def req(self, key: str, t: type | tuple[type, ...], *, choices: tuple | None = None) -> Any:
        """A required field of type ``t`` (and one of ``choices``)."""
        self._seen.add(key)
        if key not in self.data or self.data[key] is None:
            raise self.error(key, "required field is missing")
        return self._check(key, self.data[key], t, choices)

    def opt(self, key: str, t: type | tuple[type, ...], default: Any = None, *,
            choices: tuple | None = None) -> Any:
        """An optional field; ``default`` when absent or null."""
        self._seen.add(key)
        if key not in self.data or self.data[key] is None:
            return default
        return self._check(key, self.data[key], t, choices)

    def ignore(self, *keys: str) -> None:
        """Accept these keys without reading them (e.g. Kubernetes fields that do not matter here)."""
        self._seen.update(keys)

    def _check(self, key: str, value: Any, t: type | tuple[type, ...], choices: tuple | None) -> Any:
        if not _is(value, t):
            raise self.error(key, f"must be {type_name(t)}, got {_describe(value)}")
        if choices is not None and value not in choices:
            raise self.error(key, f"{shown(value)} is not one of {', '.join(map(str, choices))}")
        return value

    def done(self) -> None:
        """Raise for the first key that was never read (with a did-you-mean hint)."""
        for key in self.data:
            if key not in self._seen:
                hint = difflib.get_close_matches(str(key), sorted(self._seen), n=1)
                more = f" (did you mean {hint[0]!r}?)" if hint else f" (known: {', '.join(sorted(self._seen))})"
                raise self.error(str(key), f"unknown field{more}")


def items(value: Any, source: str | None, path: str) -> list[tuple[str, Any]]:
    """``[(field_path, element), ...]`` for a YAML list, or ConfigError if it is not a list."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(source, path, f"must be a list, got {_describe(value)}")
    return [(join(path, i), v) for i, v in enumerate(value)]


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({value})"
    if isinstance(value, (dict, list)):
        return type_name(type(value))
    return f"{type_name(type(value))} ({shown(value)})"


def load_yaml_documents(path: str) -> list[Any]:
    """All YAML documents of a file (empty ones dropped), with one-line errors for a missing,
    special (a FIFO would block) or too large file and for malformed YAML (naming line and
    column); the limits of ``harness.model.limits`` apply."""
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(path, None, "not a regular file")
        if st.st_size > MAX_FILE_BYTES:
            raise ConfigError(path, None, f"file too large ({st.st_size} bytes, at most {MAX_FILE_BYTES})")
        with open(path, encoding="utf-8") as fh:
            text = fh.read(MAX_FILE_BYTES + 1)  # bounded even if the file grows meanwhile
    except FileNotFoundError:
        raise ConfigError(path, None, "file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(path, None, f"cannot read: {cut(str(e))}") from None
    return parse_yaml_documents(text, path)


class _LimitExceeded(yaml.YAMLError):
    def __init__(self, problem: str, mark: Any):
        super().__init__(problem)
        self.problem = problem
        self.problem_mark = mark


class BoundedSafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` with bounds checked while composing, before any object is built:
    nesting depth (PyYAML's composer recurses: deep nesting would be a RecursionError),
    alias uses, recursive aliases and the size of a document with its aliases expanded (a
    billion-laughs file is a few lines)."""

    def __init__(self, stream: Any):
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0

    def compose_document(self) -> Any:
        self._aliases = 0
        node = super().compose_document()
        _check_expanded(node)
        return node

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_YAML_ALIASES:
                raise _LimitExceeded(f"more than {MAX_YAML_ALIASES} aliases in one document",
                                     self.peek_event().start_mark)
            return super().compose_node(parent, index)
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise _LimitExceeded(f"nested deeper than {MAX_YAML_DEPTH} levels", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _children(node: Any) -> list[Any]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [x for pair in node.value for x in pair]
    return []


def _check_expanded(root: Any) -> None:
    """Refuse a node graph with a cycle (``&a [*a]``) or more than MAX_YAML_NODES nodes once
    aliases are expanded. Iterative, memoized by node: linear in the composed graph."""
    if root is None:
        return
    size: dict[int, int] = {}
    started: set[int] = set()
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, leaving = stack.pop()
        nid = id(node)
        if leaving:
            size[nid] = min(MAX_YAML_NODES + 1, 1 + sum(size[id(c)] for c in _children(node)))
            continue
        if nid in size:
            continue
        started.add(nid)
        stack.append((node, True))
        for child in _children(node):
            cid = id(child)
            if cid in started and cid not in size:  # an ancestor still being summed
                raise _LimitExceeded("recursive alias (a node contains itself)", child.start_mark)
            if cid not in size:
                stack.append((child, False))
    if size[id(root)] > MAX_YAML_NODES:
        raise _LimitExceeded(f"more than {MAX_YAML_NODES} nodes with aliases expanded (an alias bomb?)",
                             root.start_mark)


def parse_yaml_documents(text: str, source: str | None) -> list[Any]:
    """Like ``load_yaml_documents`` for text already in memory."""
    if len(text) > MAX_FILE_BYTES:
        raise ConfigError(source, None, f"more than {MAX_FILE_BYTES} characters of YAML")
    try:
        return [d for d in yaml.load_all(text, Loader=BoundedSafeLoader) if d is not None]
    except _LimitExceeded as e:
        mark = e.problem_mark
        where = f"line {mark.line + 1} column {mark.column + 1}" if mark else None
        raise ConfigError(source, where, f"refused YAML: {e.problem}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1} column {mark.column + 1}" if mark else None
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(source, where, f"malformed YAML: {cut(problem)}") from None
    except (ValueError, OverflowError, RecursionError) as e:  # e.g. an integer of 5,000 digits
        raise ConfigError(source, None, f"cannot read YAML: {type(e).__name__}: {cut(str(e))}") from None
