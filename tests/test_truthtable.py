"""Truth tables: e2e-style rendering, expectations from {default, exceptions}, and diffs."""

from __future__ import annotations

import ipaddress
import textwrap

import pytest
import yaml

from harness.analysis.truthtable import (
    TruthTable,
    build_expectation,
    diff,
    expected_table,
    parse_cell,
    table_from_expectation,
)
from harness.errors import ConfigError
from harness.model.cluster import Cluster, Namespace, Node, Pod
from harness.model.policy import LabelSelector, NetworkPolicy, PolicyPeer, PolicyRule

PODS = ["x/a", "x/b", "y/a"]


def small_cluster() -> Cluster:
    c = Cluster()
    c.nodes["n1"] = Node("n1", ipaddress.IPv4Address("172.18.0.2"), ipaddress.IPv4Network("10.244.0.0/24"))
    for ns in "xy":
        c.namespaces[ns] = Namespace(ns, {"ns": ns})
    for key in PODS:
        ns, name = key.split("/")
        c.add_pod(Pod(ns, name, "n1", {"pod": name}))
    return c


def test_render_matches_e2e_layout():
    t = TruthTable(PODS, True, ignore_self=True)
    t.set("y/a", "x/a", False)
    t.set("x/b", "y/a", "timeout")
    assert t.render() == textwrap.dedent("""\
        -    x/a  x/b  y/a
        x/a  -    .    .
        x/b  .    -    X
        y/a  X    .    -""")
    assert t.cell("x/b", "y/a").detail == "timeout"
    assert t.counts() == {"allow": 4, "deny": 2, "skipped": 3, "unknown": 0}


def test_unknown_cells_and_completeness():
    t = TruthTable(PODS)
    assert not t.is_complete
    assert t.render().splitlines()[1] == "x/a  ?    ?    ?"
    for s in PODS:
        t.set_all_from(s, "allow")
    assert t.is_complete
    t2 = TruthTable(["ns/long-pod-name", "x/a"], False)
    assert t2.render().splitlines() == [
        "-                 ns/long-pod-name  x/a",
        "ns/long-pod-name  X                 X",
        "x/a               X                 X",
    ]


def test_cell_values():
    assert parse_cell(True) == (True, None)
    assert parse_cell("deny") == (False, None)
    assert parse_cell("Refused") == (False, "refused")
    assert parse_cell("connected") == (True, "connected")
    with pytest.raises(ValueError, match="unknown cell value 'maybe'"):
        parse_cell("maybe")
    t = TruthTable(PODS)
    with pytest.raises(KeyError, match="source 'q/a' is not in this truth table"):
        t.set("q/a", "x/a", True)


def test_expected_table_from_oracle():
    c = small_cluster()
    c.policies["x/p"] = NetworkPolicy("x", "p", LabelSelector(), ingress=(
        PolicyRule(peers=(PolicyPeer(pod_selector=LabelSelector()),)),))
    t = expected_table(c, None, 80)
    assert t.pods == ("x/a", "x/b", "y/a")
    assert t.render() == textwrap.dedent("""\
        -    x/a  x/b  y/a
        x/a  -    .    .
        x/b  .    -    .
        y/a  X    X    -""")
    assert t.cell("y/a", "x/a").detail.startswith("ingress: x/a isolated for ingress by x/p; no rule allows")
    assert expected_table(c, PODS, 80, ignore_self=False).get("x/a", "x/a") is True


def test_build_expectation_with_patterns():
    t = build_expectation(PODS, "allow", [
        {"from": "*", "to": "x/*", "verdict": "deny"},
        ("x/b", "x/a", True),
    ])
    assert t.render() == textwrap.dedent("""\
        -    x/a  x/b  y/a
        x/a  -    X    .
        x/b  .    -    .
        y/a  X    X    -""")
    with pytest.raises(ValueError, match="matches no pair"):
        build_expectation(PODS, "deny", [("z/*", "x/a", "allow")])


