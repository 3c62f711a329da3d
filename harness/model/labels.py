"""Kubernetes label syntax (keys ``[prefix/]name``, values up to 63 chars), validated with
one-line errors."""

from __future__ import annotations

import re

from harness.errors import ConfigError

_NAME = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)$")
_VALUE = re.compile(r"^(([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?)$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def label_key_problem(key: object) -> str | None:
    """Why ``key`` is not a valid label key, or None."""
    if not isinstance(key, str) or not key:
        return f"label key {key!r} must be a non-empty string"
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        return f"label key {key!r} has an invalid prefix (must be a DNS subdomain)"
    if not _NAME.match(name) or len(name) > 63:
        return f"label key {key!r} is invalid (name part: up to 63 of [A-Za-z0-9-_.], alphanumeric at both ends)"
    return None


def label_value_problem(value: object) -> str | None:
    """Why ``value`` is not a valid label value, or None."""
    if not isinstance(value, str):
        return f"label value {value!r} must be a string (quote numbers and booleans in YAML)"
    if len(value) > 63 or not _VALUE.match(value):
        return f"label value {value!r} is invalid (up to 63 of [A-Za-z0-9-_.], alphanumeric at both ends)"
    return None


def validate_labels(labels: object, source: str | None, field: str) -> dict[str, str]:
    """Return ``labels`` as a dict of valid Kubernetes labels, or raise ConfigError naming the field."""
    if labels is None:
        return {}
    if not isinstance(labels, dict):
        raise ConfigError(source, field, f"must be a mapping of label key to value, got {type(labels).__name__}")
    for k, v in labels.items():
        problem = label_key_problem(k) or label_value_problem(v)
        if problem:
            raise ConfigError(source, f"{field}.{k}", problem)
    return dict(labels)


def validate_name(name: object, source: str | None, field: str, *, dns_label: bool = False) -> str:
    """A Kubernetes object name (DNS subdomain; DNS label for namespaces), or ConfigError."""
    if not isinstance(name, str) or not name:
        raise ConfigError(source, field, f"must be a non-empty string, got {name!r}")
    pattern, what = (_DNS_LABEL, "DNS label") if dns_label else (_DNS_SUBDOMAIN, "DNS subdomain")
    if len(name) > (63 if dns_label else 253) or not pattern.match(name):
        raise ConfigError(source, field, f"{name!r} is not a valid {what} (lowercase alphanumerics and '-')")
    return name
