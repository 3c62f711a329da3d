"""job-to-mysql (kube-router #1652, k0s #2261): job pods start and at once query a real
MariaDB protected by a NetworkPolicy; node-a (the server's node) learns of them 0.3 s late.

Each configuration's runs feed the report (``scenario_recorder``); the test asserts what is
certain with that delivery delay: without mitigation the job's first attempt is refused (ICMP
port-unreachable -> ECONNREFUSED, MySQL error 2003), with cni-wait on every node it never fails.
"""

from __future__ import annotations

import time

import pytest

from harness.errors import EnvironmentProblem
from harness.scenarios.job import JobConfig, JobScenario, cli_denied
from harness.scenarios.mysql import require_mariadb
from harness.scenarios.options import scenario_size

pytestmark = [pytest.mark.kernel, pytest.mark.topology("default")]

DELAY = {"node-a": 0.3, "node-b": 0.0}  # far above the job's start (immediate): the race is certain
ALL_FAIL = ("every first attempt fails", lambda s: s["failures"] == s["runs"] and s["never_succeeded"] == 0)
NONE_FAIL = ("no first attempt fails", lambda s: s["failures"] == 0)
RETRY_OK = ("first attempts fail, retries always succeed",
            lambda s: s["never_succeeded"] == 0 and s["client_success"]["missing"] == 0)

# name, JobConfig fields, expectation; the first three also run in the smoke size
CONFIGS = [
    ("none", {}, ALL_FAIL),
    ("cni-wait-all", {"mitigation": "cni-wait:all"}, NONE_FAIL),
    ("tcp-reset", {"reject_with": "tcp-reset"}, ALL_FAIL),
    ("none-same-node", {"job_node": "node-a"}, ALL_FAIL),
    ("sleep-1s", {"mitigation": "sleep:1"}, NONE_FAIL),
    ("retry", {"mitigation": "retry"}, RETRY_OK),
    ("default-deny", {"mitigation": "default-deny"}, ALL_FAIL),
    ("cni-wait-own-node", {"mitigation": "cni-wait"}, ALL_FAIL),
    ("init-wait", {"mitigation": "init-wait"}, NONE_FAIL),
    ("profile-v1.3", {"profile": "v1.3"}, ALL_FAIL),
    ("profile-v2.6-legacy", {"profile": "v2.6", "backend": "legacy"}, ALL_FAIL),
]
SMOKE = 3
RUNS = {"smoke": 3, "full": 30}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "job_config" in metafunc.fixturenames:
        chosen = CONFIGS if scenario_size(metafunc.config) == "full" else CONFIGS[:SMOKE]
        metafunc.parametrize("job_config", chosen, ids=[c[0] for c in chosen])


def test_job_to_mysql(lab, job_config, size, scenario_recorder, record_property):
    try:
        require_mariadb()
    except EnvironmentProblem as e:
        pytest.skip(str(e))
    name, fields, (expectation, check) = job_config
    cfg = JobConfig(name, delivery=DELAY, **fields)
    t0 = time.monotonic()
    with JobScenario(lab, cfg) as sc:
        observations = [sc.run_once(i) for i in range(RUNS[size])]
        cli = cli_denied(sc)
    entry = scenario_recorder.record("job-to-mysql", name, cfg.describe(), observations, expectation=expectation,
                                     check=check, runtime_s=time.monotonic() - t0, cli=cli)
    s = entry["summary"]
    for key in ("p50", "p90", "p99", "max"):
        record_property(f"reachability_{key}_ms", s["stats"][key])
    record_property("first_attempt_failures", f"{s['failures']}/{s['runs']}")
    record_property("first_errors", s["first_errors"])
    assert entry["verdict"] == "pass", f"{name}: expected {expectation}; observed {s['failures']}/{s['runs']} " \
        f"first attempts failed ({s['first_errors']}), never succeeded {s['never_succeeded']}"
    if name in ("none", "tcp-reset"):
        # a REJECT answers the SYN (ICMP port-unreachable or RST): refused, never reset or timeout
        assert s["first_errors"] == {"2003 ECONNREFUSED": s["runs"]}
        # the datapath: nothing reached the server before node-a's sync
        for o in observations:
            assert o["reachability_latency_ms"] >= DELAY["node-a"] * 1e3
        want = "refused_rst" if name == "tcp-reset" else "rejected_icmp"
        assert want in s["probe_outcomes"] and set(s["probe_outcomes"]) == {want, "connected"}
        assert cli.startswith("ERROR 2002") or cli.startswith("ERROR 2003"), cli
