"""Kernel smoke tests of the bench suites at tiny sizes (seconds): each suite really programs and
measures the kernel, checks what it programmed, saves a loadable baseline, and leaves nothing
behind (no namespace, no change in the root namespace)."""

from __future__ import annotations

import subprocess
import uuid

import pytest

from harness.bench import baseline as bl
from harness.bench.canaries import SMOKE_SIZES, run_canaries
from harness.bench.commands import format_datapath, format_metrics, format_sweep
from harness.bench.datapath import SERVER_IP, DatapathConfig, pod_pair, run_datapath
from harness.bench.plots import plot_datapath, plot_sweep
from harness.bench.sweep import SMOKE_POINTS, SweepConfig, run_sweep
from harness.errors import EnvironmentProblem
from harness.kernel import netns
from harness.kernel.backends import require_tools

pytestmark = pytest.mark.kernel


@pytest.fixture(autouse=True)
def tools():
    try:
        require_tools("nft")
        require_tools("legacy")
    except EnvironmentProblem as e:
        pytest.skip(str(e))


@pytest.fixture
def run():
    rid = uuid.uuid4().hex[:8]
    root_before = _root_state()
    yield rid
    assert netns.list_names(f"nph-{rid}") == [], "a bench namespace was left behind"
    assert _root_state() == root_before, "the root namespace changed"


def _root_state() -> tuple[str, ...]:
    out = []
    for argv in (["ip", "-o", "link"], ["ip", "-o", "addr"], ["iptables-nft-save"], ["iptables-legacy-save"]):
        text = subprocess.run(argv, capture_output=True, text=True).stdout
        out.append("\n".join(ln.split(" qdisc")[0] for ln in text.splitlines()
                             if not ln.startswith("#") and "nph-" not in ln and "veth" not in ln))
    return tuple(out)


def test_canaries_smoke(run, tmp_path):
    b = run_canaries(run, sizes=SMOKE_SIZES, repeat=2, verbose=False)
    for key in ("iptables_calls.legacy.per_op_ms", "iptables_calls.nft.per_op_ms", "ipset_swap.ipset.per_op_us",
                "iptables_restore.legacy.restore_per_1k_ms", "iptables_restore.nft.save_ms",
                "ipset_restore.ipset.per_1k_ms"):
        m = b.metrics[key]
        assert m.n == 2 and m.min > 0, key
    total = b.metrics["iptables_calls.legacy.total_ms"]
    per_op = b.metrics["iptables_calls.legacy.per_op_ms"]
    assert per_op.values == pytest.approx([v / SMOKE_SIZES.calls for v in total.values])
    bl.stamp(b, machine={"kernel": "test"})
    back = bl.load(bl.save(b, tmp_path / "c.json"))
    assert set(back.metrics) == set(b.metrics)
    assert "ipset_swap.ipset.per_op_us" in format_metrics(back, "t")


def test_sweep_smoke(run, tmp_path):
    cfg = SweepConfig(points=SMOKE_POINTS[:1], repeat=2, max_execs=100_000, verbose=False)
    b = run_sweep(run, cfg)
    cells = b.extra["cells"]
    assert {(c["backend"], c["strategy"]) for c in cells} == {
        (be, s) for be in ("legacy", "nft") for s in ("restore", "netlink", "incremental", "per-rule")}
    rendered = b.extra["render"][0]
    for c in cells:
        assert c["median_ms"] > 0 and not c["skipped"], c
        if c["strategy"] == "incremental":
            assert 0 < c["rules"] < rendered["rules"]  # only what the added pod changed
        else:
            assert (c["rules"], c["entries"]) == (rendered["rules"], rendered["entries"])
            assert c["runs"] == 2 and c["phases_ms"]["iptables_save_time"] > 0
    assert set(b.extra["over_2s"]) == {f"{be} {s}" for be in ("legacy", "nft")
                                       for s in ("restore", "netlink", "incremental", "per-rule")}
    assert "where a full sync passes 2 s" in format_sweep(b)
    assert plot_sweep(b, tmp_path / "s.png").stat().st_size > 10_000


