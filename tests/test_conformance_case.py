"""Conformance case files: structure, strict validation, placeholders and step semantics (no root)."""

from __future__ import annotations

import ipaddress
import textwrap

import pytest

from harness.conformance.case import (
    Expectation,
    ExpectRule,
    apply_step,
    dry_run,
    load_case,
    parse_case,
    probe_pods,
    substitute,
)
from harness.errors import ConfigError
from harness.model.cluster import Cluster, ContainerPort, Namespace, Node, Pod


def e2e_cluster() -> Cluster:
    """A hand-built x/y/z x a/b/c cluster on two nodes (like topologies/k8s-e2e.yaml)."""
    c = Cluster(name="t")
    for i, name in enumerate(("n1", "n2")):
        c.nodes[name] = Node(name, ipaddress.IPv4Address(f"172.18.0.{i + 2}"),
                             ipaddress.IPv4Network(f"10.244.{i}.0/24"))
    ports = [ContainerPort(p, proto, f"serve-{p}-{proto.lower()}") for p in (80, 81) for proto in ("TCP", "UDP")]
    for ns in "xyz":
        c.namespaces[ns] = Namespace(ns, {"ns": ns})
        for j, pod in enumerate("abc"):
            c.add_pod(Pod(ns, pod, ("n1", "n2")[j % 2], {"pod": pod}, ports=list(ports)))
    return c


POLICY = {
    "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
    "metadata": {"name": "deny", "namespace": "x"},
    "spec": {"podSelector": {}},
}


def write(tmp_path, text: str) -> str:
    p = tmp_path / "case.yaml"
    p.write_text(textwrap.dedent(text))
    return str(p)


def test_parse_minimal_case_defaults():
    case = parse_case({"name": "n", "topology": "k8s-e2e", "steps": [{"description": "d"}]}, "c.yaml")
    step = case.steps[0]
    assert (step.probe.port, step.probe.protocol, step.ignore_self, step.expect) == (80, "TCP", True, None)
    assert not step.changes_cluster
    assert case.topology_ref == "k8s-e2e"


def test_parse_full_step():
    case = parse_case({
        "name": "n", "topology": "k8s-e2e",
        "steps": [{
            "description": "d", "apply": [POLICY], "delete": ["x/old"],
            "relabel": [{"kind": "Pod", "name": "x/a", "labels": {"pod": "z"}}],
            "probe": {"port": 81, "protocol": "UDP"}, "ignore_self": False,
            "expect": {"default": "allow", "exceptions": [{"from": "*", "to": "x/*", "verdict": "deny"},
                                                           {"from": "x/b", "to": "x/a", "verdict": "allow"}]},
        }],
    }, "c.yaml")
    step = case.steps[0]
    assert step.changes_cluster and step.probe.port == 81 and step.probe.protocol == "UDP"
    assert step.relabel[0].labels == {"pod": "z"}
    assert step.expect.verdict("y/a", "x/a") == "deny"
    assert step.expect.verdict("x/b", "x/a") == "allow"  # the last matching exception wins
    assert step.expect.verdict("x/a", "y/a") == "allow"


