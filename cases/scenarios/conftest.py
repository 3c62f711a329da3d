"""Options and the result recorder of the scenario suite.

Size: ``--scenario-size smoke|full`` (or ``NPH_SCENARIO_SIZE``): smoke (default) runs a few
runs of a few configurations and still asserts on what it observes; full is the main job's
size (``netpol-harness suite``). Output: ``--scenario-json FILE`` (``NPH_SCENARIO_JSON``) dumps
every recorded entry for the suite; ``--scenario-report DIR`` (``NPH_SCENARIO_REPORT``) writes a
whole run folder (results.json, report.md, plots) under DIR.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from harness.report.progress import RunCounter
from harness.report.recorder import ScenarioRecorder
from harness.scenarios.options import SIZES, option, scenario_size
from harness.scenarios.progress import plugin_of, run_counter


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("netpol-harness scenarios")
    group.addoption("--scenario-size", choices=SIZES, default=None, help="smoke (default) or full (the main job)")
    group.addoption("--scenario-json", default=None, help="dump the recorded scenario entries to this file")
    group.addoption("--scenario-report", default=None, help="write a run folder (report.md, plots) under this dir")


@pytest.fixture(scope="session")
def scenario_recorder(pytestconfig: pytest.Config, record_testsuite_property) -> Iterator[ScenarioRecorder]:
    """The session's recorder; its entries are written at the end of the session if asked."""
    rec = ScenarioRecorder(scenario_size(pytestconfig))
    record_testsuite_property("scenario_size", rec.mode)
    progress = plugin_of(pytestconfig)
    if progress is not None:  # the main job: its finished-configuration line shows the verdict
        rec.listeners.append(progress.recorded)
    yield rec
    dump = option(pytestconfig, "--scenario-json", "NPH_SCENARIO_JSON")
    if dump:
        rec.dump(dump)
    out = option(pytestconfig, "--scenario-report", "NPH_SCENARIO_REPORT")
    if out and rec.entries:
        path = rec.write_report(out)
        print(f"\nscenario report: {path}")


@pytest.fixture
def size(pytestconfig: pytest.Config) -> str:
    return scenario_size(pytestconfig)


@pytest.fixture
def scenario_progress(pytestconfig: pytest.Config) -> RunCounter:
    """Report "run i of N": ``for i in scenario_progress.runs(n)``, or pass
    ``scenario_progress.callback("update")`` to a scenario that loops itself. Shown by the main
    job (``netpol-harness suite``); a no-op in a plain pytest run."""
    return run_counter(pytestconfig)
