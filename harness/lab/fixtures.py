"""pytest fixtures of the lab (re-exported by ``harness.pytest_plugin``).

- ``lab``: a ``Lab`` built for one test and torn down after it (kept with ``--keep-lab``).
  The topology comes from, first match wins: indirect parametrization
  (``@pytest.mark.parametrize("lab", [cluster_or_name], indirect=True)``), the test's
  ``@pytest.mark.topology("k8s-e2e")`` (a shipped name, a path or a ``Cluster``), the
  ``--topology`` option, else ``default``.
- ``lab_factory``: ``lab_factory(cluster_or_name, **Lab kwargs) -> Lab`` (already up), for
  tests that build labs from ``Cluster`` objects; all torn down at the end of the test.
- ``netpol_kernel_guard`` (autouse): a test marked ``kernel`` is skipped with the reason from
  ``environment_problems()`` (not root, no CAP_NET_ADMIN, missing binary or kernel feature).
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from harness.lab.check import environment_problems
from harness.model.cluster import Cluster

log = logging.getLogger(__name__)
DEFAULT_TOPOLOGY = "default"


def kernel_skip_reason() -> str | None:
    """Why kernel tests cannot run here (one line), or None when they can. Cached per process."""
    problems = environment_problems()
    if not problems:
        return None
    return "kernel part unavailable: " + "; ".join(str(p) for p in problems)


def skip_unless_kernel() -> None:
    """``pytest.skip`` with the reason when the kernel part cannot run (for use inside tests)."""
    reason = kernel_skip_reason()
    if reason:
        pytest.skip(reason)


def _cluster_from(spec: Any) -> tuple[Cluster, str | None]:
    """A private copy of a Cluster (tests may change it), or a topology loaded by name/path."""
    if isinstance(spec, Cluster):
        return copy.deepcopy(spec), spec.source or spec.name
    from harness.model.topology import load_topology

    return load_topology(str(spec)), str(spec)


def _requested_topology(request: pytest.FixtureRequest) -> Any:
    param = getattr(request, "param", None)
    if param is not None:
        return param
    marker = request.node.get_closest_marker("topology")
    if marker is not None and marker.args:
        return marker.args[0]
    opt = request.config.getoption("--topology", default=None)
    return opt or DEFAULT_TOPOLOGY


def _finish(lab: Any, config: pytest.Config) -> None:
    if config.getoption("--keep-lab", default=False):
        rid = lab.detach()
        msg = f"lab {rid} kept (--keep-lab): `netpol-harness exec --run {rid} POD -- CMD`, `netpol-harness down {rid}`"
        log.warning(msg)
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        capture = config.pluginmanager.get_plugin("capturemanager")
        if reporter is not None:
            with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
                reporter.write_line(msg)
    else:
        lab.down()


@pytest.fixture(autouse=True)
def netpol_kernel_guard(request: pytest.FixtureRequest) -> None:
    """Skip tests marked ``kernel`` with the reason when the machine cannot run them."""
    if request.node.get_closest_marker("kernel") is not None:
        skip_unless_kernel()


@pytest.fixture
def lab(request: pytest.FixtureRequest) -> Iterator[Any]:
    """A lab built from the requested topology (see module docstring), down after the test."""
    skip_unless_kernel()
    from harness.lab.lab import Lab

    cluster, topology = _cluster_from(_requested_topology(request))
    the_lab = Lab(cluster, topology=topology)
    the_lab.up()
    try:
        yield the_lab
    finally:
        _finish(the_lab, request.config)


@pytest.fixture
def lab_factory(request: pytest.FixtureRequest) -> Iterator[Callable[..., Any]]:
    """``make(cluster_or_name, **kwargs) -> Lab`` (up); every lab made is removed after the test."""
    skip_unless_kernel()
    from harness.lab.lab import Lab

    labs: list[Any] = []

    def make(spec: Any, **kwargs: Any) -> Any:
        cluster, topology = _cluster_from(spec)
        kwargs.setdefault("topology", topology)
        new = Lab(cluster, **kwargs)
        labs.append(new)
        new.up()
        return new

    try:
        yield make
    finally:
        errors = []
        for one in reversed(labs):
            try:
                _finish(one, request.config)
            except Exception as e:  # tear down the others anyway
                errors.append(e)
        if errors:
            raise errors[0]
