"""pytest plugin (registered through the ``pytest11`` entry point): options, markers, fixtures.

Fixtures are the API a scenario uses. Each area keeps its fixtures in its own module; this
plugin only re-exports them so pytest finds them.
"""

from __future__ import annotations

import pytest

MARKERS = {
    "kernel": "needs root, CAP_NET_ADMIN and the ipset/iptables binaries (skipped with the reason otherwise)",
    "scale": "slow scale sweep; deselected by default, run with -m scale",
    "slow": "takes more than a few seconds",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("netpol-harness")
    group.addoption("--topology", default=None,
                    help="topology for the lab fixture: a shipped name (default, k8s-e2e) or a path")
    group.addoption("--keep-lab", action="store_true", help="leave the lab in the kernel after the run")
    group.addoption("--backend", default="nft", choices=("nft", "legacy"), help="iptables backend")
    group.addoption("--profile", default="v2.10", help="kube-router version profile")


def pytest_configure(config: pytest.Config) -> None:
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")
