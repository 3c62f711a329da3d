"""The main job's progress, fed from pytest: ``ProgressPlugin`` is the pytest plugin object
``harness.suite`` hands to ``pytest.main``; the ``scenario_progress`` fixture of
``cases/scenarios/conftest.py`` finds it (``plugin_of``) and gives the test a
``RunCounter`` for "run i of N"; the recorder tells it each configuration's recorded entry.
Pytest's own per-test dots are blanked while it shows its own lines (no print in the
library: the display writes to a copy of the terminal's stdout that pytest's capture does
not redirect)."""

from __future__ import annotations

import os
import sys
from typing import Any, TextIO

import pytest

from harness.report.progress import LiveDisplay, PlainDisplay, RunCounter, SuiteProgress

PLUGIN_KEY = pytest.StashKey["ProgressPlugin"]()


def plugin_of(config: pytest.Config) -> ProgressPlugin | None:
    """The session's progress plugin, or None (a plain pytest run shows pytest's own output)."""
    return config.stash.get(PLUGIN_KEY, None)


def run_counter(config: pytest.Config) -> RunCounter:
    """A ``RunCounter`` reporting to the session's progress plugin (a no-op without one)."""
    plugin = plugin_of(config)
    return RunCounter(plugin.runs if plugin else None)


def terminal_stream() -> TextIO:
    """A writable copy of stdout's file descriptor: pytest's fd capture redirects fd 1 during
    a test, and the run updates come from inside tests."""
    try:
        return os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1, closefd=True)
    except (AttributeError, OSError, ValueError):  # stdout without a descriptor (e.g. captured)
        return sys.stdout


class ProgressPlugin:
    """Per-test progress of a scenario session: live bar on a terminal, plain lines otherwise
    (``live=None``: decide by ``stream.isatty()``); ``quiet``: finished configurations only."""

    def __init__(self, stream: TextIO | None = None, *, quiet: bool = False, live: bool | None = None,
                 every_s: float = 30.0):
        self.stream = stream if stream is not None else terminal_stream()
        self._own_stream = stream is None and self.stream is not sys.stdout
        self.progress = SuiteProgress()
        if live is None:
            live = not quiet and self.stream.isatty()
        self.display: LiveDisplay | PlainDisplay = (
            LiveDisplay(self.progress, self.stream) if live
            else PlainDisplay(self.progress, self.stream, quiet=quiet, every_s=every_s))
        self.lines: list[str] = []  # the finished lines, for the caller and the tests
        self._entry: dict[str, Any] | None = None
        self._reported = False
        self._started = False

    # -- what the fixtures call -----------------------------------------------------------------
    def runs(self, done: int, total: int, unit: str = "run") -> None:
        self.progress.runs(done, total, unit)
        self.display.runs_changed()

    def recorded(self, entry: dict[str, Any]) -> None:
        self._entry = entry

    # -- pytest hooks ---------------------------------------------------------------------------
    def pytest_configure(self, config: pytest.Config) -> None:
        config.stash[PLUGIN_KEY] = self

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.progress.total = len(session.items)
        self.progress.started = self.progress.clock()
        self.display.start()
        self._started = True

    def pytest_runtest_logstart(self, nodeid: str, location: Any) -> None:
        self.progress.start(nodeid)
        self._entry, self._reported = None, False
        self.display.test_started()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        # one line per test: its call, or the setup that failed or skipped it
        if self._reported:
            return
        if report.when == "call":
            self._finish(report.outcome, report)
        elif not report.passed:
            self._finish("error" if report.failed else "skipped", report)

    def _finish(self, outcome: str, report: pytest.TestReport) -> None:
        reason = ""
        if report.skipped and isinstance(report.longrepr, tuple):
            reason = str(report.longrepr[2]).removeprefix("Skipped: ")
        line = self.progress.finish(outcome, self._entry, reason)
        self._reported = True
        self.lines.append(line)
        self.display.line(line)

    @pytest.hookimpl(wrapper=True)
    def pytest_report_teststatus(self, report: pytest.TestReport, config: pytest.Config):
        # blank pytest's dot/letter: our finished line says it (the categories still count)
        category, _letter, word = yield
        return category, "", word

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        self.close()

    def close(self) -> None:
        if self._started:
            self.display.stop()
            self._started = False
        if self._own_stream:
            self.stream.flush()
            self.stream.close()
            self._own_stream = False
