"""Engine names -> engines. The only place outside an engine's own package that names one.

    engine = get_engine(config.engine, source)   # "kube-router" | "external" | "kube-network-policies" | "binary"

Factories import their package on first use, so importing the registry pulls in no engine.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from harness.errors import ConfigError


def _kube_router() -> Any:
    from harness.engines.kube_router.engine import KubeRouterEngine

    return KubeRouterEngine()


def _external() -> Any:
    from harness.engines.external.engine import ExternalEngine

    return ExternalEngine()


def _kube_network_policies() -> Any:
    from harness.engines.kube_network_policies.engine import KubeNetworkPoliciesEngine

    return KubeNetworkPoliciesEngine()


def _binary() -> Any:
    from harness.engines.binary.engine import BinaryEngine

    return BinaryEngine()


DEFAULT_ENGINE = "kube-router"  # the seed's system under test (DESIGN.md)
FACTORIES: dict[str, Callable[[], Any]] = {DEFAULT_ENGINE: _kube_router, "external": _external,
                                           "kube-network-policies": _kube_network_policies, "binary": _binary}
ENGINE_NAMES = tuple(FACTORIES)


def register(name: str, factory: Callable[[], Any]) -> None:
    """Add an engine (a plugin's ``factory()`` returns an ``harness.engines.base.Engine``)."""
    FACTORIES[name] = factory


def get_engine(name: str, source: str | None = None, field: str = "engine") -> Any:
    """The engine called ``name``; ConfigError naming ``field`` for an unknown name."""
    try:
        factory = FACTORIES[name]
    except (KeyError, TypeError):
        raise ConfigError(source, field, f"unknown engine {name!r} (one of {', '.join(FACTORIES)})") from None
    return factory()


def resolve(config: Any, engine: Any = None, source: str | None = None) -> Any:
    """``engine`` if one was handed in, else the one ``config.engine`` names; validated."""
    eng = engine if engine is not None else get_engine(config.engine, source)
    eng.validate(config, source)
    return eng
