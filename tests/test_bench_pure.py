"""Pure tests of the bench package: baseline JSON, statistics, the compare rule, sweep and
datapath helpers. No root, no kernel."""

from __future__ import annotations

import json

import pytest

from harness.bench import baseline as bl
from harness.bench.baseline import Baseline, Metric
from harness.bench.canaries import restore_text
from harness.bench.commands import main as cli_main
from harness.bench.compare import compare, compare_metric, render
from harness.bench.datapath import ruleset_text, slope
from harness.bench.sweep import Point, over_threshold, parse_point
from harness.errors import ConfigError


def _b(suite: str = "canaries", **metrics: list[float]) -> Baseline:
    b = Baseline(suite, machine={"kernel": "6.18.0", "cpu_model": "test cpu", "cpus": 2})
    for name, values in metrics.items():
        b.add(name, "ms", values)
    return b


def test_metric_statistics():
    m = Metric("ms", [5.0, 1.0, 3.0, 2.0, 4.0])
    assert (m.median, m.min, m.max, m.n) == (3.0, 1.0, 5.0, 5)
    d = m.as_dict()
    assert d["median"] == 3.0 and d["min"] == 1.0 and d["max"] == 5.0 and d["n"] == 5
    assert m.summary() == "3.00 ms (1.00-5.00, n=5)"


def test_baseline_round_trip(tmp_path):
    b = _b(a=[1, 2, 3, 4, 5])
    b.add("pps", "pps", [100, 110, 90, 95, 105], better="higher")
    b.versions = {"nft": {"iptables": "iptables v1.8.9 (nf_tables)", "ipset": "ipset v7.17"}}
    b.params = {"repeat": 5}
    bl.stamp(b, machine={"kernel": "6.18.0"})
    p = bl.save(b, tmp_path / "sub" / "x.json")
    data = json.loads(p.read_text())
    assert data["schema"] == 1 and data["suite"] == "canaries" and data["metrics"]["a"]["median"] == 3
    assert len(data["load"]) == 3 and data["created"].endswith("Z")
    back = bl.load(p)
    assert back.metrics["a"].values == [1, 2, 3, 4, 5]
    assert back.metrics["pps"].better == "higher"
    assert back.versions == b.versions and back.machine == {"kernel": "6.18.0"}


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d.update(schema=9), "schema"),
    (lambda d: d.pop("suite"), "suite"),
    (lambda d: d.update(metrics=[]), "metrics"),
    (lambda d: d["metrics"]["a"].update(values=[]), "metrics.a.values"),
    (lambda d: d["metrics"]["a"].update(values=["x"]), "metrics.a.values"),
    (lambda d: d["metrics"]["a"].update(better="up"), "metrics.a.better"),
])
def test_baseline_errors_name_file_and_field(tmp_path, mutate, field):
    data = _b(a=[1, 2]).as_dict()
    mutate(data)
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(data))
    with pytest.raises(ConfigError) as e:
        bl.load(p)
    assert str(e.value).startswith(f"{p}: {field}")


def test_baseline_not_json_and_missing(tmp_path):
    p = tmp_path / "x.json"
    p.write_text("{nope")
    with pytest.raises(ConfigError, match="not JSON: line 1"):
        bl.load(p)
    with pytest.raises(ConfigError, match="cannot read baseline"):
        bl.load(tmp_path / "missing.json")


def test_compare_regressed_needs_threshold_and_separated_ranges():
    base = Metric("ms", [10, 11, 12, 10.5, 11.5])
    # 2x slower, ranges apart: regressed
    assert compare_metric("t", base, Metric("ms", [21, 22, 23, 22, 21])).verdict == "regressed"
    # 2x slower median, but one NEW repeat as fast as BASE's worst: noisy, not a failure
    assert compare_metric("t", base, Metric("ms", [12, 22, 23, 22, 21])).verdict == "noisy"
    # ... unless strict
    assert compare_metric("t", base, Metric("ms", [12, 22, 23, 22, 21]), strict=True).verdict == "regressed"
    # 1.3x slower, ranges apart: below the threshold
    assert compare_metric("t", base, Metric("ms", [14, 14.5, 15, 14.2, 14.8])).verdict == "ok"
    assert compare_metric("t", base, Metric("ms", [14, 14.5, 15, 14.2, 14.8]), threshold=1.2).verdict == "regressed"
    # 2x faster: improved
    assert compare_metric("t", base, Metric("ms", [5, 5.5, 6, 5.2, 5.1])).verdict == "improved"


def test_compare_higher_is_better():
    base = Metric("pps", [1000, 1010, 990], better="higher")
    r = compare_metric("pps", base, Metric("pps", [500, 490, 510], better="higher"))
    assert r.verdict == "regressed" and r.ratio == pytest.approx(0.5) and r.slowdown == pytest.approx(2.0)
    assert compare_metric("pps", base, Metric("pps", [2100, 2000, 2050], better="higher")).verdict == "improved"


