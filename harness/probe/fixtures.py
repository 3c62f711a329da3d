"""pytest fixtures of the probe engine (re-exported by harness.pytest_plugin).

``prober``: a started ``PacketProber`` (1 s probe timeout), stopped after the test.
``long_lived_flows``: a started ``LongLivedFlows`` runner, stopped after the test.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from harness.probe.packet import PacketProber
from harness.probe.sockets import LongLivedFlows


@pytest.fixture
def prober() -> Iterator[PacketProber]:
    """A running packet prober: ``prober.add_flow(FlowSpec(...))``; flows hold their time series."""
    p = PacketProber(timeout_s=1.0)
    p.start()
    try:
        yield p
    finally:
        p.stop()


@pytest.fixture
def long_lived_flows() -> Iterator[LongLivedFlows]:
    """A running runner of established TCP flows: ``long_lived_flows.add(LongLivedFlow(...))``."""
    runner = LongLivedFlows()
    runner.start()
    try:
        yield runner
    finally:
        runner.stop()