@pytest.mark.parametrize(("data", "message"), [
    ({"name": "n", "topology": "t", "steps": [{"description": "d"}], "colour": 1},
     "c.yaml: colour: unknown field"),
    ({"name": "n", "topology": "t"}, "c.yaml: steps: required field is missing"),
    ({"name": "n", "topology": "t", "steps": []}, "c.yaml: steps: needs at least one step"),
    ({"name": "n", "topology": 3, "steps": [{"description": "d"}]}, "c.yaml: topology: must be a string"),
    ({"name": "n", "topology": "t", "steps": [{}]}, "c.yaml: steps[0].description: required field is missing"),
    ({"name": "n", "topology": "t", "steps": [{"description": "d", "probes": {}}]},
     "c.yaml: steps[0].probes: unknown field (did you mean 'probe'?)"),
    ({"name": "n", "topology": "t", "steps": [{"description": "d", "probe": {"port": 0}}]},
     "c.yaml: steps[0].probe.port: 0 is not a port number"),
    ({"name": "n", "topology": "t", "steps": [{"description": "d", "probe": {"port": "80"}}]},
     "c.yaml: steps[0].probe.port: must be an integer"),
    ({"name": "n", "topology": "t", "steps": [{"description": "d", "probe": {"protocol": "ICMP"}}]},
     "c.yaml: steps[0].probe.protocol: 'ICMP' is not one of TCP, UDP, SCTP"),
    ({"name": "n", "topology": "t", "steps": [{"description": "d", "ignore_self": "yes"}]},
     "c.yaml: steps[0].ignore_self: must be a boolean"),
    ({"name": "n", "topology": "t", "steps": [{"description": "d", "apply": {"kind": "NetworkPolicy"}}]},
     "c.yaml: steps[0].apply: must be a list"),
    ({"name": "n", "topology": "t", "steps": [{"description": "d", "apply": [{"kind": "Pod"}]}]},
     "c.yaml: steps[0].apply[0].kind: 'Pod' is not one of NetworkPolicy, Namespace (pods come from"),
    ({"name": "n", "topology": "t", "steps": [{"description": "d", "delete": ["just-a-name"]}]},
     "c.yaml: steps[0].delete[0]: must be 'namespace/name'"),
    ({"name": "n", "topology": "t", "steps": [{"description": "d",
                                               "relabel": [{"kind": "Service", "name": "x", "labels": {}}]}]},
     "c.yaml: steps[0].relabel[0].kind: 'Service' is not one of Namespace, Pod"),
    ({"name": "n", "topology": "t", "steps": [{"description": "d",
                                               "relabel": [{"kind": "Pod", "name": "a", "labels": {}}]}]},
     "c.yaml: steps[0].relabel[0].name: a pod is named 'namespace/name'"),
    ({"name": "n", "topology": "t", "steps": [{"description": "d", "relabel": [{"kind": "Pod", "name": "x/a"}]}]},
     "c.yaml: steps[0].relabel[0].labels: required field is missing"),
    ({"name": "n", "topology": "t", "steps": [{"description": "d",
                                               "relabel": [{"kind": "Pod", "name": "x/a", "labels": {"p": 1}}]}]},
     "c.yaml: steps[0].relabel[0].labels.p: label value 1 must be a string"),
    ({"name": "n", "topology": "t", "steps": [{"description": "d", "expect": {"default": "yes"}}]},
     "c.yaml: steps[0].expect.default: 'yes' is not one of allow, deny"),
    ({"name": "n", "topology": "t", "steps": [{"description": "d", "expect": {
        "default": "allow", "exceptions": [{"from": "x/a", "to": "y", "verdict": "deny"}]}}]},
     "c.yaml: steps[0].expect.exceptions[0].to: must be a pod 'namespace/name' or a pattern"),
    ({"name": "n", "topology": "t", "steps": [{"description": "d", "expect": {
        "default": "allow", "exceptions": [{"from": "x/a", "to": "y/a", "verdict": "deny", "why": "?"}]}}]},
     "c.yaml: steps[0].expect.exceptions[0].why: unknown field"),
    ("just a string", "c.yaml: must be a mapping with name, topology and steps"),
])
def test_malformed_case_structure(data, message):
    with pytest.raises(ConfigError) as e:
        parse_case(data, "c.yaml")
    assert str(e.value).startswith(message), str(e.value)
    assert "\n" not in str(e.value)


def step_case(step: dict) -> object:
    return parse_case({"name": "n", "topology": "t", "steps": [{"description": "d", **step}]}, "c.yaml")


@pytest.mark.parametrize(("step", "message"), [
    ({"expect": {"default": "allow", "exceptions": [{"from": "q/a", "to": "x/a", "verdict": "deny"}]}},
     "c.yaml: steps[0].expect.exceptions[0].from: 'q/a' matches no pod of the topology"),
    ({"relabel": [{"kind": "Pod", "name": "x/q", "labels": {}}]},
     "c.yaml: steps[0].relabel[0].name: no pod 'x/q' in the topology"),
    ({"relabel": [{"kind": "Namespace", "name": "w", "labels": {}}]},
     "c.yaml: steps[0].relabel[0].name: no namespace 'w' in the topology"),
    ({"delete": ["x/nothing"]},
     "c.yaml: steps[0].delete[0]: no NetworkPolicy 'x/nothing' exists at this step"),
    ({"apply": [{**POLICY, "metadata": {"name": "p", "namespace": "w"}}]},
     "c.yaml: steps[0].apply[0].metadata.namespace: namespace 'w' does not exist"),
    ({"apply": [{**POLICY, "spec": {"podSelector": {}, "ingres": []}}]},
     "c.yaml: steps[0].apply[0].spec.ingres: unknown field"),
    ({"apply": [{**POLICY, "spec": {"podSelector": {}, "egress": [{"to": [{"ipBlock": {
        "cidr": "{{podIP:x/q}}/{{hostMask}}"}}]}]}}]},
     "c.yaml: steps[0].apply[0].spec.egress[0].to[0].ipBlock.cidr: {{podIP:x/q}}: no pod 'x/q'"),
    ({"apply": [{**POLICY, "spec": {"podSelector": {}, "egress": [{"to": [{"ipBlock": {
        "cidr": "{{nodeIP:n1}}/32"}}]}]}}]},
     "c.yaml: steps[0].apply[0].spec.egress[0].to[0].ipBlock.cidr: unknown placeholder '{{nodeIP:n1}}'"),
])
def test_malformed_against_topology(step, message):
    with pytest.raises(ConfigError) as e:
        dry_run(step_case(step), e2e_cluster())
    assert str(e.value).startswith(message), str(e.value)


