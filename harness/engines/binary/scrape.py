"""A controller's Prometheus metrics, scraped from inside its node's namespace.

kube-router serves its metrics on ``--metrics-port`` (``/metrics``; kube-router v2.10.0
pkg/options/options.go: MetricsPort, MetricsPath); so does ``examples/api_controller.py``.
The text is parsed with prometheus_client's own parser, so every exposition detail (labels,
escaping, histograms' ``_bucket``/``_sum``/``_count``) is read as Prometheus reads it.
"""

from __future__ import annotations

import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from harness.kernel import netns

MAX_BYTES = 16 * 1024 * 1024  # a scrape larger than this is cut (and then fails to parse: reported)


def parse(text: str) -> dict[str, list[dict[str, Any]]]:
    """Sample name -> ``[{"labels": {...}, "value": float}, ...]`` of an exposition text.
    ValueError on malformed text (prometheus_client's message)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append({"labels": dict(s.labels), "value": float(s.value)})
    return out


def fetch(netns_name: str, host: str, port: int, path: str = "/metrics", timeout: float = 5.0) -> str:
    """GET ``http://host:port/path`` from inside namespace ``netns_name`` (the socket is made
    there); the body as text. OSError when nothing answers."""
    # no proxy: the harness's own http_proxy must not send a lab address out of the lab
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def get() -> str:
        with opener.open(f"http://{host}:{port}{path}", timeout=timeout) as r:
            return r.read(MAX_BYTES).decode("utf-8", errors="replace")

    return netns.call_in(netns_name, get)


def scrape(netns_name: str, host: str, port: int, path: str = "/metrics") -> dict[str, list[dict[str, Any]]]:
    """``parse(fetch(...))``."""
    return parse(fetch(netns_name, host, port, path))


def value(samples: dict[str, list[dict[str, Any]]], name: str, **labels: str) -> float | None:
    """The sum of sample ``name``'s values whose labels include ``labels`` (None if absent)."""
    got = [s["value"] for s in samples.get(name, []) if all(s["labels"].get(k) == v for k, v in labels.items())]
    return sum(got) if got else None
