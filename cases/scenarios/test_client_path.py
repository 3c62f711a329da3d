"""client-path (kube-router #1652 as reported): a job pod runs ``mariadb-dump --host=mysql.db
--ssl`` at once; the name resolves through the lab's dnsmasq (kubelet's resolv.conf, glibc's
own timeouts), the session is TLS to a real MariaDB behind an ingress policy; node-a learns of
new pods 0.3 s late.

The test asserts what each configuration's mechanism makes certain, from the client's own
numbers: refused at connect without egress policy or with the production egress pattern (DNS
passes: kube-router leaves a pod it has not programmed yet unfiltered), the resolver's 5 s
timeout under ``--netpol-default-deny`` (the first DNS query is dropped: glibc retries it),
``Connection reset by peer (104)`` only from a server-side socket abort, a TLS EOF from
``KILL CONNECTION``, and a name that never resolves when egress allows MySQL but not DNS.

Smoke size: the first four configurations, one or two runs each (~20 s); full: all, ≤ 2 min.
"""

from __future__ import annotations

import time

import pytest

from harness.cluster.dns import require_dnsmasq
from harness.cluster.mariadb import require_mariadb
from harness.engines.config import configured
from harness.errors import EnvironmentProblem
from harness.scenarios.client_path import ClientPathConfig, ClientPathScenario
from harness.scenarios.clusters import scenario_lab

pytestmark = [pytest.mark.kernel, pytest.mark.topology("default")]

LATE_A = {"node-a": 0.3, "node-b": 0.0}
LATE_BOTH = {"node-a": 0.3, "node-b": 0.3}
REFUSED_AT_CONNECT = "REJECT at connect: node-a has not programmed the job into allow-backup yet"


def _all_refused(s):
    return (s["failures"] == s["runs"] and set(s["first_errors"]) == {"2002 EINPROGRESS"}
            and s["never_succeeded"] == 0 and (s["dns_resolve"]["max"] or 0) < 1000)


REFUSED = ("every first attempt refused at connect (2002, 115) after a fast resolution; later runs succeed",
           _all_refused)
SLOW_DNS = ("the first DNS query is dropped: resolution takes the resolver's 5 s timeout, then succeeds",
            lambda s: s["never_succeeded"] == 0 and (s["dns_resolve"]["p50"] or 0) >= 4900 and s["dns_retries"] >= 1)
RESET = ("every aborted session: Connection reset by peer (ECONNRESET)",
         lambda s: s["failures"] == s["runs"] and s["first_outcomes"] == {"reset": s["runs"]}
         and all(e.endswith("ECONNRESET") for e in s["first_errors"]))
CLOSED = ("every killed session: the client sees the server close it (a lost connection, no reset errno)",
          lambda s: s["failures"] == s["runs"] and not any(e.endswith("ECONNRESET") for e in s["first_errors"]))
# glibc timeout:5 attempts:2: a node 6 s late outlasts the first timeout; measured, not assumed:
# either the resolver's second try got through (>= 10 s) or it gave up (EAI_AGAIN) and a rerun succeeded
RESOLVER_GAVE_UP_OR_SLOW = ("the new pod's DNS is dropped past glibc's first 5 s timeout: resolution takes >= 6 s "
                            "or fails (2005), and a rerun succeeds",
                            lambda s: s["never_succeeded"] == 0 and ((s["dns_resolve"]["min"] or 0) >= 6000
                                                                      or set(s["first_errors"]) == {"2005 EAI_AGAIN"}))
NO_NAME = ("the name never resolves (2005, EAI_AGAIN) once egress denies DNS",
           lambda s: s["failures"] == s["runs"] and set(s["first_errors"]) == {"2005 EAI_AGAIN"}
           and s["never_succeeded"] == s["runs"])

DD = "--netpol-default-deny on node-b: the new pod's egress is rejected until node-b programs it"
# name, ClientPathConfig fields, expectation, (smoke runs, full runs); the first four run at smoke size
CONFIGS = [
    ("dump", {"mechanism": REFUSED_AT_CONNECT}, REFUSED, (2, 6)),
    ("dump-egress-default-deny", {"egress": "dns+mysql", "mitigation": "default-deny", "delivery": LATE_BOTH,
                                  "mechanism": DD}, SLOW_DNS, (1, 3)),
    ("abort-sock-destroy", {"abort": "sock-destroy", "until_success_s": 0.0,
                            "mechanism": "server-side socket abort of an established TLS session (ss -K: RST)"},
     RESET, (1, 4)),
    ("abort-kill-connection", {"abort": "kill-connection", "until_success_s": 0.0,
                               "mechanism": "the server ends the session (KILL CONNECTION)"}, CLOSED, (1, 4)),
    ("dump-egress", {"egress": "dns+mysql", "mechanism": REFUSED_AT_CONNECT}, REFUSED, (2, 6)),
    # the same job without the Service path (the name resolves to the pod IP): what DNAT adds
    ("dump-pod-ip", {"service": "headless", "mechanism": REFUSED_AT_CONNECT}, REFUSED, (0, 6)),
    ("dump-same-node", {"job_node": "node-a", "mechanism": REFUSED_AT_CONNECT}, REFUSED, (2, 6)),
    ("dump-egress-same-node", {"egress": "dns+mysql", "job_node": "node-a", "mechanism": REFUSED_AT_CONNECT},
     REFUSED, (2, 6)),
    ("dump-egress-default-deny-node-b-6s", {"egress": "dns+mysql", "mitigation": "default-deny",
                                           "delivery": {"node-a": 0.3, "node-b": 6.0}, "until_success_s": 15.0,
                                           "mechanism": DD + " (6 s late: past glibc's first 5 s timeout)"},
     RESOLVER_GAVE_UP_OR_SLOW, (0, 1)),
    ("dump-egress-no-dns-allow", {"egress": "mysql-only", "wait_programmed": True, "until_success_s": 0.0,
                                  "mechanism": "egress allows MySQL but not DNS: every query REJECTed"},
     NO_NAME, (0, 1)),
]
SMOKE = 4


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "client_path_config" in metafunc.fixturenames:
        from harness.scenarios.options import scenario_size

        chosen = CONFIGS if scenario_size(metafunc.config) == "full" else CONFIGS[:SMOKE]
        metafunc.parametrize("client_path_config", chosen, ids=[c[0] for c in chosen])


