"""The binary engine's pure parts (issue 13 item 2): its command template and validation (one
line naming the flag), the flags that select it, the Prometheus parser it scrapes with, and the
informer logic of ``examples/api_controller.py`` (kube-router's pod filter, the 1-slot channel,
the API objects -> Cluster view). No root needed."""

from __future__ import annotations

import argparse
import importlib.util
import ipaddress
import shlex
import sys
from pathlib import Path

import pytest

from harness.engines import options, registry
from harness.engines.binary import scrape
from harness.engines.binary.engine import BinaryEngine, marker
from harness.engines.binary.template import parse_template, placeholders, render
from harness.engines.config import EnforcementConfig
from harness.errors import ConfigError, HarnessError

REPO = Path(__file__).resolve().parents[1]
CMD = "python3 examples/api_controller.py --master {master} --node {node}"


def _example():
    spec = importlib.util.spec_from_file_location("api_controller", REPO / "examples" / "api_controller.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_template_renders_every_placeholder() -> None:
    argv = parse_template("kube-router --master={master} --hostname-override {node} --x {node_ip},{pod_cidr} "
                          "--metrics-port {metrics_port} --json {{a}}")
    assert argv is not None and placeholders(argv) == {"master", "node", "node_ip", "pod_cidr", "metrics_port"}
    out = render(argv, master="http://172.18.0.1:8080", node="node-a", node_ip="172.18.0.2",
                 pod_cidr="10.244.0.0/24", metrics_port=9100)
    assert out == ["kube-router", "--master=http://172.18.0.1:8080", "--hostname-override", "node-a", "--x",
                   "172.18.0.2,10.244.0.0/24", "--metrics-port", "9100", "--json", "{a}"]


@pytest.mark.parametrize(("text", "needle"), [
    ("", "must be a non-empty command"),
    ("   ", "must be a non-empty command"),
    ("kube-router --master {apiserver}", "unknown placeholder {apiserver}"),
    ("kube-router --node {node!r}", "unknown placeholder {node!r}"),
    ("kube-router --node {node:>10}", "unknown placeholder {node:>10}"),
    ("kube-router --node {node", "expected '}'"),
    ("kube-router 'unclosed", "cannot split"),
    ("{master} --x", "cannot be a placeholder"),
])
def test_bad_templates_are_one_line_naming_the_flag(text: str, needle: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_template(text)
    msg = str(e.value)
    assert msg.startswith("--binary-cmd: ") and needle in msg and "\n" not in msg


def test_kubeconfig_names_the_master() -> None:
    import yaml

    from harness.engines.binary.template import kubeconfig_text

    argv = parse_template("kube-router --kubeconfig {kubeconfig}")
    assert argv is not None and placeholders(argv) == {"kubeconfig"}
    assert render(argv, master="m", node="n", node_ip="i", pod_cidr="c", kubeconfig="/run/x/k.yaml")[-1] == \
        "/run/x/k.yaml"
    doc = yaml.safe_load(kubeconfig_text("http://172.18.0.1:8080"))
    assert doc["clusters"][0]["cluster"]["server"] == "http://172.18.0.1:8080"
    assert doc["current-context"] == "lab" and doc["contexts"][0]["context"] == {"cluster": "lab", "user": "lab"}


def test_metrics_port_placeholder_needs_the_flag() -> None:
    argv = parse_template("x --metrics-port {metrics_port}")
    assert argv is not None
    with pytest.raises(ConfigError, match=r"^--metrics-port: the command uses \{metrics_port\}"):
        render(argv, master="m", node="n", node_ip="i", pod_cidr="c")
    with pytest.raises(ConfigError, match=r"^--metrics-port: "):
        BinaryEngine().validate(EnforcementConfig(engine="binary", binary_cmd=("python3", "{metrics_port}")))
    with pytest.raises(ConfigError, match=r"^--metrics-port: 70000 is not a port"):
        BinaryEngine().validate(EnforcementConfig(engine="binary", binary_cmd=("python3",), metrics_port=70000))


def test_validate_names_the_flag_for_a_missing_command_or_program() -> None:
    eng = BinaryEngine()
    with pytest.raises(ConfigError, match=r"^--binary-cmd: the binary engine needs a command template"):
        eng.validate(EnforcementConfig(engine="binary"))
    with pytest.raises(ConfigError, match=r"^--binary-cmd: 'no-such-kube-router-x' is not an executable on PATH"):
        eng.validate(EnforcementConfig(engine="binary", binary_cmd=("no-such-kube-router-x", "--master", "{master}")))
    with pytest.raises(ConfigError, match=r"^--binary-cmd: '/nonexistent/kube-router' is not an executable$"):
        eng.validate(EnforcementConfig(engine="binary", binary_cmd=("/nonexistent/kube-router",)))
    eng.validate(EnforcementConfig(engine="binary", binary_cmd=tuple(CMD.split())))  # python3 is on PATH


def test_nodes_need_the_lab() -> None:
    with pytest.raises(HarnessError, match="bind_lab"):
        BinaryEngine().node("node-a", "ns", EnforcementConfig(engine="binary", binary_cmd=("python3",)), None)


def test_flags_select_the_engine_and_reach_the_suite() -> None:
    p = argparse.ArgumentParser()
    options.add_arguments(p)
    cfg = options.from_args(p.parse_args(["--binary-cmd", CMD, "--metrics-port", "9100"]))
    assert cfg.engine == "binary" and cfg.binary_cmd == tuple(CMD.split()) and cfg.metrics_port == 9100
    assert registry.resolve(cfg).name == "binary"
    assert shlex.split(cfg.describe()["binary_cmd"]) == CMD.split()
    from harness.suite import enforcement_args

    args = enforcement_args(cfg)  # what the suite hands its pytest run: it parses back to the same template
    assert parse_template(args[args.index("--binary-cmd") + 1]) == cfg.binary_cmd
    assert args[args.index("--metrics-port") + 1] == "9100"
    with pytest.raises(ConfigError, match=r"^--binary-cmd: unknown placeholder \{nodename\}"):
        options.from_args(p.parse_args(["--binary-cmd", "kube-router --hostname-override {nodename}"]))


def test_marker_names_run_and_node() -> None:
    assert marker("a1b2c3", "node-a") == "NPH_BINARY_MARKER=nph-a1b2c3-binary-node-a"


EXPOSITION = """# HELP kube_router_controller_iptables_sync_time Time it took for controller to sync iptables
# TYPE kube_router_controller_iptables_sync_time histogram
kube_router_controller_iptables_sync_time_bucket{le="0.1"} 3.0
kube_router_controller_iptables_sync_time_bucket{le="+Inf"} 4.0
kube_router_controller_iptables_sync_time_count 4.0
kube_router_controller_iptables_sync_time_sum 0.5
# TYPE api_controller_watch_events counter
api_controller_watch_events_total{resource="pods",type="ADDED"} 7.0
api_controller_watch_events_total{resource="pods",type="MODIFIED"} 2.0
api_controller_watch_events_total{resource="namespaces",type="ADDED"} 5.0
"""


def test_scrape_parses_with_prometheus_client() -> None:
    m = scrape.parse(EXPOSITION)
    assert scrape.value(m, "kube_router_controller_iptables_sync_time_count") == 4.0
    assert scrape.value(m, "api_controller_watch_events_total", resource="pods") == 9.0
    assert scrape.value(m, "api_controller_watch_events_total", resource="pods", type="ADDED") == 7.0
    assert scrape.value(m, "no_such_metric") is None
    with pytest.raises(ValueError):
        scrape.parse("metric{le=\"0.1\" 3\n")


def _pod(name: str, *, ip: str | None = "10.244.0.5", phase: str = "Running", labels=None, node: str = "node-a",
         host_network: bool = False) -> dict:
    st = {"phase": phase, "hostIP": "172.18.0.2"}
    if ip:
        st["podIP"] = ip
    return {"metadata": {"name": name, "namespace": "x", "labels": labels or {"app": "a"}, "resourceVersion": "3"},
            "spec": {"nodeName": node, "hostNetwork": host_network,
                     "containers": [{"name": "c", "ports": [{"containerPort": 80, "protocol": "TCP", "name": "http"}]}]},
            "status": st}


def test_api_controller_filters_pods_as_kube_router_does() -> None:
    ex = _example()
    assert ex.actionable(_pod("a"))
    assert not ex.actionable(_pod("a", ip=None, phase="Pending"))  # no IP yet: ignored
    assert not ex.actionable(_pod("a", phase="Succeeded"))
    assert not ex.actionable(_pod("a", host_network=True))
    assert not ex.pod_relevant(None, _pod("a", ip=None, phase="Pending"))  # an add without IP asks nothing
    assert ex.pod_relevant(_pod("a", ip=None, phase="Pending"), _pod("a"))  # Pending -> Running with IP asks
    assert ex.pod_relevant(_pod("a"), _pod("a", labels={"app": "b"}))  # a relabel asks
    assert not ex.pod_relevant(_pod("a"), _pod("a"))


def test_api_controller_channel_has_one_slot() -> None:
    ch = _example().SyncChannel()
    assert ch.request() and not ch.request()  # the second request while one is pending is dropped
    assert ch.take(0.01) and not ch.take(0.01)


def test_api_controller_builds_the_view_from_api_objects() -> None:
    ex = _example()
    nodes = [{"metadata": {"name": "node-a"}, "spec": {"podCIDR": "10.244.0.0/24"},
              "status": {"addresses": [{"type": "InternalIP", "address": "172.18.0.2"}]}},
             {"metadata": {"name": "bare"}, "spec": {}, "status": {}}]
    nss = [{"metadata": {"name": "x", "labels": {"team": "a"}}}]
    pods = [_pod("a"), _pod("pending", ip=None, phase="Pending"), _pod("elsewhere", node="bare")]
    pols = [{"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
             "metadata": {"name": "deny", "namespace": "x", "uid": "u", "resourceVersion": "9",
                          "creationTimestamp": "2026-01-01T00:00:00Z"}, "spec": {"podSelector": {}}},
            {"metadata": {"name": "broken", "namespace": "x"}, "spec": {"podSelector": {"matchLabels": 3}}}]
    c = ex.build_cluster(nodes, nss, pods, pols)
    assert list(c.nodes) == ["node-a"] and c.nodes["node-a"].node_ip == ipaddress.IPv4Address("172.18.0.2")
    assert c.namespaces["x"].labels == {"team": "a", "kubernetes.io/metadata.name": "x"}
    assert list(c.pods) == ["x/a"] and c.pods["x/a"].named_port("http", "TCP") == 80
    assert list(c.policies) == ["x/deny"]  # the malformed one is skipped (and logged), not fatal


def test_api_controller_is_a_plain_program() -> None:
    import subprocess

    out = subprocess.run([sys.executable, str(REPO / "examples" / "api_controller.py"), "--help"],
                         capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.returncode == 0 and "--master" in out.stdout and "--node" in out.stdout


def _scripted(monkeypatch, states: list[tuple[float, str]]) -> None:
    """``settle.fingerprint`` answering ``states`` by elapsed time: [(from_s, digest), ...]."""
    import time as _time

    from harness.engines.binary import settle

    t0 = _time.monotonic()

    def fp(_netns: str) -> str:
        now = _time.monotonic() - t0
        return [d for at, d in states if at <= now][-1]

    monkeypatch.setattr(settle, "fingerprint", fp)
    monkeypatch.setattr(settle, "POLL_S", 0.005)


def test_settle_waits_through_a_sync_with_gaps(monkeypatch) -> None:
    """The decision logic only (the digests are scripted): changes at 0.05, 0.15 and 0.25 s (gaps
    shorter than stable_s) end the wait on the last state, at least stable_s after it and about
    twice the span of the changes (0.25 + 2 x 0.2 s) when polling saw them all."""
    import time as _time

    from harness.engines.binary import settle

    _scripted(monkeypatch, [(0, "a"), (0.05, "b"), (0.15, "c"), (0.25, "d")])
    t0 = _time.monotonic()
    done = settle.wait_settled("ns", "a", stable_s=0.15, quiet_s=1.0, timeout=5)
    took = _time.monotonic() - t0
    assert done.changed and done.digest == "d" and 0.4 <= took < 3.0, took


def test_settle_ends_a_quiet_wait_and_stops_for_a_dead_controller(monkeypatch) -> None:
    import time as _time

    from harness.engines.binary import settle

    _scripted(monkeypatch, [(0, "a")])
    t0 = _time.monotonic()
    done = settle.wait_settled("ns", "a", stable_s=0.1, quiet_s=0.2, timeout=5)
    assert not done.changed and 0.2 <= _time.monotonic() - t0 < 1.0
    t0 = _time.monotonic()
    done = settle.wait_settled("ns", "a", stable_s=0.1, quiet_s=3, timeout=5, alive=lambda: False)
    assert not done.changed and _time.monotonic() - t0 < 0.5
