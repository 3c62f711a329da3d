"""One enforcement configuration: which engine enforces policy on every real node, and how.

Every entry point (the pytest options, the ``conformance``, ``controller``, ``suite`` and
``bench sweep`` commands, each scenario's configuration) carries this one dataclass, so the
defaults below are written once in the code base::

    from harness.engines.config import EnforcementConfig
    cfg = EnforcementConfig(backend="legacy")          # the default engine, profile, strategy
    cfg.describe()  # {"engine": DEFAULT_ENGINE, "profile": "v2.10", "strategy": "restore", ...}

Pure: validation of the engine-specific fields is the engine's (``Engine.validate``), reached
through ``harness.engines.registry``.
"""

from __future__ import annotations

import dataclasses
import shlex
from dataclasses import dataclass
from typing import Any

from harness.engines.registry import DEFAULT_ENGINE
from harness.errors import ConfigError

DEFAULT_PROFILE = "v2.10"  # the newest reproduced release tag of the default engine
DEFAULT_STRATEGY = "restore"  # the full sync the reproduced controller does
DEFAULT_BACKEND = "nft"
BACKEND_NAMES = ("nft", "legacy")  # iptables-nft / iptables-legacy (harness.kernel.backends)
REJECT_WITH_NAMES = (None, "icmp-port-unreachable", "tcp-reset")
# kube-router's datapath: iptables + ipset (every tag), or nftables (v2.11+ --use-nftables-for-netpol)
DATAPATH_NAMES = ("iptables", "nftables")
DEFAULT_DATAPATH = "iptables"


@dataclass(kw_only=True)
class EnforcementConfig:
    """What enforces policy on each real node: ``engine`` (a name in ``harness.engines.registry``),
    its release ``profile``, apply ``strategy`` and iptables ``backend`` (nft | legacy),
    ``default_deny`` (refuse local pods not yet programmed: the fail-closed mitigation),
    ``fail_open`` (kube-network-policies' --fail-open: the queue is bypassed when no verdict
    loop listens),
    ``reject_with`` (None = a plain REJECT, or ``tcp-reset``), ``external_cmd`` (argv of the
    program the ``external`` engine runs in every node's namespace), ``binary_cmd`` (the
    ``binary`` engine's command template, ``harness.engines.binary.template``) and
    ``metrics_port`` (where that binary serves Prometheus metrics, its ``{metrics_port}``),
    ``datapath`` (kube-router: ``iptables``, or ``nftables`` = v2.11's --use-nftables-for-netpol).

    Keyword-only, so the configurations built on it (``ControllerConfig``, ``RunOptions``,
    ``WindowConfig``, ``JobConfig``) keep their own positional fields."""

    engine: str = DEFAULT_ENGINE
    profile: str = DEFAULT_PROFILE
    strategy: str = DEFAULT_STRATEGY
    backend: str = DEFAULT_BACKEND
    default_deny: bool = False
    reject_with: str | None = None
    external_cmd: tuple[str, ...] | None = None
    fail_open: bool = True  # kube-network-policies --fail-open (its default): queue bypass
    binary_cmd: tuple[str, ...] | None = None
    metrics_port: int | None = None
    datapath: str = DEFAULT_DATAPATH

    def enforcement(self) -> EnforcementConfig:
        """Only the enforcement fields (a plain ``EnforcementConfig``), e.g. for a subclass."""
        return EnforcementConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(EnforcementConfig)})

    def with_enforcement(self, base: EnforcementConfig | None, **overrides: Any):
        """A copy whose enforcement fields come from ``base`` (None: unchanged), then
        ``overrides`` (a configuration's own choices win over the session's)."""
        fields = {} if base is None else {f.name: getattr(base, f.name) for f in dataclasses.fields(EnforcementConfig)}
        fields.update(overrides)
        return dataclasses.replace(self, **fields)

    def describe(self) -> dict[str, Any]:
        """The columns a report shows for this configuration (engine, profile, strategy, backend)."""
        out: dict[str, Any] = {"engine": self.engine, "profile": self.profile, "strategy": self.strategy,
                               "backend": self.backend}
        if self.engine == "external" and self.external_cmd:
            out["external_cmd"] = shlex.join(self.external_cmd)
        if self.engine == "kube-network-policies":
            out["fail_open"] = self.fail_open
        if self.engine == "binary" and self.binary_cmd:
            out["binary_cmd"] = shlex.join(self.binary_cmd)
        if self.datapath != DEFAULT_DATAPATH:
            out["datapath"] = self.datapath
        return out

    def label(self) -> str:
        """``engine profile/strategy/backend``: one line for a table or a log."""
        if self.datapath != DEFAULT_DATAPATH:
            return f"{self.engine} {self.profile}/{self.datapath}"
        return f"{self.engine} {self.profile}/{self.strategy}/{self.backend}"


def parse_command(text: str | list[str] | tuple[str, ...] | None, source: str | None = None,
                  field: str = "external_cmd") -> tuple[str, ...] | None:
    """An external command from a shell-like string (``"python3 examples/x.py"``) or a list;
    ConfigError naming ``field`` when it is empty or unparsable."""
    if text is None:
        return None
    if isinstance(text, str):
        try:
            argv = shlex.split(text)
        except ValueError as e:
            raise ConfigError(source, field, f"cannot split {text[:200]!r}: {e}") from None
    else:
        argv = list(text)
    if not argv or not all(isinstance(a, str) and a for a in argv):
        raise ConfigError(source, field, "must be a non-empty command")
    return tuple(argv)


def check_common(config: EnforcementConfig, source: str | None = None) -> None:
    """The checks every engine shares: the backend, reject_with and datapath names."""
    if config.datapath not in DATAPATH_NAMES:
        raise ConfigError(source, "datapath", f"unknown datapath {config.datapath!r} "
                          f"(choose {' or '.join(DATAPATH_NAMES)})")
    if config.backend not in BACKEND_NAMES:
        raise ConfigError(source, "backend", f"unknown iptables backend {config.backend!r} "
                          f"(choose {' or '.join(BACKEND_NAMES)})")
    if config.reject_with not in REJECT_WITH_NAMES:
        raise ConfigError(source, "reject_with", f"{config.reject_with!r} is not one of icmp-port-unreachable, "
                          "tcp-reset")


def configured(cls: type, base: EnforcementConfig | None, *args: Any, **fields: Any) -> Any:
    """``cls(*args, **fields)`` (a subclass of EnforcementConfig) whose enforcement fields not in
    ``fields`` come from ``base`` (the session's: ``--backend legacy`` reaches a configuration
    that names no backend, while one that pins ``backend="legacy"`` keeps it)."""
    if base is not None:
        for f in dataclasses.fields(EnforcementConfig):
            fields.setdefault(f.name, getattr(base, f.name))
    return cls(*args, **fields)
