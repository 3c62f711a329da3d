"""The job-to-mysql summary's fail-closed counts (pure)."""

from harness.scenarios.timed.job_to_mysql import summarize as job_to_mysql


def _obs(first_failed: bool, first_end_ns: int, in_force_ns: int | None) -> dict:
    return {
        "reachability_latency_ms": 350.0, "first_failed": first_failed,
        "first": {"code": 2003, "errno": "ECONNREFUSED", "message": "refused"} if first_failed else {},
        "client_success_ms": 400.0, "success_ns": first_end_ns, "attempts": [{"end_ns": first_end_ns}],
        "probe": {"counts": {"connected": 1}}, "programmed_ns": None, "ready_ns": 0,
        "server_sync": None if in_force_ns is None else {"in_force_ns": in_force_ns},
    }


def test_a_first_attempt_is_held_only_if_it_ended_after_the_server_node_allowed_it():
    s = job_to_mysql([
        _obs(True, 100, 500),  # refused before the sync: a failure
        _obs(False, 1_100, 500),  # first SYN dropped, the retransmission passed after the sync: held
        _obs(False, 400, 500),  # connected before node-a allowed it: fail-open
    ])
    assert (s["failures"], s["first_held"], s["connected_before_server_sync"]) == (1, 1, 1)
