"""Pure analysis: percentiles, summaries, ECDF, windows in probe series, scenario summaries."""

from __future__ import annotations

import pytest

from harness.analysis.stats import ecdf, percentile, summarize
from harness.analysis.windows import DENIED, first_of, last_of, stable_since, windows
from harness.scenarios.timed import fail_open, job_to_mysql


def test_percentile_interpolates_between_order_statistics():
    assert percentile([], 50) == 0.0
    assert percentile([7], 99) == 7
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([4, 1, 3, 2], 100) == 4
    assert percentile(range(101), 90) == pytest.approx(90)


def test_summary_counts_missing_and_ignores_them_in_percentiles():
    s = summarize([10.0, None, 30.0, 20.0])
    assert (s.n, s.missing, s.p50, s.max, s.min) == (4, 1, 20.0, 30.0, 10.0)
    assert s.mean == pytest.approx(20.0)
    empty = summarize([None, None])
    assert (empty.n, empty.missing, empty.p50) == (2, 2, None)


def test_ecdf_stays_below_one_when_runs_never_succeeded():
    xs, ys = ecdf([3.0, None, 1.0, 2.0])
    assert xs == [1.0, 2.0, 3.0]
    assert ys == [0.25, 0.5, 0.75]


SERIES = [[0, "connected"], [10, "rejected_icmp"], [20, "rejected_icmp"], [30, "connected"],
          [40, "dropped"], [50, "connected"], [60, "connected"]]


def test_windows_are_maximal_runs_with_bounds():
    wins = windows(SERIES, DENIED)
    assert [(w.first_ns, w.last_ns, w.count) for w in wins] == [(10, 20, 2), (40, 40, 1)]
    assert (wins[0].prev_good_ns, wins[0].next_good_ns, wins[0].bound_ns) == (0, 30, 30)
    assert wins[0].observed_ns == 10 and wins[0].outcomes == ("rejected_icmp",)
    assert wins[1].outcomes == ("dropped",)


def test_window_open_at_the_end_has_no_bound():
    wins = windows([[0, "connected"], [5, "refused_rst"]], DENIED)
    assert len(wins) == 1 and wins[0].next_good_ns is None and wins[0].bound_ns is None


def test_stable_since_and_first_last():
    assert stable_since(SERIES, "connected") == 50
    assert stable_since(SERIES, "connected", after_ns=55) == 60
    assert stable_since(SERIES + [[70, "dropped"]], "connected") is None
    assert first_of(SERIES, DENIED) == 10 and first_of(SERIES, DENIED, after_ns=25) == 40
    assert last_of(SERIES, {"connected"}) == 60
    # order of the input does not matter
    assert stable_since(list(reversed(SERIES)), "connected") == 50


def _job_obs(i, failed, lat, errno="ECONNREFUSED"):
    first = {"ok": not failed, "code": 2003 if failed else None, "errno": errno if failed else None,
             "message": "refused" if failed else "", "start_ns": 0, "end_ns": 1, "outcome": "refused"}
    return {"run": i, "first_failed": failed, "first": first, "attempts": [first], "reachability_latency_ms": lat,
            "client_success_ms": lat, "success_ns": 1 if lat else None, "ready_ns": 0, "programmed_ns": 300_000_000,
            "probe": {"counts": {"connected": 5, "rejected_icmp": 2}}}


def test_job_summary_counts_failures_and_errors():
    s = job_to_mysql.summarize([_job_obs(0, True, 350.0), _job_obs(1, True, 380.0), _job_obs(2, False, None)])
    assert (s["failures"], s["runs"], s["never_succeeded"]) == (2, 3, 1)
    assert s["first_errors"] == {"2003 ECONNREFUSED": 2}
    assert s["stats"]["n"] == 3 and s["stats"]["missing"] == 1 and s["stats"]["max"] == 380.0
    assert s["probe_outcomes"] == {"connected": 15, "rejected_icmp": 6}
    assert s["server_lag"]["p50"] == 300.0


def test_fail_open_summary_only_counts_runs_let_through():
    def obs(win, survived):
        return {"fail_open_ms": win, "new_connection_after": {"errno": "ECONNREFUSED"},
                "long_lived": {"established_in_window": win is not None, "reset": not survived,
                               "exchanges_after_enforcement": 3, "conntrack_established": ["x"] if survived else []}}

    s = fail_open.summarize([obs(300.0, True), obs(None, False), obs(320.0, False)])
    assert (s["failures"], s["runs"], s["stats"]["n"]) == (2, 3, 2)
    assert s["established_in_window"] == 2 and s["survived_enforcement"] == 1 and s["conntrack_established"] == 1
    assert s["new_connection_after"] == {"ECONNREFUSED": 3}
