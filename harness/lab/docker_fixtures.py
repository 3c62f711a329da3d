"""pytest fixtures of the docker backend (to be re-exported by ``harness.pytest_plugin``).

- ``docker_engine`` (session): one engine for the whole test session (the user's if one
  answers, else a private ``dockerd``), stopped by a finalizer. Skips with the reason (the
  engine's own error line) when Docker cannot run here.
- ``docker_pods``: a ``DockerPods`` manager on the test's ``lab``; every container pod is
  removed after the test.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest


def docker_skip_reason() -> str | None:
    """Why the docker backend cannot be tried here without starting anything, or None."""
    from harness.lab.docker_engine import USER_SOCKET, find_dockerd

    try:
        import docker  # noqa: F401
    except ImportError:
        return "docker backend unavailable: the Python docker SDK is not installed (pip install docker)"
    if os.environ.get("DOCKER_HOST") or os.path.exists(USER_SOCKET):
        return None
    if find_dockerd() is None:
        return "docker backend unavailable: no engine answers and dockerd is not installed (apt-get install docker.io)"
    if os.geteuid() != 0:
        return "docker backend unavailable: starting a private dockerd needs root"
    return None


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[Any]:
    """One docker engine per test session (see module docstring)."""
    reason = docker_skip_reason()
    if reason:
        pytest.skip(reason)
    from harness.lab.docker_engine import engine_or_skip_reason

    engine, reason = engine_or_skip_reason()
    if engine is None:
        pytest.skip(f"docker backend unavailable: {reason}")
    try:
        yield engine
    finally:
        engine.close()


@pytest.fixture
def docker_pods(lab: Any, docker_engine: Any) -> Iterator[Any]:
    """Container pods on the test's ``lab``, removed after the test."""
    from harness.lab.docker_pods import DockerPods

    pods = DockerPods(lab, docker_engine)
    try:
        yield pods
    finally:
        pods.close()