def test_client_path(client_path_config, size, scenario_recorder, scenario_progress, record_property, request,
                     enforcement):
    for need in (require_mariadb, require_dnsmasq):
        try:
            need()
        except EnvironmentProblem as e:
            pytest.skip(str(e))
    name, fields, (expectation, check), (smoke_runs, full_runs) = client_path_config
    cfg = configured(ClientPathConfig, enforcement, name, **{"delivery": LATE_A, **fields})
    t0 = time.monotonic()
    lab = scenario_lab(request, "default")
    with ClientPathScenario(lab, cfg) as sc:
        runs = smoke_runs if size == "smoke" else full_runs
        observations = [sc.run_once(i) for i in scenario_progress.runs(runs)]
        update_s = sc.dns_update_s
    entry = scenario_recorder.record("client-path", name, cfg.describe(), observations, expectation=expectation,
                                     check=check, runtime_s=time.monotonic() - t0, dns_update_s=update_s)
    s = entry["summary"]
    record_property("first_attempt_failures", f"{s['failures']}/{s['runs']}")
    record_property("first_errors", s["first_errors"])
    record_property("dns_resolve_p50_ms", s["dns_resolve"]["p50"])
    assert entry["verdict"] == "pass", f"{name}: expected {expectation}; observed {s['failures']}/{s['runs']} " \
        f"failed ({s['first_errors']}), resolve {s['dns_resolve']}, retries {s['dns_retries']}, " \
        f"never ok {s['never_succeeded']}"
    assert update_s is not None and 0 < update_s < 2, update_s  # the hostsdir rename was served within 2 s
    for o in observations:
        assert o["symptom_rows"] and o["symptom_rows"][0]["configuration"] == f"client-path/{name}"
        assert o["dns_queries"], "the watcher saw no DNS query of the job"
        if name == "abort-sock-destroy":
            assert "Connection reset by peer" in o["first"]["message"], o["first"]


@pytest.mark.parametrize("path", ["clusterip", "headless"])
def test_the_job_takes_the_service_path_it_is_configured_for(path, request, enforcement):
    """The name the job resolves is the Service's ClusterIP and kube-proxy's DNAT on the job's node
    counts its connection (``clusterip``); or the pod IP with no kube-proxy at all (``headless``)."""
    for need in (require_mariadb, require_dnsmasq):
        try:
            need()
        except EnvironmentProblem as e:
            pytest.skip(str(e))
    from harness.kernel import netns
    from harness.scenarios.client_path import KUBE_DNS_IP, SERVER

    cfg = configured(ClientPathConfig, enforcement, f"path-{path}", service=path, wait_programmed=True,
                     until_success_s=0.0, delivery=LATE_A)
    lab = scenario_lab(request, "default")
    with ClientPathScenario(lab, cfg) as sc:
        obs = sc.run_once(0)
        nat = netns.run(lab.node_netns(cfg.job_node), ["iptables-save", "-t", "nat", "-c"], check=False).stdout
        resolv = open(sc.dns.resolv_path("batch")).read()
    answers = {a for q in obs["dns_queries"] for a in q["answers"]}
    server_ip = str(lab.cluster.pods[SERVER].ip)
    assert obs["first"]["ok"], obs["first"]
    dnat = [ln for ln in nat.splitlines() if "-j DNAT" in ln and f"{server_ip}:3306" in ln]
    if path == "clusterip":
        assert answers == {"10.96.0.20"}, answers
        assert f"nameserver {KUBE_DNS_IP}" in resolv
        # iptables-save -c: "[packets:bytes] -A KUBE-SEP-... -j DNAT --to-destination ip:port"
        assert dnat and int(dnat[0].split(":")[0].lstrip("[")) >= 1, dnat
    else:
        assert answers == {server_ip}, answers
        assert not dnat