def test_compare_missing_and_fail_missing():
    c = compare(_b(a=[1, 1], b=[2, 2]), _b(a=[1, 1]))
    assert [r.verdict for r in c.rows] == ["ok", "missing"] and not c.failed
    assert compare(_b(a=[1, 1], b=[2, 2]), _b(a=[1, 1]), fail_missing=True).failed
    with pytest.raises(ValueError):
        compare(_b(a=[1]), _b(a=[1]), threshold=1.0)


def test_compare_render_lists_every_metric():
    c = compare(_b(a=[1, 1.1, 0.9], b=[2, 2.1, 1.9]), _b(a=[1, 1.05, 0.95], b=[9, 9.5, 8.5]))
    text = render(c)
    assert "REGRESSED" in text and "4.50x" in text and "1 metric(s) regressed" in text
    assert c.failed and [r.name for r in c.regressed] == ["b"]


def test_compare_cli_exit_codes(tmp_path, capsys):
    base, same, slow, other = (tmp_path / f"{n}.json" for n in ("base", "same", "slow", "other"))
    bl.save(_b(a=[10, 11, 12, 10, 11]), base)
    bl.save(_b(a=[10.5, 11, 11.5, 10, 12]), same)
    bl.save(_b(a=[30, 31, 32, 30, 33]), slow)
    bl.save(_b("sweep", a=[1, 2]), other)
    assert cli_main(["compare", str(base), str(same)]) == 0
    assert cli_main(["compare", str(base), str(slow)]) == 1
    assert "REGRESSED" in capsys.readouterr().out
    assert cli_main(["compare", str(base), str(slow), "--threshold", "5"]) == 0
    assert cli_main(["compare", str(base), str(other)]) == 2
    assert "suite: is 'sweep'" in capsys.readouterr().err
    assert cli_main(["compare", str(base), str(tmp_path / "none.json")]) == 2


def test_parse_point():
    assert parse_point("100x50x1000") == Point(100, 50, 1000)
    assert Point(100, 50, 1000).pods == 5000 and Point(100, 50, 1000).label == "100n/5000p/1000np"
    for bad in ("100x50", "axbxc", "0x5x5", "300x1x1"):
        with pytest.raises(ValueError):
            parse_point(bad)


def _cell(point, pods, ms, extrapolated=False, backend="nft", strategy="restore"):
    return {"point": point, "pods": pods, "backend": backend, "strategy": strategy, "median_ms": ms,
            "extrapolated": extrapolated}


def test_over_threshold_interpolates_in_pods():
    cells = [_cell("a", 1000, 500), _cell("b", 3000, 1500), _cell("c", 5000, 2500),
             _cell("a", 1000, 3000, strategy="per-rule"), _cell("a", 1000, 10, strategy="netlink"),
             _cell("b", 3000, None, strategy="netlink")]
    out = over_threshold(cells, 2000)
    assert out["nft restore"].startswith("between b and c (~4,000 pods")
    assert out["nft per-rule"].startswith("already at a")
    assert out["nft netlink"] == "not reached up to a (10 ms)"


def test_slope():
    assert slope([0, 1000, 10000], [5, 15, 105]) == pytest.approx(0.01)
    assert slope([5, 5], [1, 2]) is None


def test_datapath_ruleset_text():
    sets, table = ruleset_text("rules", 3)
    assert sets == "" and table.count("-A FORWARD -s 10.128.0.") == 3 and table.endswith("COMMIT\n")
    sets, table = ruleset_text("ipset", 70000)
    assert sets.count("\nadd dp-block ") == 70000 and "maxelem 131072" in sets
    assert table.count("-A FORWARD") == 1 and "--match-set dp-block src -j DROP" in table
    assert ruleset_text("ipset", 0) == ("", ruleset_text("rules", 0)[1])


def test_canary_restore_text_distinct_rules():
    text = restore_text(300)
    rules = [ln for ln in text.splitlines() if ln.startswith("-A CANARY")]
    assert len(rules) == 300 == len(set(rules))


def test_compare_floor_ignores_changes_near_zero(tmp_path):
    base = Metric("ns", [0.01, 0.02, 0.0], floor=1.0)
    assert compare_metric("x", base, Metric("ns", [0.5, 0.6, 0.4], floor=1.0)).verdict == "ok"
    assert compare_metric("x", base, Metric("ns", [-0.3, -0.2, -0.4], floor=1.0)).verdict == "ok"
    assert compare_metric("x", base, Metric("ns", [5, 6, 5.5], floor=1.0)).verdict == "regressed"
    b = _b()
    b.metrics["x"] = base
    back = bl.from_dict(json.loads(json.dumps(b.as_dict())))
    assert back.metrics["x"].floor == 1.0


def test_compare_ungated_metric_never_fails():
    base, new = _b(), _b()
    base.add("pps", "pps", [1000, 1010, 990], better="higher", gate=False)
    new.add("pps", "pps", [300, 310, 290], better="higher", gate=False)
    c = compare(base, new)
    assert c.rows[0].verdict == "regressed (info)" and not c.failed
    assert bl.from_dict(json.loads(json.dumps(new.as_dict()))).metrics["pps"].gate is False