def test_table_from_case_file_expectation():
    spec = yaml.safe_load("""
        default: allow
        exceptions:
        - {from: y/a, to: x/a, verdict: deny}
        - {from: x/*, to: y/a, verdict: deny}
    """)
    t = table_from_expectation(spec, PODS, source="cases/c.yaml", path="steps[0].expect")
    assert t.render() == textwrap.dedent("""\
        -    x/a  x/b  y/a
        x/a  -    .    X
        x/b  .    -    X
        y/a  X    .    -""")
    # round trip through the case-file form
    assert t.as_expectation() == {"default": "allow", "exceptions": [
        {"from": "x/a", "to": "y/a", "verdict": "deny"},
        {"from": "x/b", "to": "y/a", "verdict": "deny"},
        {"from": "y/a", "to": "x/a", "verdict": "deny"},
    ]}
    assert table_from_expectation(t.as_expectation(), PODS) == t


@pytest.mark.parametrize("spec, message", [
    ({"default": "maybe"}, "cases/c.yaml: steps[0].expect.default: 'maybe' is not one of allow, deny"),
    ({"default": "allow", "exceptions": [{"from": "q/a", "to": "x/a", "verdict": "deny"}]},
     "cases/c.yaml: steps[0].expect.exceptions[0].from: 'q/a' matches no pod of the topology"),
    ({"default": "allow", "exceptions": [{"from": "x/a", "to": "x/b", "verdict": "drop"}]},
     "cases/c.yaml: steps[0].expect.exceptions[0].verdict: 'drop' is not one of allow, deny"),
    ({"default": "allow", "exceptions": [{"from": "x/a", "to": "x/b", "verdit": "deny"}]},
     "cases/c.yaml: steps[0].expect.exceptions[0].verdict: required field is missing"),
    ({"default": "allow", "exception": []},
     "cases/c.yaml: steps[0].expect.exception: unknown field (did you mean 'exceptions'?)"),
])
def test_table_from_expectation_errors(spec, message):
    with pytest.raises(ConfigError) as e:
        table_from_expectation(spec, PODS, source="cases/c.yaml", path="steps[0].expect")
    assert str(e.value) == message


def test_diff_marks_mismatches_and_lists_them():
    expected = build_expectation(PODS, "allow", [("y/a", "x/*", "deny")])
    observed = TruthTable(PODS, ignore_self=True)
    for s, d, _ in observed.pairs():
        if s != d:
            observed.set(s, d, "connected")
    observed.set("y/a", "x/a", "refused")
    observed.set("x/a", "y/a", "timeout")  # allowed expected, observed denied
    # y/a -> x/b: expected deny, observed connected (fail-open)
    d = diff(expected, observed)
    assert d.count == 2 and not d.ok and d
    assert [str(m) for m in d.mismatches] == [
        "x/a -> y/a: expected allow, observed deny (timeout)",
        "y/a -> x/b: expected deny, observed allow (connected)",
    ]
    assert d.render() == textwrap.dedent("""\
        -    x/a  x/b  y/a
        x/a  -    .    X
        x/b  .    -    .
        y/a  .    X    -
        x/a -> y/a: expected allow, observed deny (timeout)
        y/a -> x/b: expected deny, observed allow (connected)""")
    assert d.summary() == "reachability: correct:4, incorrect:2, ignored:3, result=MISMATCH"
    report = d.report()
    assert report.startswith("expected:\n  -    x/a  x/b  y/a\n")
    assert "observed:\n" in report and "comparison:\n" in report and report.endswith("result=MISMATCH")


def test_diff_ignores_self_and_flags_missing_observations():
    expected = build_expectation(PODS, "deny", ignore_self=True)
    observed = TruthTable(PODS, False)  # self cells observed (denied) but ignored by the expectation
    observed.set("x/a", "x/a", True)
    d = diff(expected, observed)
    assert d.ok and d.count == 0 and d.ignored == 3 and d.correct == 6 and not d
    observed2 = TruthTable(PODS, False)
    observed2.unset("x/b", "y/a")
    d2 = diff(expected, observed2)
    assert [str(m) for m in d2.mismatches] == ["x/b -> y/a: expected deny, observed nothing"]
    with pytest.raises(ValueError, match="different pods"):
        diff(expected, TruthTable(["x/a"]))
