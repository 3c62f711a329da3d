"""One enforcement configuration: defaults written once, every configuration class built on it,
the flags of every entry point filling it the same way, the registry naming the engines. Pure."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from harness.conformance.runner import RunOptions
from harness.controller.loop import ControllerConfig
from harness.engines import registry
from harness.engines.base import Engine, NodeEngine
from harness.engines.config import EnforcementConfig, configured, parse_command
from harness.engines.options import add_arguments, from_args
from harness.errors import ConfigError
from harness.scenarios.job import JobConfig
from harness.scenarios.windows import WindowConfig

ENFORCEMENT = [f.name for f in dataclasses.fields(EnforcementConfig)]


@pytest.mark.parametrize("cls", [ControllerConfig, RunOptions, WindowConfig, JobConfig])
def test_every_configuration_builds_on_one_enforcement_config(cls):
    assert issubclass(cls, EnforcementConfig)
    args = ("x",) if cls in (WindowConfig, JobConfig) else ()
    made = cls(*args)
    assert made.enforcement() == EnforcementConfig()  # the same defaults everywhere
    for name in ENFORCEMENT:  # declared once: no subclass redeclares a field
        assert name not in cls.__dict__.get("__annotations__", {}), (cls, name)


def test_configured_takes_the_sessions_fields_a_configuration_does_not_pin():
    session = EnforcementConfig(backend="legacy", strategy="netlink")
    free = configured(WindowConfig, session, "v2.10", delivery=0.0)
    pinned = configured(WindowConfig, session, "v1.2-nft", profile="v1.2", backend="nft")
    assert (free.backend, free.strategy, free.profile, free.delivery) == ("legacy", "netlink", "v2.10", 0.0)
    assert (pinned.backend, pinned.strategy, pinned.profile) == ("nft", "netlink", "v1.2")
    assert configured(JobConfig, None, "none").enforcement() == EnforcementConfig()


def test_flags_fill_the_config_the_same_way_for_every_command():
    p = argparse.ArgumentParser()
    add_arguments(p)
    assert from_args(p.parse_args([])) == EnforcementConfig()
    got = from_args(p.parse_args(["--backend", "legacy", "--profile", "v1.3", "--strategy", "per-rule"]))
    assert (got.backend, got.profile, got.strategy, got.engine) == ("legacy", "v1.3", "per-rule", "kube-router")
    ext = from_args(p.parse_args(["--external-cmd", "python3 examples/external_controller.py"]))
    assert ext.engine == "external" and ext.external_cmd == ("python3", "examples/external_controller.py")
    with pytest.raises(SystemExit):
        p.parse_args(["--backend", "iptables"])  # argparse: one line and exit 2


def test_command_parsing_errors_name_the_field():
    with pytest.raises(ConfigError, match="external_cmd: cannot split"):
        parse_command('python3 "unclosed', "--external-cmd")
    with pytest.raises(ConfigError, match="external_cmd: must be a non-empty command"):
        parse_command("   ", "--external-cmd")


def test_registry_names_the_engines_and_rejects_others():
    assert registry.ENGINE_NAMES == ("kube-router", "external", "kube-network-policies", "binary")
    for name in registry.ENGINE_NAMES:
        assert isinstance(registry.get_engine(name), Engine)
    with pytest.raises(ConfigError, match="engine: unknown engine 'calico'"):
        registry.get_engine("calico")
    with pytest.raises(ConfigError, match="strategy: unknown strategy 'fast'"):
        registry.resolve(EnforcementConfig(strategy="fast"))
    with pytest.raises(ConfigError, match="backend: unknown iptables backend 'iptables'"):
        registry.resolve(EnforcementConfig(backend="iptables"))


def test_kube_router_node_engine_is_a_node_engine_and_describes_itself():
    from harness.controller.timeline import Timeline

    ne = registry.get_engine("kube-router").node("node-a", "nph-none", EnforcementConfig(), Timeline())
    assert isinstance(ne, NodeEngine) and not ne.reports_syncs and ne.strategy == "restore"
    assert EnforcementConfig(backend="legacy").describe() == {
        "engine": "kube-router", "profile": "v2.10", "strategy": "restore", "backend": "legacy"}


def test_the_backend_names_are_the_kernel_backends():
    """The config vocabulary (pure, no kernel import) names exactly the backends harness.kernel
    has binaries for, in the same order: the two spellings cannot drift apart."""
    from harness.bench.baseline import BENCH_BACKENDS
    from harness.engines.config import BACKEND_NAMES
    from harness.kernel.backends import BACKENDS

    assert BACKEND_NAMES == tuple(BACKENDS) == ("nft", "legacy")
    assert BENCH_BACKENDS == ("legacy", "nft")
