"""The oracle on the upstream e2e model: namespaces x, y, z (labeled ns=<name>) x pods a, b, c
(labeled pod=<name>), serving TCP and UDP on 80 and 81 (named serve-80-tcp ...), on two nodes.

Every expected table below was worked out by hand from the NetworkPolicy semantics and the
corresponding upstream e2e test (test/e2e/network/netpol/network_policy.go); rows are sources,
columns destinations, ``-`` the ignored pod-to-itself cells.

Pod placement (alternating nodes, addresses allocated in order):
    node-1 10.244.0.0/24: x/a .2  x/c .3  y/b .4  z/a .5  z/c .6
    node-2 10.244.1.0/24: x/b .2  y/a .3  y/c .4  z/b .5
"""

from __future__ import annotations

import ipaddress
import textwrap

import pytest
import yaml

from harness.analysis.truthtable import TruthTable, expected_table
from harness.model.cluster import Cluster, ContainerPort, Namespace, Node, Pod
from harness.model.netpol import parse_network_policy
from harness.oracle import EGRESS, INGRESS, Oracle, RuleRef, verdict

PODS = [f"{ns}/{p}" for ns in "xyz" for p in "abc"]


def e2e_cluster() -> Cluster:
    """The x/y/z x a/b/c model of the upstream NetworkPolicy e2e suite."""
    c = Cluster(name="k8s-e2e")
    for i, name in enumerate(("node-1", "node-2")):
        c.nodes[name] = Node(name, ipaddress.IPv4Address(f"172.18.0.{i + 2}"),
                             ipaddress.IPv4Network(f"10.244.{i}.0/24"))
    ports = [ContainerPort(port, proto, f"serve-{port}-{proto.lower()}") for port in (80, 81) for proto in ("TCP", "UDP")]
    i = 0
    for ns in "xyz":
        c.namespaces[ns] = Namespace(ns, {"ns": ns})
        for name in "abc":
            c.add_pod(Pod(ns, name, ("node-1", "node-2")[i % 2], {"pod": name}, ports=list(ports)))
            i += 1
    return c


def apply(cluster: Cluster, text: str) -> Cluster:
    """Parse policy manifests (YAML, several documents) into the cluster, replacing same keys."""
    for i, doc in enumerate(d for d in yaml.safe_load_all(textwrap.dedent(text)) if d):
        p = parse_network_policy(doc, "test", f"documents[{i}]")
        cluster.policies[p.key] = p
    return cluster


def grid(text: str) -> str:
    """Expand a compact hand-written table (``x/a  - X X  . . .  . . .``) to the rendered form."""
    t = TruthTable(PODS, ignore_self=True)
    for line in textwrap.dedent(text).strip().splitlines():
        src, *marks = line.split()
        assert len(marks) == len(PODS), line
        for dst, m in zip(PODS, marks, strict=True):
            assert (m == "-") == (src == dst), line
            if m != "-":
                t.set(src, dst, {".": True, "X": False}[m])
    return t.render()


def table(cluster: Cluster, port: int = 80, protocol: str = "TCP") -> str:
    return expected_table(cluster, PODS, port, protocol).render()


ALL_ALLOWED = """
    x/a  - . .  . . .  . . .
    x/b  . - .  . . .  . . .
    x/c  . . -  . . .  . . .
    y/a  . . .  - . .  . . .
    y/b  . . .  . - .  . . .
    y/c  . . .  . . -  . . .
    z/a  . . .  . . .  - . .
    z/b  . . .  . . .  . - .
    z/c  . . .  . . .  . . -
"""

X_INGRESS_DENIED = """
    x/a  - X X  . . .  . . .
    x/b  X - X  . . .  . . .
    x/c  X X -  . . .  . . .
    y/a  X X X  - . .  . . .
    y/b  X X X  . - .  . . .
    y/c  X X X  . . -  . . .
    z/a  X X X  . . .  - . .
    z/b  X X X  . . .  . - .
    z/c  X X X  . . .  . . -
"""

X_EGRESS_DENIED = """
    x/a  - X X  X X X  X X X
    x/b  X - X  X X X  X X X
    x/c  X X -  X X X  X X X
    y/a  . . .  - . .  . . .
    y/b  . . .  . - .  . . .
    y/c  . . .  . . -  . . .
    z/a  . . .  . . .  - . .
    z/b  . . .  . . .  . - .
    z/c  . . .  . . .  . . -
"""

