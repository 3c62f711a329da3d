"""The main job's progress display: ETA and line formatting with a fake clock, the plain
(non-terminal) and quiet modes, and the pytest plugin on a small pytest session. Pure: no root."""

from __future__ import annotations

import io
import re

import pytest

from harness.report.progress import (
    PlainDisplay,
    RunCounter,
    SuiteProgress,
    duration,
    eta,
    finished_line,
    parse_nodeid,
)
from harness.scenarios.progress import ProgressPlugin

pytest_plugins = ["pytester"]


class Clock:
    def __init__(self, t: float = 100.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_durations_and_eta():
    assert [duration(s) for s in (None, 0.4, 42, 185, 3720)] == ["?", "0s", "42s", "3m05s", "1h02m"]
    assert eta(0, 10, 5.0) is None
    assert eta(2, 10, 10.0) == 40.0
    assert eta(10, 10, 10.0) == 0.0


def test_nodeids_name_scenario_and_configuration():
    assert parse_nodeid("cases/scenarios/test_job_to_mysql.py::test_job_to_mysql[none-same-node]") == (
        "job-to-mysql", "none-same-node")
    assert parse_nodeid("cases/scenarios/test_policy_creation_latency.py::test_x[restore-scale-100]") == (
        "policy-creation-latency", "restore-scale-100")
    assert parse_nodeid("test_fail_open.py::test_fail_open") == ("fail-open", "")


def test_status_runs_and_etas_with_a_fake_clock():
    clock = Clock()
    p = SuiteProgress(total_tests=3, clock=clock)
    p.start("cases/scenarios/test_fail_open.py::test_fail_open[v2.10]")
    assert p.suite_eta() is None  # nothing finished, nothing to go by
    p.runs(0, 4)
    clock.t += 10
    p.runs(2, 4)  # 2 runs in 10 s: 10 s left in this configuration
    assert p.config_eta() == 10.0
    assert p.status() == "fail-open v2.10 · run 3/4 · 10s, ETA 10s · suite 1/3, 10s, ETA ~?"
    assert p.fraction() == pytest.approx(0.5 / 3)
    clock.t += 10
    line = p.finish("passed")
    assert line == "[1/3] PASS  fail-open v2.10 (20s)"
    p.start("cases/scenarios/test_fail_open.py::test_fail_open[v2.10-default-deny]")
    clock.t += 5  # no run reported yet: the finished one's 20 s is the estimate
    assert p.config_eta() == 15.0
    assert p.suite_eta() == 15.0 + 20.0  # this one, then one more at the mean
    assert p.status().endswith("suite 2/3, 25s, ETA ~35s")


def test_finished_line_shows_the_recorded_verdict_and_summary():
    entry = {"verdict": "pass", "summary": {"metric": "pod_creation_reachability_latency", "runs": 3,
                                           "failures": 3, "failure_label": "first attempt failed",
                                           "stats": {"p50": 351.04}}}
    assert finished_line(3, 12, "job-to-mysql", "none", "passed", 12.3, entry) == (
        "[ 3/12] PASS  job-to-mysql none: 3 runs, pod_creation_reachability_latency p50 351.0 ms, "
        "3/3 first attempt failed (12s)")
    failed = dict(entry, verdict="fail")
    assert finished_line(4, 12, "job-to-mysql", "x", "failed", 1, failed).startswith("[ 4/12] FAIL  job-to-mysql x:")
    assert finished_line(4, 12, "job-to-mysql", "x", "failed", 1, failed).endswith("[test failed] (1s)")
    assert finished_line(5, 12, "job-to-mysql", "docker", "skipped", 0.1, None, "no docker") == (
        "[ 5/12] SKIP  job-to-mysql docker — no docker (0s)")
    probes = {"verdict": "info", "summary": {"metric": "refused_window", "runs": 4000, "failures": 2,
                                             "failure_label": "allowed probes refused", "stats": {"p50": None}}}
    assert finished_line(1, 1, "ipset-update-window", "v1.2", "passed", 3, probes) == (
        "[1/1] INFO  ipset-update-window v1.2: 4000 probes, 2/4000 allowed probes refused (3s)")


def test_plain_display_throttles_run_updates_and_quiet_drops_them():
    clock = Clock()
    for quiet, expected in ((False, 3), (True, 0)):
        p = SuiteProgress(total_tests=1, clock=clock)
        out = io.StringIO()
        d = PlainDisplay(p, out, quiet=quiet, every_s=30)
        p.start("test_fail_open.py::test_fail_open[a]")
        d.test_started()
        for i in range(10):  # an update every 10 s for 100 s: a line at 30, 60 and 90 s
            clock.t += 10
            p.runs(i, 10)
            d.runs_changed()
        lines = out.getvalue().splitlines()
        assert len(lines) == expected, lines
        assert all(" · run " in ln for ln in lines)


def test_run_counter_reports_before_each_run_and_at_the_end():
    seen = []
    counter = RunCounter(lambda done, total, unit: seen.append((done, total, unit)))
    assert list(counter.runs(2)) == [0, 1]
    counter.callback("sync")(5, 10)
    assert seen == [(0, 2, "run"), (1, 2, "run"), (2, 2, "run"), (5, 10, "sync")]
    assert list(RunCounter().runs(2)) == [0, 1]  # no display: nothing to call


def test_the_plugin_reports_each_configuration_once_in_place_of_pytests_dots(pytester):
    pytester.makeconftest("""
        import pytest
        from harness.scenarios.progress import plugin_of, run_counter

        @pytest.fixture
        def scenario_progress(pytestconfig):
            return run_counter(pytestconfig)

        @pytest.fixture
        def recorded(pytestconfig):
            return plugin_of(pytestconfig).recorded

        @pytest.fixture
        def broken():
            raise RuntimeError("no lab")
    """)
    pytester.makepyfile(test_fake_scenario="""
        import pytest

        @pytest.mark.parametrize("config", ["a", "b"])
        def test_fake_scenario(config, scenario_progress, recorded):
            for i in scenario_progress.runs(3):
                pass
            recorded({"verdict": "pass", "summary": {"metric": "m", "runs": 3, "failures": 0,
                                                     "failure_label": "bad", "stats": {"p50": 1.0}}})
            assert config == "a"

        def test_fake_scenario_skipped():
            pytest.skip("no docker here")

        def test_fake_scenario_broken(broken):
            pass
    """)
    out = io.StringIO()
    plugin = ProgressPlugin(out, live=False, every_s=0)
    result = pytester.runpytest_inprocess("-q", "-p", "no:netpol_harness", "-o", "console_output_style=classic",
                                          plugins=[plugin])
    result.assert_outcomes(passed=1, failed=1, skipped=1, errors=1)
    lines = [ln.rsplit(" (", 1)[0] for ln in plugin.lines]
    assert lines == ["[1/4] PASS  fake-scenario a: 3 runs, m p50 1.0 ms, 0/3 bad",
                     "[2/4] PASS  fake-scenario b: 3 runs, m p50 1.0 ms, 0/3 bad [test failed]",
                     "[3/4] SKIP  fake-scenario — no docker here",
                     "[4/4] ERROR fake-scenario"]
    shown = out.getvalue()
    assert "fake-scenario a · run 1/3" in shown and "fake-scenario b · run 3/3" in shown
    assert not any(re.fullmatch(r"[.sFE]+", ln) for ln in result.outlines), result.outlines  # no dots


def test_the_live_display_draws_the_bar_and_the_status_line():
    from rich.console import Console

    from harness.report.progress import LiveDisplay

    clock = Clock()
    p = SuiteProgress(total_tests=2, clock=clock)
    p.start("test_fail_open.py::test_fail_open[v2.10]")
    p.runs(1, 2)
    buf = io.StringIO()
    d = LiveDisplay(p, buf)
    d.console = Console(file=buf, width=120, color_system=None)
    d.console.print(d)
    d.line("[1/2] PASS  fail-open v2.10 (1s)")
    text = buf.getvalue()
    assert "fail-open v2.10 · run 2/2 · 0s, ETA 0s · suite 1/2" in text
    assert "[1/2] PASS  fail-open v2.10 (1s)" in text
