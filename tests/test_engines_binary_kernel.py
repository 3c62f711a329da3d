"""The binary engine on a real lab (issue 13 items 2-3): ``examples/api_controller.py`` — the
harness's kube-router model as a separate process that knows the cluster only through the served
API — runs in each real node's namespace, is measured by probes alone, serves metrics that are
scraped, and is gone after teardown and after SIGKILL + ``gc``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from harness.controller import Controller, ControllerConfig
from harness.engines.binary import scrape
from harness.kernel import netns
from harness.lab.state import process_alive
from harness.model.cluster import ContainerPort, Pod
from harness.model.policy import LabelSelector, NetworkPolicy
from harness.outcome import Outcome

pytestmark = [pytest.mark.kernel, pytest.mark.topology("default")]

REPO = Path(__file__).resolve().parents[1]
CMD = ("python3", "examples/api_controller.py", "--master", "{master}", "--node", "{node}",
       "--metrics-port", "{metrics_port}")
METRICS_PORT = 9108


def _first(lab, src: str, dst: str, want: Outcome, timeout: float = 10.0) -> tuple[float, Outcome]:
    """CL2-style first success at ~1 ms steps: seconds until ``src -> dst:80`` gave ``want``."""
    t0 = time.monotonic()
    got = None
    while time.monotonic() - t0 < timeout:
        got = lab.connect(src, dst, 80, timeout=0.2)
        if got is want:
            return time.monotonic() - t0, got
        time.sleep(0.001)
    return time.monotonic() - t0, got  # type: ignore[return-value]


def _binary_pids(lab) -> list[int]:
    return [o["pid"] for o in lab.state.owned if o.get("owner") == "binary"]


def test_api_controller_through_the_binary_engine(lab, record_property) -> None:
    cfg = ControllerConfig(engine="binary", binary_cmd=CMD, metrics_port=METRICS_PORT, delivery=0.0)
    ctl = Controller(lab, cfg).start(timeout=60)
    try:
        pids = _binary_pids(lab)
        assert len(pids) == 2 and all(process_alive(p, None) for p in pids)  # one per real node, recorded
        for pid in pids:  # the record's marker is in the process's environment
            env = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
            assert any(e.startswith(b"NPH_BINARY_MARKER=nph-" + lab.run_id.encode()) for e in env)
        nodes = {n: nc.engine for n, nc in ctl.nodes.items()}
        for ne in nodes.values():
            assert ne.log_path.startswith(lab.state.dir) and os.path.exists(ne.log_path)
            deadline = time.monotonic() + 10  # the node settled; its own line about it may trail
            while ne.first_log_ns("sync 1 initial") is None and time.monotonic() < deadline:
                time.sleep(0.01)
            assert ne.first_log_ns("sync 1 initial") is not None, ne.log_lines()
        # the model's rules are in node-a's kernel, put there by the separate process
        saved = netns.run(lab.node_netns("node-a"), ["iptables-nft-save", "-t", "filter"]).stdout
        assert "KUBE-ROUTER-FORWARD" in saved and "KUBE-POD-FW-" in saved

        # a policy through the API: probes alone tell when it is in force (no sync record exists)
        assert _first(lab, "frontend/web-1", "frontend/web-0", Outcome.CONNECTED)[1] is Outcome.CONNECTED
        deny = NetworkPolicy("frontend", "deny-web", LabelSelector.of({"app": "web"}), ("Ingress",))
        ev = ctl.create_policy(deny)
        lag_s, got = _first(lab, "frontend/web-1", "frontend/web-0", Outcome.REFUSED)
        assert got is Outcome.REFUSED, got
        assert not ctl.timeline.node_syncs("node-a")  # the engine sent none: lag is the probes' figure
        assert nodes["node-a"].first_log_ns("watch networkpolicies ADDED frontend/deny-web", after_ns=ev.emitted_ns)

        # a pod: Pending (no IP) first, then Running with its IP, as a kubelet publishes it
        added = ctl.add_pod(Pod("frontend", "web-9", "node-b", {"app": "other"}, ports=[ContainerPort(80)]))
        key, ip = added.pod.key, str(added.pod.ip)
        deadline = time.monotonic() + 10
        while nodes["node-a"].first_log_ns(f"{key} ip={ip}") is None and time.monotonic() < deadline:
            time.sleep(0.01)
        lines = [t for _, t in nodes["node-a"].log_lines() if f" {key} " in t + " "]
        assert lines and "ip=" not in lines[0] and lines[0].startswith("watch pods ADDED"), lines
        seen = nodes["node-a"].first_log_ns(f"{key} ip={ip}")
        assert seen is not None, lines
        delivery_ms = (seen - added.ready_ns) / 1e6
        # a relabel follows through the API too
        rel = ctl.relabel_pod(key, {"app": "web"})
        deadline = time.monotonic() + 10
        while nodes["node-a"].first_log_ns(f"MODIFIED {key}", after_ns=rel.emitted_ns) is None \
                and time.monotonic() < deadline:
            time.sleep(0.01)
        assert nodes["node-a"].first_log_ns(f"MODIFIED {key}", after_ns=rel.emitted_ns) is not None

        # its Prometheus metrics (kube-router's names), scraped inside the node namespace
        for name, ne in nodes.items():
            m = ne.metrics()
            assert scrape.value(m, "kube_router_controller_iptables_sync_time_count") >= 1, name
            assert scrape.value(m, "api_controller_watch_events_total", resource="networkpolicies") >= 1, name
        # its metrics listener is in the node namespaces only, never in the root namespace
        listening = netns.run(lab.node_netns("node-a"), ["ss", "-ltnH"]).stdout
        assert f":{METRICS_PORT} " in listening
        assert f":{METRICS_PORT} " not in subprocess.run(["ss", "-ltnH"], capture_output=True, text=True).stdout
    finally:
        ctl.stop()
    record_property("binary_policy_first_refused_ms", round(lag_s * 1e3, 1))
    record_property("binary_watch_delivery_ms", round(delivery_ms, 2))
    print(f"policy first refused after {lag_s * 1e3:.1f} ms; node-a's controller read the pod's IP from its "
          f"watch {delivery_ms:.1f} ms after network ready (measured under load)")
    assert all(not process_alive(p, None) for p in pids)  # SIGTERM'd on teardown
    assert not _binary_pids(lab)  # and forgotten by the record
    assert "binary-" in " ".join(os.listdir(lab.state.dir))  # the logs stay with the run until it is removed


SCRIPT = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {repo!r})
    from harness.controller import Controller, ControllerConfig
    from harness.lab.lab import Lab
    from harness.model.topology import load_topology

    lab = Lab(load_topology("default"), servers=False, topology="default").up()
    ctl = Controller(lab, ControllerConfig(engine="binary", binary_cmd={cmd!r}, delivery=0.0)).start(timeout=60)
    print("RUN", lab.run_id, " ".join(str(o["pid"]) for o in lab.state.owned if o["owner"] == "binary"), flush=True)
    time.sleep(600)
""")