DENY_INGRESS_X = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-ingress, namespace: x}
spec: {podSelector: {}}
"""


# -- the model itself ------------------------------------------------------------------------------
def test_no_policy_everything_allowed():
    c = e2e_cluster()
    assert table(c) == grid(ALL_ALLOWED)
    v = verdict(c, "y/a", "x/a", 80)
    assert v.allowed and not v.ingress.isolated and not v.egress.isolated
    assert v.ingress.reason == "no policy selects x/a for ingress: not isolated"
    assert v.egress.reason == "no policy selects y/a for egress: not isolated"


# -- default deny ---------------------------------------------------------------------------------
def test_default_deny_ingress():
    c = apply(e2e_cluster(), DENY_INGRESS_X)
    assert table(c) == grid(X_INGRESS_DENIED)
    # a default-deny policy isolates for every port and protocol
    assert table(c, 81, "UDP") == grid(X_INGRESS_DENIED)
    v = verdict(c, "y/a", "x/b", 80)
    assert not v.allowed
    assert v.ingress.isolated_by == ("x/deny-ingress",) and v.ingress.allowed_by == ()
    assert v.egress.allowed
    assert str(v) == ("y/a -> x/b TCP/80: deny; ingress: x/b isolated for ingress by x/deny-ingress; "
                      "no rule allows ingress from y/a on this port; egress: no policy selects y/a for egress: "
                      "not isolated")


def test_default_deny_egress():
    c = apply(e2e_cluster(), """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: deny-egress, namespace: x}
        spec: {podSelector: {}, policyTypes: [Egress]}
    """)
    assert table(c) == grid(X_EGRESS_DENIED)
    v = verdict(c, "x/a", "y/a", 80)
    assert v.egress.isolated_by == ("x/deny-egress",) and not v.egress.allowed
    assert v.ingress.allowed


def test_default_deny_all_ingress_and_egress():
    c = apply(e2e_cluster(), """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: deny-all, namespace: x}
        spec: {podSelector: {}, policyTypes: [Ingress, Egress]}
    """)
    assert table(c) == grid("""
        x/a  - X X  X X X  X X X
        x/b  X - X  X X X  X X X
        x/c  X X -  X X X  X X X
        y/a  X X X  - . .  . . .
        y/b  X X X  . - .  . . .
        y/c  X X X  . . -  . . .
        z/a  X X X  . . .  - . .
        z/b  X X X  . . .  . - .
        z/c  X X X  . . .  . . -
    """)


def test_deny_egress_of_one_pod():
    c = apply(e2e_cluster(), """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: deny-egress-pod-a, namespace: x}
        spec: {podSelector: {matchLabels: {pod: a}}, policyTypes: [Egress]}
    """)
    assert table(c) == grid("""
        x/a  - X X  X X X  X X X
        x/b  . - .  . . .  . . .
        x/c  . . -  . . .  . . .
        y/a  . . .  - . .  . . .
        y/b  . . .  . - .  . . .
        y/c  . . .  . . -  . . .
        z/a  . . .  . . .  - . .
        z/b  . . .  . . .  . - .
        z/c  . . .  . . .  . . -
    """)


# -- allow all, deny-all then allow ----------------------------------------------------------------
def test_allow_all_ingress_overrides_default_deny():
    c = apply(e2e_cluster(), DENY_INGRESS_X + """
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-all, namespace: x}
spec:
  podSelector: {}
  ingress: [{}]
