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

from harness.report.recorder import ScenarioRecorder
from harness.scenarios.options import SIZES, option, scenario_size


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