def test_sigkill_then_gc_stops_the_binaries(tmp_path) -> None:
    from harness.lab.fixtures import skip_unless_kernel

    skip_unless_kernel()
    # through {kubeconfig}, as kube-router is configured (its --master alone needs in-cluster files)
    cmd = ("python3", "examples/api_controller.py", "--kubeconfig", "{kubeconfig}", "--node", "{node}")
    script = tmp_path / "owner.py"
    script.write_text(SCRIPT.format(repo=str(REPO), cmd=cmd))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=REPO)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("RUN "), proc.stderr.read() if proc.stderr else line
        _, run_id, *pids = line.split()
        pids_i = [int(p) for p in pids]
        assert len(pids_i) == 2 and all(process_alive(p, None) for p in pids_i)
    finally:
        proc.kill()
        proc.wait()
    assert all(process_alive(p, None) for p in pids_i)  # the binaries outlive their owner's SIGKILL ...
    cli = os.path.join(os.path.dirname(sys.executable), "netpol-harness")
    out = subprocess.run([cli, "gc"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    deadline = time.monotonic() + 15
    while any(process_alive(p, None) for p in pids_i) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(process_alive(p, None) for p in pids_i), json.dumps(out.stdout)  # ... until gc
    assert not netns.list_names(f"nph-{run_id}-")