""")
    assert table(c) == grid(ALL_ALLOWED)
    v = verdict(c, "z/c", "x/a", 80)
    assert v.ingress.isolated_by == ("x/deny-ingress", "x/allow-all")
    assert v.ingress.allowed_by == (RuleRef("x/allow-all", INGRESS, 0),)
    assert str(v.ingress.allowed_by[0]) == "x/allow-all ingress[0]"


def test_deny_all_then_allow_all_to_one_pod():
    # e2e: "should enforce policy to allow ingress traffic for a target"
    c = apply(e2e_cluster(), DENY_INGRESS_X + """
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-all-to-a, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress: [{from: [{podSelector: {}, namespaceSelector: {}}]}]
""")
    assert table(c) == grid("""
        x/a  - X X  . . .  . . .
        x/b  . - X  . . .  . . .
        x/c  . X -  . . .  . . .
        y/a  . X X  - . .  . . .
        y/b  . X X  . - .  . . .
        y/c  . X X  . . -  . . .
        z/a  . X X  . . .  - . .
        z/b  . X X  . . .  . - .
        z/c  . X X  . . .  . . -
    """)


def test_ingress_from_same_namespace_only():
    # e2e: "should deny ingress from pods on other namespaces" (podSelector: {} in from)
    c = apply(e2e_cluster(), """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: deny-empty-policy, namespace: x}
        spec:
          podSelector: {}
          ingress: [{from: [{podSelector: {}}]}]
    """)
    assert table(c) == grid("""
        x/a  - . .  . . .  . . .
        x/b  . - .  . . .  . . .
        x/c  . . -  . . .  . . .
        y/a  X X X  - . .  . . .
        y/b  X X X  . - .  . . .
        y/c  X X X  . . -  . . .
        z/a  X X X  . . .  - . .
        z/b  X X X  . . .  . - .
        z/c  X X X  . . .  . . -
    """)


# -- selectors ---------------------------------------------------------------------------------------
X_A_FROM_NS_Y = """
    x/a  - . .  . . .  . . .
    x/b  X - .  . . .  . . .
    x/c  X . -  . . .  . . .
    y/a  . . .  - . .  . . .
    y/b  . . .  . - .  . . .
    y/c  . . .  . . -  . . .
    z/a  X . .  . . .  - . .
    z/b  X . .  . . .  . - .
    z/c  X . .  . . .  . . -
"""

X_A_FROM_X_B = """
    x/a  - . .  . . .  . . .
    x/b  . - .  . . .  . . .
    x/c  X . -  . . .  . . .
    y/a  X . .  - . .  . . .
    y/b  X . .  . - .  . . .
    y/c  X . .  . . -  . . .
    z/a  X . .  . . .  - . .
    z/b  X . .  . . .  . - .
    z/c  X . .  . . .  . . -