def test_sweep_per_rule_cap_extrapolates(run):
    cfg = SweepConfig(points=SMOKE_POINTS, backends=("legacy",), strategies=("per-rule",), repeat=1,
                      max_execs=300, verbose=False)
    b = run_sweep(run, cfg)
    small, big = b.extra["cells"]
    assert not small["extrapolated"] and small["execs"] <= 300
    assert big["extrapolated"] and big["runs"] == 0 and "execs > max 300" in big["skipped"]
    assert big["median_ms"] == pytest.approx(small["median_ms"] / small["execs"] * big["execs"])


def test_sweep_budget_stops_with_a_note(run):
    b = run_sweep(run, SweepConfig(points=SMOKE_POINTS, strategies=("restore",), backends=("nft",), repeat=1,
                                   budget_s=0.0, verbose=False))
    assert b.extra["cells"] == [] and "budget" in b.notes[0]


def test_datapath_smoke(run, tmp_path):
    cfg = DatapathConfig(counts=(0, 300), repeat=2, pings=30, window_s=0.1, verbose=False)
    b = run_datapath(run, cfg)
    rows = b.extra["rows"]
    assert [(r["backend"], r["mode"], r["rules"]) for r in rows] == [
        (be, m, n) for be in ("legacy", "nft") for m in ("rules", "ipset") for n in (0, 300)]
    for r in rows:
        assert len(r["rtt_us"]) == 2 and r["lost"] == 0 and min(r["pps"]) > 0, r
        assert 1 < min(r["rtt_us"]) < 100_000
    assert set(b.extra["ns_per_rule"]) >= {"legacy rules (RTT)", "nft ipset (pps)"}
    assert "ns per rule" in format_datapath(b)
    assert plot_datapath(b, tmp_path / "d.png").stat().st_size > 10_000


def test_datapath_rules_are_in_the_path(run):
    """The testbed forwards through the node's FORWARD chain: a matching DROP there stops the flow."""
    from harness.bench.datapath import _udp_socket, ping_batch

    with pod_pair(run, "x") as tb:
        sock = _udp_socket(tb.client)
        try:
            sock.connect((SERVER_IP, 9000))
            assert len(ping_batch(sock, 5)[0]) == 5
            netns.run(tb.node, ["iptables-legacy", "-w", "-A", "FORWARD", "-s", "10.244.1.2/32", "-j", "DROP"])
            rtts, lost = ping_batch(sock, 2, timeout_s=0.2)
            assert (rtts, lost) == ([], 2)
        finally:
            sock.close()


def test_sweep_cell_budget_drops_slow_cells(run):
    b = run_sweep(run, SweepConfig(points=SMOKE_POINTS, backends=("legacy",), strategies=("restore", "per-rule"),
                                   repeat=1, cell_budget_s=1e-6, max_execs=100_000, verbose=False))
    first, second = b.extra["cells"][:2], b.extra["cells"][2:]
    assert all(c["runs"] == 1 and not c["skipped"] for c in first)
    assert all("cell budget" in c["skipped"] and c["runs"] == 0 for c in second)
    restore2, per_rule2 = second
    assert restore2["median_ms"] is None  # not run, nothing to extrapolate from
    assert per_rule2["extrapolated"] and per_rule2["median_ms"] > first[1]["median_ms"]
    assert any("cell budget" in n for n in b.notes)


def test_cli_canaries_smoke_then_compare(run, tmp_path, capsys):
    from harness.bench.commands import main

    out = tmp_path / "c.json"
    assert main(["bench", "canaries", "--smoke", "--repeat", "1", "--quiet", "--canary", "ipset_swap",
                 "--out", str(out)]) == 0
    b = bl.load(out)
    assert b.suite == "canaries" and b.machine["kernel"] and b.versions["nft"]["ipset"].startswith("ipset v")
    assert set(b.metrics) == {"ipset_swap.ipset.per_op_us", "ipset_swap.ipset.total_ms"}
    assert main(["compare", str(out), str(out)]) == 0
    assert "no regression" in capsys.readouterr().out
