"""Cell formatting shared by the report's tables and the scenarios' sections. Pure."""

from __future__ import annotations

from typing import Any


def num(v: Any, digits: int = 1) -> str:
    """``v`` with ``digits`` decimals; an empty cell for None."""
    return "" if v is None else f"{v:.{digits}f}"


def cluster_label(params: dict[str, Any]) -> str:
    """``default`` or ``scale-100 + 100 policies``: the cluster a configuration ran on."""
    topo = params.get("topology") or "default"
    n = params.get("synthetic_policies") or 0
    return f"{topo} + {n} policies" if n else topo