"""


def policy_x_a(ingress_yaml: str, name: str = "p") -> str:
    return f"""
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: {name}, namespace: x}}
spec:
  podSelector: {{matchLabels: {{pod: a}}}}
  ingress:
{textwrap.indent(textwrap.dedent(ingress_yaml).strip(), '  ')}
"""


def test_allow_from_namespace():
    c = apply(e2e_cluster(), policy_x_a("- from: [{namespaceSelector: {matchLabels: {ns: y}}}]"))
    assert table(c) == grid(X_A_FROM_NS_Y)


def test_allow_from_namespace_by_default_name_label():
    c = apply(e2e_cluster(), policy_x_a(
        "- from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: y}}}]"))
    assert table(c) == grid(X_A_FROM_NS_Y)


def test_allow_from_pod_in_same_namespace():
    # podSelector alone means the policy's namespace: y/b and z/b do not match
    c = apply(e2e_cluster(), policy_x_a("- from: [{podSelector: {matchLabels: {pod: b}}}]"))
    assert table(c) == grid(X_A_FROM_X_B)
    v = verdict(c, "x/b", "x/a", 80)
    assert v.ingress.reason == "x/a isolated for ingress by x/p; allowed by x/p ingress[0]"


def test_match_expressions_pod_in():
    c = apply(e2e_cluster(), policy_x_a(
        "- from: [{podSelector: {matchExpressions: [{key: pod, operator: In, values: [b]}]}}]"))
    assert table(c) == grid(X_A_FROM_X_B)


def test_match_expressions_namespace_in():
    c = apply(e2e_cluster(), policy_x_a(
        "- from: [{namespaceSelector: {matchExpressions: [{key: ns, operator: In, values: [y]}]}}]"))
    assert table(c) == grid(X_A_FROM_NS_Y)


def test_match_expressions_notin_and_exists_in_pod_selector_of_policy():
    # policy in y isolates every pod except y/a (pod NotIn [a]) and every pod with a "pod" label
    c = apply(e2e_cluster(), """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: isolate-not-a, namespace: y}
        spec:
          podSelector:
            matchExpressions:
            - {key: pod, operator: NotIn, values: [a]}
            - {key: pod, operator: Exists}
            - {key: role, operator: DoesNotExist}
    """)
    assert table(c) == grid("""
        x/a  - . .  . X X  . . .
        x/b  . - .  . X X  . . .
        x/c  . . -  . X X  . . .
        y/a  . . .  - X X  . . .
        y/b  . . .  . - X  . . .
        y/c  . . .  . X -  . . .
        z/a  . . .  . X X  - . .
        z/b  . . .  . X X  . - .
        z/c  . . .  . X X  . . -
    """)
    # DoesNotExist: giving y/b a role label takes it out of the policy (after a new Oracle)
    c.pods["y/b"].labels["role"] = "db"
    assert Oracle(c).allowed("x/a", "y/b", 80)


def test_namespace_and_pod_selector_in_one_peer_is_an_and():
    c = apply(e2e_cluster(), policy_x_a("""
        - from:
          - namespaceSelector: {matchExpressions: [{key: ns, operator: NotIn, values: [x]}]}
            podSelector: {matchLabels: {pod: b}}
    """))
    assert table(c) == grid("""
        x/a  - . .  . . .  . . .
        x/b  X - .  . . .  . . .
        x/c  X . -  . . .  . . .
        y/a  X . .  - . .  . . .
        y/b  . . .  . - .  . . .
        y/c  X . .  . . -  . . .
        z/a  X . .  . . .  - . .
        z/b  . . .  . . .  . - .
        z/c  X . .  . . .  . . -
    """)


def test_namespace_and_pod_selector_as_two_peers_is_an_or():
    c = apply(e2e_cluster(), policy_x_a("""
        - from:
          - namespaceSelector: {matchExpressions: [{key: ns, operator: NotIn, values: [x]}]}
          - podSelector: {matchLabels: {pod: b}}
    """))
    assert table(c) == grid("""
        x/a  - . .  . . .  . . .
        x/b  . - .  . . .  . . .
        x/c  X . -  . . .  . . .
        y/a  . . .  - . .  . . .
        y/b  . . .  . - .  . . .
        y/c  . . .  . . -  . . .
        z/a  . . .  . . .  - . .
        z/b  . . .  . . .  . - .
        z/c  . . .  . . .  . . -
    """)
    # both peers are in one rule: the reason names the rule once
    assert verdict(c, "x/b", "x/a", 80).ingress.allowed_by == (RuleRef("x/p", INGRESS, 0),)


def test_multiple_policies_are_a_union():
    c = apply(e2e_cluster(),
              policy_x_a("- from: [{podSelector: {matchLabels: {pod: b}}}]", name="from-x-b") + "---\n"
              + policy_x_a("- from: [{namespaceSelector: {matchLabels: {ns: y}}}]", name="from-ns-y"))
    assert table(c) == grid("""
        x/a  - . .  . . .  . . .
        x/b  . - .  . . .  . . .
        x/c  X . -  . . .  . . .
        y/a  . . .  - . .  . . .
        y/b  . . .  . - .  . . .
        y/c  . . .  . . -  . . .
        z/a  X . .  . . .  - . .
        z/b  X . .  . . .  . - .
        z/c  X . .  . . .  . . -
    """)
    v = verdict(c, "y/c", "x/a", 80)
    assert v.ingress.isolated_by == ("x/from-x-b", "x/from-ns-y")
    assert v.ingress.allowed_by == (RuleRef("x/from-ns-y", INGRESS, 0),)


def test_multiple_egress_policies_allow_all_takes_precedence():
    base = """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: allow-egress-port-80, namespace: x}
        spec:
          podSelector: {}
          policyTypes: [Egress]
          egress: [{ports: [{port: 80}]}]
    """
    c = apply(e2e_cluster(), base)
    assert table(c, 80) == grid(ALL_ALLOWED)
    assert table(c, 81) == grid(X_EGRESS_DENIED)
    apply(c, """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: allow-egress, namespace: x}
        spec:
          podSelector: {}
          policyTypes: [Egress]
          egress: [{}]
    """)
    assert table(c, 81) == grid(ALL_ALLOWED)


# -- egress ----------------------------------------------------------------------------------------
def test_egress_to_a_namespace():
    c = apply(e2e_cluster(), """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: x-a-to-ns-y, namespace: x}
        spec:
          podSelector: {matchLabels: {pod: a}}
          policyTypes: [Egress]
          egress: [{to: [{namespaceSelector: {matchLabels: {ns: y}}}]}]
    """)
    assert table(c) == grid("""
        x/a  - X X  . . .  X X X
        x/b  . - .  . . .  . . .
        x/c  . . -  . . .  . . .
        y/a  . . .  - . .  . . .
        y/b  . . .  . - .  . . .
        y/c  . . .  . . -  . . .
        z/a  . . .  . . .  - . .
        z/b  . . .  . . .  . - .
        z/c  . . .  . . .  . . -
    """)
    v = verdict(c, "x/a", "z/a", 80)
    assert v.egress.reason == "x/a isolated for egress by x/x-a-to-ns-y; no rule allows egress to z/a on this port"


def test_egress_denial_on_client_side_even_if_server_allows():
    # e2e: "should support denying of egress traffic on the client side (even if the server
    # explicitly allows this traffic)"
    c = apply(e2e_cluster(), """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: allow-to-ns-y-pod-a, namespace: x}
        spec:
          podSelector: {matchLabels: {pod: a}}
          policyTypes: [Egress]
          egress: [{to: [{namespaceSelector: {matchLabels: {ns: y}}, podSelector: {matchLabels: {pod: a}}}]}]
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: allow-from-xa-on-ya, namespace: y}
        spec:
          podSelector: {matchLabels: {pod: a}}
          ingress: [{from: [{namespaceSelector: {matchLabels: {ns: x}}, podSelector: {matchLabels: {pod: a}}}]}]
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: allow-from-xa-on-yb, namespace: y}
        spec:
          podSelector: {matchLabels: {pod: b}}
          ingress: [{from: [{namespaceSelector: {matchLabels: {ns: x}}, podSelector: {matchLabels: {pod: a}}}]}]
    """)
    assert table(c) == grid("""
        x/a  - X X  . X X  X X X
        x/b  . - .  X X .  . . .
        x/c  . . -  X X .  . . .
        y/a  . . .  - X .  . . .
        y/b  . . .  X - .  . . .
        y/c  . . .  X X -  . . .
        z/a  . . .  X X .  - . .
        z/b  . . .  X X .  . - .
        z/c  . . .  X X .  . . -
    """)
    v = verdict(c, "x/a", "y/b", 80)
    assert v.ingress.allowed and not v.egress.allowed


def test_ingress_and_egress_specified_together():
    # e2e: "should work with Ingress, Egress specified together" (egress only to port 80)
    c = apply(e2e_cluster(), policy_x_a("- from: [{podSelector: {matchLabels: {pod: b}}}]") + """\
  egress: [{ports: [{port: 80}]}]
  policyTypes: [Egress, Ingress]
