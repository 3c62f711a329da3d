"""pytest fixtures of the controller model (re-exported by ``harness.pytest_plugin``).

    def test_job_to_mysql(lab, controller_factory):
        ctl = controller_factory(lab, strategy="restore", delivery={"node-a": 0.2})
        added = ctl.add_pod(Pod("batch", "job-1", "node-b", labels={"app": "backup"}))
        ...

``controller_factory(lab, **config)`` starts one controller per real node of ``lab`` with a
``ControllerConfig`` whose enforcement fields (engine, profile, strategy, backend, external
command) default to the session's (``enforcement``: the ``--engine``, ``--profile``,
``--strategy``, ``--backend``, ``--external-cmd`` options), and stops every controller it made
when the test ends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from harness.controller.loop import Controller, ControllerConfig
from harness.engines.config import EnforcementConfig, configured
from harness.engines.options import from_pytest


@pytest.fixture(scope="session")
def enforcement(pytestconfig: pytest.Config) -> EnforcementConfig:
    """The session's enforcement configuration (the pytest options; defaults where absent)."""
    return from_pytest(pytestconfig)


@pytest.fixture
def controller_factory(enforcement: EnforcementConfig) -> Iterator[Callable[..., Controller]]:
    """A function ``(lab, **ControllerConfig fields) -> started Controller``; all stopped at teardown."""
    made: list[Controller] = []

    def make(lab: Any, **fields: Any) -> Controller:
        ctl = Controller(lab, configured(ControllerConfig, enforcement, **fields))
        made.append(ctl)
        return ctl.start()

    yield make
    for ctl in reversed(made):
        ctl.stop()
