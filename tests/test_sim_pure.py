"""The churn workload model, the cost fit and the discrete-event simulation: pure, no root."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from harness.cli import main
from harness.controller import events as ev
from harness.engines.kube_router.events import requests_sync
from harness.errors import ConfigError
from harness.model import churn as ch
from harness.model.cluster import Pod
from harness.model.synthetic import example_cluster
from harness.sim import des
from harness.sim.costfit import (
    CostModel,
    PowerFit,
    ShapeModel,
    StrategyCost,
    default_baseline,
    fit_power,
    fit_sweep,
    load_cost_model,
)
from harness.sim.study import validate

# -- churn: block ------------------------------------------------------------------------------


def test_churn_block_reads_every_field():
    spec = ch.churn_from_dict({"duration_s": 120, "seed": 3, "namespaces": 5,
                               "pods": {"create_per_s": 2, "lifetime_s": 20, "status_update_delay": "uniform:0.1,0.2"},
                               "bursts": {"every_s": 60, "pods": 12, "spread_s": 2},
                               "label_changes_per_s": 0.5, "policy_changes_per_s": 0.1}, "x.yaml")
    assert spec.duration_s == 120 and spec.namespaces == 5 and spec.bursts.pods == 12
    assert str(spec.status_update_delay) == "uniform:0.1,0.2"
    assert spec.creations_per_s == pytest.approx(2.2)


@pytest.mark.parametrize(("data", "field", "words"), [
    ({"duration": 5}, "churn.duration", "unknown field"),
    ({"pods": {"create_per_s": -1}}, "churn.pods.create_per_s", ">= 0"),
    ({"pods": {"lifetime_s": 0}}, "churn.pods.lifetime_s", "> 0"),
    ({"pods": {"status_update_delay": "gamma:1"}}, "churn.pods.status_update_delay", "unknown delay model"),
    ({"bursts": {"every_s": 10, "spread_s": 20}}, "churn.bursts.spread_s", "longer than every_s"),
    ({"bursts": {"pods": True}}, "churn.bursts.pods", "integer"),
    ({"namespaces": 0}, "churn.namespaces", "1-1000"),
    ({"duration_s": 86400, "pods": {"create_per_s": 10000}}, "churn", "exceed the limit"),
    ("fast", "churn", "must be a churn mapping"),
])
def test_churn_block_errors_are_one_line_naming_file_and_field(data, field, words):
    with pytest.raises(ConfigError) as e:
        ch.churn_from_dict(data, "x.yaml")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"x.yaml: {field}") and words in msg


def test_schedule_is_seeded_ordered_and_complete():
    spec = ch.ChurnSpec(duration_s=180, seed=1, namespaces=3, create_per_s=1.0, lifetime_s=10,
                        status_update_delay=ch.Delay("fixed", (0.5,)), bursts=ch.Bursts(60, 7, 2.0),
                        label_changes_per_s=0.2, policy_changes_per_s=0.1)
    ops = ch.schedule(spec)
    assert ops == ch.schedule(spec)  # repeatable
    assert [o.t_s for o in ops] == sorted(o.t_s for o in ops)
    by_kind: dict[str, list[ch.ChurnOp]] = {}
    for o in ops:
        by_kind.setdefault(o.kind, []).append(o)
    creates = {o.index: o for o in by_kind[ch.CREATE]}
    assert {o.index for o in by_kind[ch.IP]} == set(creates) == {o.index for o in by_kind[ch.DELETE]}
    for o in by_kind[ch.IP]:
        assert o.t_s == pytest.approx(creates[o.index].t_s + 0.5)
    bursts = [o for o in by_kind[ch.CREATE] if o.burst]
    assert len(bursts) == 2 * 7  # boundaries at 60 s and 120 s (180 s is the end)
    assert all(60 <= o.t_s < 62 or 120 <= o.t_s < 122 for o in bursts)
    assert {o.namespace for o in ops} == set(spec.namespace_names)
    assert 100 < len(by_kind[ch.CREATE]) < 300  # Poisson 1/s over 180 s + the bursts


def test_place_respects_share_and_keeps_node0_free():
    nodes = [ch.place(i / 1000, 10, 2, 0.5) for i in range(1000)]
    assert 0 not in nodes and set(nodes) == set(range(1, 10))
    assert sum(1 for n in nodes if n in (1, 2)) == 500
    assert set(ch.place(i / 100, 3, 5, 0.3) for i in range(100)) == {1, 2}  # no other nodes: all on clients


def test_topology_accepts_a_churn_block(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("nodes: [{name: node-a}, {name: node-b, kind: virtual}]\n"
                    "churn: {duration_s: 10, pods: {create_per_s: 1}}\n")
    from harness.model.topology import load_topology

    assert len(load_topology(str(path)).nodes) == 2
    assert ch.load_churn(str(path)).create_per_s == 1.0
    (tmp_path / "n.yaml").write_text("nodes: [{name: a}]\n")
    with pytest.raises(ConfigError, match="churn: required field is missing"):
        ch.load_churn(str(tmp_path / "n.yaml"))


def test_sync_requesting_kinds_match_kube_routers_handlers():
    """The simulation's table of which churn events request a sync agrees with the engine's
    filter (harness.engines.kube_router.events.requests_sync) on the real events."""
    c = example_cluster()
    new = Pod("x", "new", "node-a", {"app": "a"}, None)
    assert (ch.CREATE in des.SYNC_REQUESTING) is requests_sync(ev.pod_added(new), c)
    c.pods[new.key] = new
    with_ip = replace(new, ip=c.nodes["node-a"].pod_cidr.network_address + 50)
    assert (ch.IP in des.SYNC_REQUESTING) is requests_sync(ev.pod_updated(with_ip), c)
    c.pods[new.key] = with_ip
    assert (ch.RELABEL in des.SYNC_REQUESTING) is requests_sync(ev.pod_relabeled(with_ip, {"app": "b"}), c)
    assert (ch.DELETE in des.SYNC_REQUESTING) is requests_sync(ev.pod_removed(new.key), c)
    assert (ch.POLICY in des.SYNC_REQUESTING) is requests_sync(ev.policy_updated(c.policies["x/deny-all"]), c)


# -- the cost fit ------------------------------------------------------------------------------


def test_fit_power_recovers_a_known_curve():
    xs = [100, 1000, 10_000, 100_000, 500_000]
    ys = [2 + 0.001 * x ** 1.4 for x in xs]
    f = fit_power(xs, ys)
    assert f.k == pytest.approx(1.4) and f.c0 == pytest.approx(2, rel=0.05)
    assert f.max_abs_residual < 0.01


def test_fit_of_the_shipped_sweep_baseline():
    m = load_cost_model(default_baseline())
    restore = m.cost("legacy", "restore")
    assert restore.phases["ipset_restore_time"].k > 1.2  # super-linear, as measured
    assert all(row["max_residual_pct"] < 35 for row in m.residual_table() if row["cost"].endswith("/restore") and row["phase"] != "render")
    # the measured 100n/5000p/1000np legacy restore sync is 3.09 s (render not included there)
    size = m.shape.size(5000, 1000, 50)
    in_force, total = restore.sync_ms(size)
    assert 2500 < total - restore.render_ms(size) < 3700 and in_force < total
    assert max(abs(r) for r in m.shape.residuals["entries"]) < 0.1
    assert m.cost("legacy", "incremental").sync_ms(size)[1] < total / 10
    with pytest.raises(ConfigError, match="no fitted cost for legacy/fancy"):
        m.cost("legacy", "fancy")


def test_fit_sweep_rejects_other_json():
    with pytest.raises(ConfigError, match="extra.cells"):
        fit_sweep({"suite": "datapath"}, "d.json")


# -- the simulation ----------------------------------------------------------------------------


def _const(ms: float, strategy: str = "restore") -> StrategyCost:
    """A cost of ``ms`` per sync, all of it in the ipset restore (sets and rules in force at the end)."""
    zero = PowerFit("rules", 0.0, 0.0, 1.0)
    phases = {n: zero for n in ("top_level_time", "iptables_save_time", "ipset_save_time", "iptables_restore_time",
                                "stale_cleanup_time")}
    phases["ipset_restore_time"] = PowerFit("entries", ms, 0.0, 1.0)
    return StrategyCost("legacy", strategy, phases, None)


def _model(ms: float = 1000.0, inc_ms: float = 100.0) -> CostModel:
    return CostModel("test", {}, {"legacy/restore": _const(ms), "legacy/incremental": _const(inc_ms, "incremental")},
                     ShapeModel((1, 0, 0, 0), 0.0, (0.0, 0.0)))


def _ev(seq, t, kind, pod=-1):
    return des.SimEvent(seq, t, kind, pod, kind in des.SYNC_REQUESTING)


def _cfg(**kw) -> des.SimConfig:
    base = dict(nodes=3, pods=10, policies=1, client_nodes=1, probe_interval_s=1e-9, cost_sigma=0.0,
                resync_period_s=1e6)
    base.update(kw)
    return des.SimConfig(**base)


def test_one_slot_channel_collapses_a_burst_into_one_follow_up_sync():
    # four pods get their IPs within 0.3 s; a sync costs 1 s
    events = [_ev(i + 1, 0.1 * i, ch.IP, i) for i in range(4)]
    ready = {i: 0.1 * i for i in range(4)}
    res = des.simulate_stream(events, ready, {i: 1 for i in range(4)}, _cfg(), _model())
    s0 = [s for s in res.syncs[0] if s.answered]  # (the ticker's own syncs aside)
    assert [(s.start, s.answered) for s in s0] == [(0.0, 1), (1.0, 3)]
    reach = {p.index: p.reach_s for p in res.pods}
    assert reach[0] == pytest.approx(1.0)  # in the first sync
    assert reach[1] == pytest.approx(2.0 - 0.1)  # waited for the running sync and the next
    assert reach[3] == pytest.approx(2.0 - 0.3)


def test_incremental_is_cheaper_per_event_but_a_batch_costs_per_event():
    events = [_ev(i + 1, 0.0, ch.IP, i) for i in range(3)]
    res = des.simulate_stream(events, {i: 0.0 for i in range(3)}, {i: 1 for i in range(3)},
                              _cfg(strategy="incremental"), _model(1000, 100))
    s = res.syncs[0][0]
    assert s.answered == 3 and not s.full and s.end == pytest.approx(0.3)


def test_lister_skew_leaves_an_event_for_the_next_request():
    # the IP is delivered 0.05 s before a sync starts that lags the handler by 0.1 s: not in it
    events = [_ev(1, 0.0, ch.IP, 0), _ev(2, 5.0, ch.POLICY)]
    res = des.simulate_stream(events, {0: 0.0}, {0: 1}, _cfg(lister_skew_s=0.1), _model(100))
    assert res.pods[0].reach_s == pytest.approx(5.1)  # only the policy event's sync picked it up
    res = des.simulate_stream(events, {0: 0.0}, {0: 1}, _cfg(), _model(100))
    assert res.pods[0].reach_s == pytest.approx(0.1)


def test_the_ticker_feeds_the_same_channel():
    # with skew and no later event, only the periodic tick's request picks the pod up
    events = [_ev(1, 0.0, ch.IP, 0)]
    res = des.simulate_stream(events, {0: 0.0}, {0: 1}, _cfg(lister_skew_s=0.1, resync_period_s=2.0), _model(100))
    assert 0.1 < res.pods[0].reach_s <= 2.1 + 1e-9
    assert any(s.full for s in res.syncs[0])


def test_ipset_mutex_delays_the_sync():
    m = des.Mutex(every_s=10.0, hold_s=3.0)
    assert m.free_at(1.0, 0.0) == 3.0 and m.free_at(4.0, 0.0) == 4.0 and m.free_at(11.0, 0.0) == 13.0
    events = [_ev(1, 0.0, ch.IP, 0)]
    free = des.simulate_stream(events, {0: 0.0}, {0: 1}, _cfg(), _model(100)).pods[0].reach_s
    held = des.simulate_stream(events, {0: 0.0}, {0: 1}, _cfg(mutex=des.Mutex(1e6, 5e5)), _model(100)).pods[0].reach_s
    assert held >= free  # the hold's phase is drawn; never faster with the mutex


def test_fitted_simulation_grows_with_cluster_size_and_incremental_helps():
    m = load_cost_model(default_baseline())
    spec = ch.ChurnSpec(duration_s=120, seed=2, create_per_s=2, lifetime_s=30, bursts=ch.Bursts(60, 20, 2))
    small = des.simulate(spec, des.SimConfig(10, 300, 10, client_nodes=2), m).summary()
    big = des.simulate(spec, des.SimConfig(100, 10000, 2000, client_nodes=2), m).summary()
    inc = des.simulate(spec, des.SimConfig(100, 10000, 2000, strategy="incremental", client_nodes=2), m).summary()
    assert small["reach"]["p99"] < 1.0 < big["reach"]["p99"]
    assert inc["reach"]["p50"] < big["reach"]["p50"] / 2
    assert big["server_node_syncs"]["busy_fraction"] > 0.9  # a full sync is always running


def test_validate_replays_a_run_against_itself():
    """A 'kernel run' made from the simulation's own output validates with ~0 error (plumbing)."""
    m = load_cost_model(default_baseline())
    spec = ch.ChurnSpec(duration_s=30, seed=4, create_per_s=2, lifetime_s=10, namespaces=2)
    events, ready, slots = des.events_of(spec)
    cfg = replace(_cfg(nodes=6, pods=24, policies=9, namespaces=23, client_nodes=1, client_share=1.0,
                       probe_interval_s=0.01), cost_sigma=0.1, delivery=ch.Delay("fixed", (0.05,)))
    place = {i: ch.place(slots[i], 6, 1, 1.0) for i in ready}
    res = des.simulate_stream(events, ready, place, cfg, m)
    played = [{"t": e.t_s, "kind": e.kind, "pod": e.pod, "node": place.get(e.pod, -1),
               **({"ready": ready[e.pod]} if e.kind == ch.CREATE else {})} for e in events]
    s = res.summary()
    run = {"config": {"nodes": 6, "pods_per_node": 4, "policies": 6, "real_nodes": 2, "client_share": 1.0,
                      "strategy": "restore", "backend": "legacy", "delivery": "fixed:0.05", "resync_period_s": 1e6,
                      "rate": 100.0, "seed": 0},
           "churn": spec.describe(), "played": played,
           "pods": [{"index": p.index, "reach_s": p.reach_s, "fail_open_s": p.fail_open_s} for p in res.pods],
           "reach": s["reach"], "fail_open": s["fail_open"],
           "syncs": {"node-000": {"mean_s": s["server_node_syncs"]["mean_s"]}}}
    v = validate(run, m)
    assert v["cost_scale"] == pytest.approx(1.0, rel=0.05)
    assert abs(v["calibrated"]["reach"]["err_p50"]) < 0.1


