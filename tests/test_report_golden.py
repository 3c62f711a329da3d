"""Old runs re-render identically: results.json of a real smoke run (``pytest cases/scenarios
--scenario-size smoke --scenario-report DIR``, every shipped scenario) and the report.md that
run wrote are kept in tests/golden/report/. Pure: no kernel.

A deliberate change of the report's layout changes the golden report: render it again
(``render_markdown`` of the golden results.json into smoke-report.md) and review that the
diff is only the intended change."""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

import pytest

GOLDEN = Path(__file__).parent / "golden" / "report"


@pytest.fixture
def results() -> dict:
    with gzip.open(GOLDEN / "smoke-results.json.gz", "rt") as f:
        return json.load(f)


def test_the_report_of_a_recorded_run_is_unchanged(results):
    from harness.report.scenario_report import render_markdown

    assert render_markdown(results) == (GOLDEN / "smoke-report.md").read_text()


def test_report_run_rewrites_the_same_report_md(results, tmp_path):
    from harness.report.commands import cmd_report

    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text(json.dumps(results))
    assert cmd_report(argparse.Namespace(run=run, plots=False)) == 0
    assert (run / "report.md").read_text() == (GOLDEN / "smoke-report.md").read_text()


def test_every_recorded_summary_is_what_its_scenario_summarizes_now(results):
    """The summaries of the recorded observations, computed again, are the recorded ones (the
    summarizers moved, their numbers did not)."""
    from harness.scenarios.declaration import get

    assert {e["scenario"] for e in results["scenarios"]} == {
        "job-to-mysql", "fail-open", "ipset-update-window", "established-survives-sync", "policy-creation-latency"}
    for e in results["scenarios"]:
        again = json.loads(json.dumps(get(e["scenario"]).summarize(e["observations"]), default=str))
        assert again == e["summary"], (e["scenario"], e["config"])
