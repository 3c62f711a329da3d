"""The lab: the cluster model realized in the kernel (namespaces, veths, bridges, routes).

``from harness.lab import Lab``. Imported lazily so that ``python -m harness.lab.echo_server``
stays light.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Lab"]


def __getattr__(name: str) -> Any:
    if name == "Lab":
        from harness.lab.lab import Lab

        return Lab
    raise AttributeError(name)
