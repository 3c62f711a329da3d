"""The scenario suite's size and output options, read from pytest options or the environment
(``NPH_SCENARIO_SIZE``, ``NPH_SCENARIO_JSON``, ``NPH_SCENARIO_REPORT``), so the options work
whether or not ``cases/scenarios/conftest.py`` registered them (it does so only when pytest is
pointed at that directory)."""

from __future__ import annotations

import os
from typing import Any

SIZES = ("smoke", "full")


def option(config: Any, name: str, env: str) -> str | None:
    try:
        value = config.getoption(name)
    except ValueError:  # not registered
        value = None
    return value or os.environ.get(env) or None


def scenario_size(config: Any) -> str:
    """``smoke`` (default) or ``full``."""
    import pytest

    size = option(config, "--scenario-size", "NPH_SCENARIO_SIZE") or "smoke"
    if size not in SIZES:
        raise pytest.UsageError(f"NPH_SCENARIO_SIZE: {size!r} is not one of {', '.join(SIZES)}")
    return size