def test_simulate_cli_run_and_grid_and_errors(tmp_path, capsys):
    assert main(["simulate", "run", "--nodes", "10", "--pods", "300", "--policies", "10", "--duration", "60",
                 "--json", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert "restore" in out and "incremental" in out
    assert json.loads((tmp_path / "r.json").read_text())[0]["reach"]["n"] > 10
    (tmp_path / "bad.json").write_text("{}")
    assert main(["simulate", "validate", str(tmp_path / "bad.json")]) == 2
    err = capsys.readouterr().err
    assert "bad.json: played" in err and err.count("\n") == 1
    assert main(["simulate", "run", "--ipset-mutex", "1,2"]) == 2


def test_grid_plot_writes_png(tmp_path):
    from harness.sim.plots import plot_grid, plot_validation

    rows = [{"nodes": n, "pods": n * 50, "policies": n, "churn": c, "strategy": s, "reach_p99": n / 10}
            for n in (10, 100) for c in ("low", "high") for s in ("restore", "incremental")]
    assert plot_grid(rows, tmp_path / "g.png").stat().st_size > 1000
    err = {"reach": {"err_p50": 0.1, "err_p99": -0.1}, "fail_open": {"err_p50": 0.0, "err_p99": None}}
    assert plot_validation([{"label": "a", "baseline": err, "calibrated": err}], tmp_path / "v.png").exists()


def test_the_shipped_churn_example_reads_and_simulates():
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "examples" / "churn-cronjobs.yaml"
    spec = ch.load_churn(str(path))
    assert spec.bursts.pods == 30 and spec.namespaces == 6
    s = des.simulate(spec, des.SimConfig(20, 400, 20, client_nodes=2), load_cost_model(default_baseline())).summary()
    assert s["reach"]["n"] > 150 and s["reach"]["unfinished"] == 0