def test_substitute_pod_ip_and_host_mask():
    c = e2e_cluster()
    ip = c.pods["y/b"].ip
    doc = {"spec": {"ipBlock": {"cidr": "{{podIP:y/b}}/{{ hostMask }}", "except": ["{{podIP:y/b}}/32"]}}}
    assert substitute(doc, c, "c.yaml", "apply[0]") == {
        "spec": {"ipBlock": {"cidr": f"{ip}/32", "except": [f"{ip}/32"]}}}
    with pytest.raises(ConfigError, match=r"apply\[0\]: \{\{podIP:ns/name\}\} needs a pod"):
        substitute("{{podIP}}", c, "c.yaml", "apply[0]")


def test_policy_create_update_delete_and_relabels():
    c = e2e_cluster()
    case = parse_case({"name": "n", "topology": "t", "steps": [
        {"description": "create", "apply": [POLICY]},
        {"description": "update", "apply": [{**POLICY, "spec": {"podSelector": {"matchLabels": {"pod": "a"}}}}]},
        {"description": "relabel", "relabel": [{"kind": "Namespace", "name": "y", "labels": {"team": "blue"}},
                                              {"kind": "Pod", "name": "x/b", "labels": {}}]},
        {"description": "delete", "delete": ["x/deny"]},
    ]}, "c.yaml")
    changes = apply_step(c, case.steps[0], "c.yaml")
    assert changes == ["created networkpolicy x/deny"] and c.policies["x/deny"].pod_selector.is_empty
    assert apply_step(c, case.steps[1], "c.yaml") == ["updated networkpolicy x/deny"]
    assert dict(c.policies["x/deny"].pod_selector.match_labels) == {"pod": "a"}
    apply_step(c, case.steps[2], "c.yaml")
    # The full label set replaces the old one; the API server keeps the metadata.name label.
    assert c.namespaces["y"].labels == {"team": "blue", "kubernetes.io/metadata.name": "y"}
    assert c.pods["x/b"].labels == {}
    apply_step(c, case.steps[3], "c.yaml")
    assert c.policies == {}


def test_namespace_manifest_creates_or_relabels():
    c = e2e_cluster()
    case = step_case({"apply": [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x", "labels": {"ns": "x", "env": "prod"}}},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "w"}},
    ]})
    apply_step(c, case.steps[0], "c.yaml")
    assert c.namespaces["x"].labels == {"ns": "x", "env": "prod", "kubernetes.io/metadata.name": "x"}
    assert c.namespaces["w"].labels == {"kubernetes.io/metadata.name": "w"}


def test_dry_run_leaves_the_model_alone_and_returns_states():
    c = e2e_cluster()
    case = parse_case({"name": "n", "topology": "t", "steps": [
        {"description": "create", "apply": [POLICY]}, {"description": "delete", "delete": ["x/deny"]}]}, "c.yaml")
    states = dry_run(case, c)
    assert [sorted(s.policies) for s in states] == [["x/deny"], []]
    assert c.policies == {}
    assert probe_pods(c)[:3] == ["x/a", "x/b", "x/c"] and len(probe_pods(c)) == 9


def test_expectation_patterns():
    e = Expectation("allow", [ExpectRule("*/a", "z/*", "deny"), ExpectRule("z/a", "z/c", "allow")])
    assert not e.allowed("x/a", "z/b")
    assert e.allowed("x/b", "z/b")
    assert e.allowed("z/a", "z/c")


def test_load_case_file_errors(tmp_path):
    path = write(tmp_path, """\
        name: n
        topology: t
        steps:
          - description: d
            probe: {port: 80
        """)
    with pytest.raises(ConfigError, match=r"case.yaml: line \d+ column \d+: malformed YAML"):
        load_case(path)
    with pytest.raises(ConfigError, match="file not found"):
        load_case(str(tmp_path / "missing.yaml"))
    path = write(tmp_path, "name: n\ntopology: t\nsteps: [{description: d}]\n---\nname: m\n")
    with pytest.raises(ConfigError, match="must hold exactly one YAML document, found 2"):
        load_case(path)


def test_unknown_topology_names_the_case_field(tmp_path):
    path = write(tmp_path, "name: n\ntopology: no-such-topology\nsteps: [{description: d}]\n")
    with pytest.raises(ConfigError) as e:
        load_case(path)
    assert str(e.value).startswith(f"{path}: topology: 'no-such-topology': no such topology")


def test_topology_path_relative_to_the_case_file(tmp_path):
    (tmp_path / "topo.yaml").write_text(textwrap.dedent("""\
        name: tiny
        nodes: [{name: n1, kind: real}]
        namespaces: [{name: x}]
        pods: [{namespace: x, name: a, node: n1}, {namespace: x, name: b, node: n1}]
        """))
    path = write(tmp_path, "name: n\ntopology: topo.yaml\nsteps: [{description: d}]\n")
    case = load_case(path)
    assert case.load_cluster().pods.keys() == {"x/a", "x/b"}


def test_uses_field_finds_nested_keys():
    from harness.conformance.case import uses_field

    with_range = step_case({"apply": [{**POLICY, "spec": {"podSelector": {}, "ingress": [
        {"ports": [{"port": 80, "endPort": 81}]}]}}]})
    assert uses_field(with_range, "endPort")
    assert not uses_field(step_case({"apply": [POLICY]}), "endPort")
