"""pytest plugin (registered through the ``pytest11`` entry point): options, markers, fixtures.

Fixtures are the API a scenario uses. Each area keeps its fixtures in its own module; this
plugin only re-exports them so pytest finds them.
"""

from __future__ import annotations

import pytest

from harness import signals
from harness.controller.fixtures import controller_factory, enforcement
from harness.engines.options import add_pytest_options
from harness.lab.docker_fixtures import docker_engine, docker_pods
from harness.lab.fixtures import lab, lab_factory, netpol_kernel_guard
from harness.probe.fixtures import long_lived_flows, prober

__all__ = ["controller_factory", "docker_engine", "enforcement", "docker_pods", "lab", "lab_factory", "long_lived_flows",
           "netpol_kernel_guard", "prober"]

MARKERS = {
    "kernel": "needs root, CAP_NET_ADMIN and the ipset/iptables binaries (skipped with the reason otherwise)",
    "scale": "slow scale sweep; deselected by default, run with -m scale",
    "slow": "takes more than a few seconds",
    "topology": "topology(name_or_path_or_Cluster): the topology the lab fixture builds for this test",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("netpol-harness")
    group.addoption("--topology", default=None,
                    help="topology for the lab fixture: a shipped name (default, k8s-e2e, scale-100) or a path")
    group.addoption("--keep-lab", action="store_true", help="leave the lab in the kernel after the run")
    add_pytest_options(group)  # --engine, --profile, --strategy, --backend, --external-cmd


def pytest_configure(config: pytest.Config) -> None:
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")
    # SIGTERM/SIGHUP become KeyboardInterrupt like Ctrl-C: pytest then ends the session in
    # order and every fixture finalizer (lab teardown) runs.
    signals.install()


def pytest_sessionfinish(session: pytest.Session) -> None:
    if signals.received():  # 130/143/129 like the CLI, instead of pytest's generic 2
        session.exitstatus = signals.exit_code()
        signals.teardown_done()
