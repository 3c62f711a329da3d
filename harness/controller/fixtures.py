"""pytest fixtures of the controller model (re-exported by ``harness.pytest_plugin``).

    def test_job_to_mysql(lab, controller_factory):
        ctl = controller_factory(lab, strategy="restore", delivery={"node-a": 0.2})
        added = ctl.add_pod(Pod("batch", "job-1", "node-b", labels={"app": "backup"}))
        ...

``controller_factory(lab, **config)`` starts one controller per real node of ``lab`` with a
``ControllerConfig`` whose ``backend`` and ``profile`` default to the ``--backend`` and
``--profile`` options, and stops every controller it made when the test ends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from harness.controller.loop import Controller, ControllerConfig


@pytest.fixture
def controller_factory(request: pytest.FixtureRequest) -> Iterator[Callable[..., Controller]]:
    """A function ``(lab, **ControllerConfig fields) -> started Controller``; all stopped at teardown."""
    made: list[Controller] = []

    def option(name: str, default: str) -> str:
        try:
            return request.config.getoption(name) or default
        except ValueError:  # the plugin's options are not registered
            return default

    def make(lab: Any, **fields: Any) -> Controller:
        fields.setdefault("backend", option("--backend", "nft"))
        fields.setdefault("profile", option("--profile", "v2.10"))
        ctl = Controller(lab, ControllerConfig(**fields))
        made.append(ctl)
        return ctl.start()

    yield make
    for ctl in reversed(made):
        ctl.stop()