""")
    assert table(c, 80) == grid(X_A_FROM_X_B)
    assert table(c, 81) == grid("""
        x/a  - X X  X X X  X X X
        x/b  . - .  . . .  . . .
        x/c  X . -  . . .  . . .
        y/a  X . .  - . .  . . .
        y/b  X . .  . - .  . . .
        y/c  X . .  . . -  . . .
        z/a  X . .  . . .  - . .
        z/b  X . .  . . .  . - .
        z/c  X . .  . . .  . . -
    """)


# -- ports -----------------------------------------------------------------------------------------
def ingress_x_all(ports_yaml: str, name: str = "p", frm: str = "") -> str:
    rule = f"- ports: {ports_yaml}" + (f"\n  from: {frm}" if frm else "")
    return f"""
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: {name}, namespace: x}}
spec:
  podSelector: {{}}
  ingress:
{textwrap.indent(rule, '  ')}
"""


def test_named_port_ingress():
    # e2e: "should allow ingress access on one named port"
    c = apply(e2e_cluster(), ingress_x_all("[{port: serve-81-tcp}]"))
    assert table(c, 81) == grid(ALL_ALLOWED)
    assert table(c, 80) == grid(X_INGRESS_DENIED)
    # the name is bound to TCP: UDP 81 is not allowed by it
    assert table(c, 81, "UDP") == grid(X_INGRESS_DENIED)


def test_named_port_ingress_from_namespace():
    # e2e: "should allow ingress access from namespace on one named port"
    c = apply(e2e_cluster(), ingress_x_all("[{port: serve-80-tcp}]",
                                           frm="[{namespaceSelector: {matchLabels: {ns: y}}}]"))
    assert table(c, 80) == grid("""
        x/a  - X X  . . .  . . .
        x/b  X - X  . . .  . . .
        x/c  X X -  . . .  . . .
        y/a  . . .  - . .  . . .
        y/b  . . .  . - .  . . .
        y/c  . . .  . . -  . . .
        z/a  X X X  . . .  - . .
        z/b  X X X  . . .  . - .
        z/c  X X X  . . .  . . -
    """)
    assert table(c, 81) == grid(X_INGRESS_DENIED)


def test_named_port_udp():
    c = apply(e2e_cluster(), ingress_x_all("[{port: serve-81-udp, protocol: UDP}]"))
    assert table(c, 81, "UDP") == grid(ALL_ALLOWED)
    assert table(c, 81, "TCP") == grid(X_INGRESS_DENIED)
    assert table(c, 80, "UDP") == grid(X_INGRESS_DENIED)


def test_named_port_egress():
    # e2e: "should allow egress access on one named port"
    c = apply(e2e_cluster(), """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: allow-egress-named, namespace: x}
        spec:
          podSelector: {}
          policyTypes: [Egress]
          egress: [{ports: [{port: serve-80-tcp}]}]
    """)
    assert table(c, 80) == grid(ALL_ALLOWED)
    assert table(c, 81) == grid(X_EGRESS_DENIED)


def test_egress_rules_without_policy_types_also_isolate_ingress():
    # policyTypes defaults to [Ingress, Egress] here: the missing ingress rules deny all ingress
    c = apply(e2e_cluster(), """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: egress-80, namespace: x}
        spec:
          podSelector: {}
          egress: [{ports: [{port: 80}]}]
    """)
    assert table(c, 80) == grid(X_INGRESS_DENIED)
    assert table(c, 81) == grid("""
        x/a  - X X  X X X  X X X
        x/b  X - X  X X X  X X X
        x/c  X X -  X X X  X X X
        y/a  X X X  - . .  . . .
        y/b  X X X  . - .  . . .
        y/c  X X X  . . -  . . .
        z/a  X X X  . . .  - . .
        z/b  X X X  . . .  . - .
        z/c  X X X  . . .  . . -
    """)


def test_named_port_resolves_on_the_destination_pod():
    c = e2e_cluster()
    # z/c serves "web" on 8080, y/c serves "web" on 9090, y/a has no port named "web"
    c.pods["z/c"].ports.append(ContainerPort(8080, "TCP", "web"))
    c.pods["y/c"].ports.append(ContainerPort(9090, "TCP", "web"))
    apply(c, """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: egress-web, namespace: x}
        spec:
          podSelector: {matchLabels: {pod: a}}
          policyTypes: [Egress]
          egress: [{ports: [{port: web}]}]
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: ingress-web, namespace: z}
        spec:
          podSelector: {}
          ingress: [{ports: [{port: web}]}]
    """)
    o = Oracle(c)
    assert o.allowed("x/a", "z/c", 8080)
    assert not o.allowed("x/a", "z/c", 9090)
    assert o.allowed("x/a", "y/c", 9090)
    assert not o.allowed("x/a", "y/c", 8080)
    assert not o.allowed("x/a", "y/a", 8080)  # no such name on y/a
    assert not o.allowed("x/a", "10.1.2.3", 8080)  # not a pod: a named port never matches
    # ingress side in z: resolved on z/c itself, z/a has no "web"
    assert o.allowed("y/a", "z/c", 8080)
    assert not o.allowed("y/a", "z/a", 8080)


def test_end_port_range():
    c = apply(e2e_cluster(), ingress_x_all("[{port: 81, endPort: 82}]"))
    assert table(c, 81) == grid(ALL_ALLOWED)
    assert table(c, 80) == grid(X_INGRESS_DENIED)
    o = Oracle(c)
    assert o.allowed("y/a", "x/a", 82)
    assert not o.allowed("y/a", "x/a", 83)
    assert not o.allowed("y/a", "x/a", 81, "UDP")


def test_end_port_from_namespace():
    # e2e-style endPort case: ns y may reach x on 80-81 only, over TCP
    c = apply(e2e_cluster(), ingress_x_all("[{port: 80, endPort: 81, protocol: TCP}]",
                                           frm="[{namespaceSelector: {matchLabels: {ns: y}}}]"))
    expected = """
        x/a  - X X  . . .  . . .
        x/b  X - X  . . .  . . .
        x/c  X X -  . . .  . . .
        y/a  . . .  - . .  . . .
        y/b  . . .  . - .  . . .
        y/c  . . .  . . -  . . .
        z/a  X X X  . . .  - . .
        z/b  X X X  . . .  . - .
        z/c  X X X  . . .  . . -
    """
    assert table(c, 80) == grid(expected)
    assert table(c, 81) == grid(expected)
    assert table(c, 81, "UDP") == grid(X_INGRESS_DENIED)


def test_protocol_only_port_and_sctp_is_not_tcp():
    # e2e: "should enforce ingress policy allowing any port traffic to a server on a specific protocol"
    c = apply(e2e_cluster(), policy_x_a("- ports: [{protocol: TCP}]"))
    assert table(c, 80, "TCP") == grid(ALL_ALLOWED)
    assert table(c, 81, "TCP") == grid(ALL_ALLOWED)
    o = Oracle(c)
    assert not o.allowed("y/a", "x/a", 80, "UDP")
    assert not o.allowed("y/a", "x/a", 80, "SCTP")
    # e2e: "should not mistakenly treat 'protocol: SCTP' as 'protocol: TCP'"
    c = apply(e2e_cluster(), policy_x_a("- ports: [{protocol: SCTP, port: 81}]"))
    o = Oracle(c)
    assert not o.allowed("y/a", "x/a", 81, "TCP")
    assert o.allowed("y/a", "x/a", 81, "SCTP")


# -- ipBlock ----------------------------------------------------------------------------------------
def test_ipblock_egress_to_one_pod():
    # e2e: "should allow egress access to server in CIDR block" (y/b's IP /32)
    c = e2e_cluster()
    apply(c, f"""
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {{name: allow-client-a-via-cidr-egress-rule, namespace: x}}
        spec:
          podSelector: {{matchLabels: {{pod: a}}}}
          policyTypes: [Egress]
          egress: [{{to: [{{ipBlock: {{cidr: {c.pods['y/b'].ip}/32}}}}]}}]
    """)
    assert table(c) == grid("""
        x/a  - X X  X . X  X X X
        x/b  . - .  . . .  . . .
        x/c  . . -  . . .  . . .
        y/a  . . .  - . .  . . .
        y/b  . . .  . - .  . . .
        y/c  . . .  . . -  . . .
        z/a  . . .  . . .  - . .
        z/b  . . .  . . .  . - .
        z/c  . . .  . . .  . . -
    """)


def test_ipblock_except_then_overlapping_allow():
    # e2e: "should enforce except clause while egress access to server in CIDR block" and
    # "should ensure an IP overlapping both IPBlock.CIDR and IPBlock.Except is allowed"
    c = e2e_cluster()
    b_ip = c.pods["x/b"].ip
    assert str(b_ip) == "10.244.1.2"
    apply(c, f"""
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {{name: except-x-b, namespace: x}}
        spec:
          podSelector: {{matchLabels: {{pod: a}}}}
          policyTypes: [Egress]
          egress: [{{to: [{{ipBlock: {{cidr: 10.244.0.0/16, except: ["{b_ip}/32"]}}}}]}}]
    """)
    only_a_to_b_denied = """
        x/a  - X .  . . .  . . .
        x/b  . - .  . . .  . . .
        x/c  . . -  . . .  . . .
        y/a  . . .  - . .  . . .
        y/b  . . .  . - .  . . .
        y/c  . . .  . . -  . . .
        z/a  . . .  . . .  - . .
        z/b  . . .  . . .  . - .
        z/c  . . .  . . .  . . -
    """
    assert table(c) == grid(only_a_to_b_denied)
    assert not Oracle(c).allowed("x/a", "10.9.9.9", 80)  # outside the cidr, x/a is egress-isolated
    assert Oracle(c).allowed("x/a", "10.244.7.7", 80)
    apply(c, f"""
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {{name: allow-x-b, namespace: x}}
        spec:
          podSelector: {{matchLabels: {{pod: a}}}}
          policyTypes: [Egress]
          egress: [{{to: [{{ipBlock: {{cidr: "{b_ip}/32"}}}}]}}]
    """)
    assert table(c) == grid(ALL_ALLOWED)


def test_ipblock_ingress_matches_pod_ips_and_external_addresses():
    # node-1's pods are 10.244.0.0/24; except y/b (10.244.0.4)
    c = apply(e2e_cluster(), policy_x_a(
        "- from: [{ipBlock: {cidr: 10.244.0.0/24, except: [10.244.0.4/32]}}]"))
    assert table(c) == grid("""
        x/a  - . .  . . .  . . .
        x/b  X - .  . . .  . . .
        x/c  . . -  . . .  . . .
        y/a  X . .  - . .  . . .
        y/b  X . .  . - .  . . .
        y/c  X . .  . . -  . . .
        z/a  . . .  . . .  - . .
        z/b  X . .  . . .  . - .
        z/c  . . .  . . .  . . -
    """)
    o = Oracle(c)
    # addresses outside the pod network: only ipBlock peers can match them
    assert o.allowed("10.244.0.77", "x/a", 80)
    assert not o.allowed("192.168.5.5", "x/a", 80)
    v = o.verdict("192.168.5.5", "x/a", 80)
    assert v.src == "192.168.5.5" and v.egress.reason == "192.168.5.5 is not a pod: no egress policy applies"
    # a pod IP given as an address is the pod
    assert o.verdict("10.244.0.4", "x/a", 80).src == "y/b"


# -- self, node-local, snapshots, API -------------------------------------------------------------------
def test_pod_to_itself_is_allowed_even_when_isolated():
    c = apply(e2e_cluster(), """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: deny-all, namespace: x}
        spec: {podSelector: {}, policyTypes: [Ingress, Egress]}
    """)
    v = verdict(c, "x/a", "x/a", 80)
    assert v.allowed
    assert "loopback" in v.ingress.reason
    full = expected_table(c, PODS, 80, ignore_self=False)
    assert full.get("x/a", "x/a") is True and full.get("x/a", "x/b") is False
    assert full.render().splitlines()[1].startswith("x/a  .    X")


def test_node_local_traffic_is_always_allowed():
    c = apply(e2e_cluster(), DENY_INGRESS_X)
    o = Oracle(c)
    # x/a runs on node-1 (172.18.0.2, gateway 10.244.0.1); x/b on node-2
    assert o.allowed("172.18.0.2", "x/a", 80)
    assert o.allowed("10.244.0.1", "x/a", 80)
    assert not o.allowed("172.18.0.3", "x/a", 80)
    assert o.allowed("172.18.0.3", "x/b", 80)
    assert "node-local" in o.verdict("10.244.0.1", "x/a", 80).ingress.reason


def test_oracle_is_a_snapshot_and_relabel_needs_a_new_one():
    # e2e: "should deny ingress access to updated pod"
    c = apply(e2e_cluster(), """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: deny-isolated, namespace: x}
        spec: {podSelector: {matchLabels: {target: isolated}}}
    """)
    o = Oracle(c)
    assert o.allowed("y/a", "x/a", 80)
    c.pods["x/a"].labels["target"] = "isolated"
    assert not Oracle(c).allowed("y/a", "x/a", 80)
    assert [p.key for p in Oracle(c).isolating_policies("x/a", INGRESS)] == ["x/deny-isolated"]
    assert Oracle(c).isolating_policies("x/a", EGRESS) == []


def test_namespace_relabel_changes_namespace_selector_matches():
    c = apply(e2e_cluster(), policy_x_a("- from: [{namespaceSelector: {matchLabels: {team: blue}}}]"))
    assert not Oracle(c).allowed("z/a", "x/a", 80)
    c.namespaces["z"].labels["team"] = "blue"
    assert Oracle(c).allowed("z/a", "x/a", 80)


def test_matrix_and_errors():
    c = apply(e2e_cluster(), DENY_INGRESS_X)
    m = Oracle(c).matrix(["x/a", "y/a"], 80)
    assert {k: v.allowed for k, v in m.items()} == {
        ("x/a", "x/a"): True, ("x/a", "y/a"): True, ("y/a", "x/a"): False, ("y/a", "y/a"): True}
    with pytest.raises(KeyError, match="neither a pod key"):
        Oracle(c).verdict("q/a", "x/a", 80)
    # Pod objects are accepted as well as keys
    assert not verdict(c, c.pods["y/a"], c.pods["x/a"], 80).allowed
