"""One helper per entry point that fills an ``EnforcementConfig``: command-line flags
(``add_arguments`` / ``from_args``, used by ``conformance``, ``controller``, ``suite``,
``bench sweep``) and the pytest options (``add_pytest_options`` / ``from_pytest``), so every
entry point spells the flags and their defaults the same way (``harness.engines.config``)."""

from __future__ import annotations

import argparse
from typing import Any

from harness.engines.config import (
    BACKEND_NAMES,
    DATAPATH_NAMES,
    DEFAULT_BACKEND,
    DEFAULT_DATAPATH,
    DEFAULT_ENGINE,
    DEFAULT_PROFILE,
    DEFAULT_STRATEGY,
    EnforcementConfig,
    parse_command,
)
from harness.engines.registry import ENGINE_NAMES

FLAGS = ("engine", "profile", "strategy", "backend", "external_cmd", "fail_open", "binary_cmd", "metrics_port",
         "datapath")


def add_arguments(p: Any, *, strategy: bool = True, what: str = "") -> None:
    """``--engine``, ``--profile``, ``--strategy`` (unless ``strategy=False``: the command has
    its own), ``--backend``, ``--external-cmd`` on parser (or group) ``p``; ``what`` says what
    they apply to in the help."""
    of = f" of {what}" if what else ""
    p.add_argument("--engine", choices=ENGINE_NAMES, default=DEFAULT_ENGINE,
                   help=f"policy engine{of} (default {DEFAULT_ENGINE})")
    p.add_argument("--profile", default=DEFAULT_PROFILE, help=f"engine release profile{of} (default {DEFAULT_PROFILE})")
    if strategy:
        p.add_argument("--strategy", default=DEFAULT_STRATEGY,
                       help=f"apply strategy{of} (default {DEFAULT_STRATEGY}: the full sync)")
    p.add_argument("--backend", choices=BACKEND_NAMES, default=DEFAULT_BACKEND,
                   help=f"iptables backend{of} (default {DEFAULT_BACKEND})")
    p.add_argument("--datapath", choices=DATAPATH_NAMES, default=DEFAULT_DATAPATH,
                   help=f"kube-router datapath{of}: iptables (default) or nftables (v2.11's "
                        "--use-nftables-for-netpol; needs --profile v2.11.1)")
    p.add_argument("--external-cmd", metavar="CMD", default=None,
                   help="the program the external engine runs in every node's namespace, e.g. "
                        "\"python3 examples/external_controller.py\" (implies --engine external)")
    p.add_argument("--fail-open", action=argparse.BooleanOptionalAction, default=None,
                   help="kube-network-policies: accept new connections when no verdict loop listens "
                        "(queue bypass; the source's default, on); --no-fail-open drops them")
    p.add_argument("--binary-cmd", metavar="CMD", default=None,
                   help="the command the binary engine runs in every real node's namespace against the lab's "
                        "served API, with {master} {node} {node_ip} {pod_cidr} {metrics_port} {kubeconfig} placeholders, e.g. "
                        "\"python3 examples/api_controller.py --master {master} --node {node}\" (implies --engine "
                        "binary)")
    p.add_argument("--metrics-port", metavar="PORT", type=int, default=None,
                   help="the port the binary serves Prometheus metrics on (its {metrics_port}); scraped by the "
                        "binary engine")


def from_args(args: argparse.Namespace, **overrides: Any) -> EnforcementConfig:
    """The configuration the flags of ``add_arguments`` give (``overrides`` win)."""
    cmd = parse_command(getattr(args, "external_cmd", None), "--external-cmd", "external_cmd")
    binary = getattr(args, "binary_cmd", None)
    binary_cmd = None
    if binary is not None:
        from harness.engines.binary.template import parse_template

        binary_cmd = parse_template(binary)
    engine = getattr(args, "engine", DEFAULT_ENGINE)
    if cmd is not None and engine == DEFAULT_ENGINE:
        engine = "external"  # a command only means something to the external engine
    if binary_cmd is not None and engine == DEFAULT_ENGINE:
        engine = "binary"  # likewise for the binary engine's template
    fields: dict[str, Any] = {"engine": engine, "profile": getattr(args, "profile", DEFAULT_PROFILE),
                              "strategy": getattr(args, "strategy", DEFAULT_STRATEGY) or DEFAULT_STRATEGY,
                              "backend": getattr(args, "backend", DEFAULT_BACKEND), "external_cmd": cmd,
                              "binary_cmd": binary_cmd, "metrics_port": getattr(args, "metrics_port", None),
                              "datapath": getattr(args, "datapath", None) or DEFAULT_DATAPATH}
    if getattr(args, "fail_open", None) is not None:
        fields["fail_open"] = bool(args.fail_open)
    fields.update(overrides)
    return EnforcementConfig(**fields)


def add_pytest_options(group: Any) -> None:
    """The same flags as pytest options (``--engine``, ``--profile``, ``--strategy``,
    ``--backend``, ``--external-cmd``, ``--binary-cmd``, ``--metrics-port``)."""
    class _Group:  # pytest's option group spells add_argument "addoption"
        def add_argument(self, *names: str, **kw: Any) -> None:
            group.addoption(*names, **kw)

    add_arguments(_Group())


def from_pytest(config: Any) -> EnforcementConfig:
    """The session's configuration from the pytest options (the defaults where the plugin's
    options are not registered)."""
    def get(name: str) -> Any:
        try:
            return config.getoption(name)
        except ValueError:
            return None

    ns = argparse.Namespace(**{f: get("--" + f.replace("_", "-")) for f in FLAGS})
    for f, default in (("engine", DEFAULT_ENGINE), ("profile", DEFAULT_PROFILE), ("strategy", DEFAULT_STRATEGY),
                       ("backend", DEFAULT_BACKEND)):
        if getattr(ns, f) is None:
            setattr(ns, f, default)
    return from_args(ns)


def is_default(config: EnforcementConfig) -> bool:
    """Whether ``config`` is the defaults (a session without enforcement options)."""
    return config == EnforcementConfig()
