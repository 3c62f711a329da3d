"""NetworkPolicy manifest parsing: every field, every default, and exact one-line errors."""

from __future__ import annotations

import ipaddress
import textwrap

import pytest
import yaml

from harness.errors import ConfigError
from harness.model.netpol import parse_network_policy, port_name_problem
from harness.model.policy import IPBlock, LabelSelector, PolicyPeer, PolicyPort, SelectorRequirement

SRC = "cases/x.yaml"


def parse(text: str, path: str = "documents[0]"):
    return parse_network_policy(yaml.safe_load(textwrap.dedent(text)), SRC, path)


def error(text: str, path: str = "documents[0]") -> str:
    with pytest.raises(ConfigError) as e:
        parse(text, path)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


HEAD = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: p, namespace: x}
"""


def spec(body: str) -> str:
    return HEAD + "spec:\n" + textwrap.indent(textwrap.dedent(body), "  ")


# -- valid manifests ---------------------------------------------------------------------------
def test_minimal_policy_defaults():
    p = parse("""
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: deny-all}
        spec: {podSelector: {}}
    """)
    assert p.namespace == "default"
    assert p.name == "deny-all"
    assert p.key == "default/deny-all"
    assert p.pod_selector == LabelSelector()
    assert p.pod_selector.is_empty
    assert p.policy_types == ("Ingress",)
    assert p.ingress == () and p.egress == ()
    assert p.source == SRC


def test_full_policy_every_field():
    p = parse(spec("""
        podSelector:
          matchLabels: {pod: a}
          matchExpressions:
          - {key: tier, operator: In, values: [web, api]}
          - {key: env, operator: NotIn, values: [prod]}
          - {key: team, operator: Exists}
          - {key: legacy, operator: DoesNotExist}
        policyTypes: [Egress, Ingress]
        ingress:
        - from:
          - podSelector: {matchLabels: {pod: b}}
          - namespaceSelector: {matchLabels: {ns: y}}
          - namespaceSelector: {matchLabels: {ns: z}}
            podSelector: {matchLabels: {pod: c}}
          - ipBlock: {cidr: 10.244.0.0/16, except: [10.244.1.0/24, 10.244.2.7/32]}
          ports:
          - {port: 80}
          - {protocol: UDP, port: serve-81-udp}
          - {protocol: SCTP, port: 1000, endPort: 2000}
          - {protocol: UDP}
        egress:
        - to:
          - namespaceSelector: {}
        - ports: [{port: 53, protocol: UDP}]
    """))
    sel = p.pod_selector
    assert sel.match_labels == (("pod", "a"),)
    assert sel.match_expressions == (
        SelectorRequirement("tier", "In", ("web", "api")),
        SelectorRequirement("env", "NotIn", ("prod",)),
        SelectorRequirement("team", "Exists"),
        SelectorRequirement("legacy", "DoesNotExist"),
    )
    assert sel.matches({"pod": "a", "tier": "web", "team": "t", "env": "dev"})
    assert not sel.matches({"pod": "a", "tier": "web", "team": "t", "legacy": "1"})
    # canonical order whatever the manifest's order
    assert p.policy_types == ("Ingress", "Egress")
    (rule,) = p.ingress
    assert rule.peers == (
        PolicyPeer(pod_selector=LabelSelector.of({"pod": "b"})),
        PolicyPeer(namespace_selector=LabelSelector.of({"ns": "y"})),
        PolicyPeer(pod_selector=LabelSelector.of({"pod": "c"}), namespace_selector=LabelSelector.of({"ns": "z"})),
        PolicyPeer(ip_block=IPBlock(ipaddress.IPv4Network("10.244.0.0/16"),
                                    (ipaddress.IPv4Network("10.244.1.0/24"), ipaddress.IPv4Network("10.244.2.7/32")))),
    )
    assert rule.ports == (
        PolicyPort("TCP", 80),
        PolicyPort("UDP", "serve-81-udp"),
        PolicyPort("SCTP", 1000, 2000),
        PolicyPort("UDP", None),
    )
    assert p.egress[0].peers == (PolicyPeer(namespace_selector=LabelSelector()),)
    assert p.egress[0].ports == ()
    assert p.egress[1].peers == ()
    assert p.egress[1].ports == (PolicyPort("UDP", 53),)


def test_policy_types_default_adds_egress_only_when_egress_rules_exist():
    assert parse(spec("podSelector: {}\negress: [{}]\n")).policy_types == ("Ingress", "Egress")
    assert parse(spec("podSelector: {}\negress: []\n")).policy_types == ("Ingress",)
    assert parse(spec("podSelector: {}\negress:\n")).policy_types == ("Ingress",)
    assert parse(spec("podSelector: {}\npolicyTypes: []\negress: [{}]\n")).policy_types == ("Ingress", "Egress")
    assert parse(spec("podSelector: {}\npolicyTypes: [Egress]\n")).policy_types == ("Egress",)
    # explicit types win: ingress rules are kept but the policy does not affect ingress
    p = parse(spec("podSelector: {}\npolicyTypes: [Egress]\ningress: [{}]\n"))
    assert p.policy_types == ("Egress",) and not p.affects_ingress and len(p.ingress) == 1


def test_empty_and_absent_from_to_ports_all_mean_all():
    variants = [
        "ingress: [{}]",
        "ingress: [{from: [], ports: []}]",
        "ingress: [{from: null, ports: null}]",
        "ingress:\n- from:\n  ports:\n",
    ]
    rules = [parse(spec("podSelector: {}\n" + v + "\n")).ingress for v in variants]
    assert all(r == rules[0] for r in rules)
    assert rules[0][0].peers == () and rules[0][0].ports == ()
    # `ingress: []` and absent `ingress` both mean "no rule" (deny all when Ingress is a type)
    assert parse(spec("podSelector: {}\ningress: []\n")).ingress == ()
    assert parse(spec("podSelector: {}\n")).ingress == ()
    # egress: to
    assert parse(spec("podSelector: {}\negress: [{to: []}]\n")).egress[0].peers == ()


def test_protocol_defaults_to_tcp_and_port_absent_means_all_ports():
    p = parse(spec("podSelector: {}\ningress: [{ports: [{}]}]\n"))
    assert p.ingress[0].ports == (PolicyPort("TCP", None, None),)


def test_metadata_from_kubectl_get_is_accepted_and_cidr_host_bits_normalized():
    p = parse("""
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata:
          name: p
          namespace: x
          labels: {app: web}
          annotations: {note: anything goes here}
          uid: 0b8c
          resourceVersion: "12"
          generation: 1
          creationTimestamp: "2024-01-01T00:00:00Z"
        spec:
          podSelector: {}
          ingress: [{from: [{ipBlock: {cidr: 10.244.0.9/16}}]}]
        status: {}
    """)
    assert p.ingress[0].peers[0].ip_block.cidr == ipaddress.IPv4Network("10.244.0.0/16")


def test_path_prefix_may_be_empty():
    with pytest.raises(ConfigError) as e:
        parse("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p}\n", path="")
    assert str(e.value) == "cases/x.yaml: spec: required field is missing"


@pytest.mark.parametrize("name, ok", [
    ("http", True), ("serve-80-tcp", True), ("a", True), ("x1", True), ("abcdefghijklmno", True),
    ("abcdefghijklmnop", False), ("80", False), ("-web", False), ("web-", False), ("we--b", False),
    ("Web", False), ("we_b", False),
])
def test_named_port_rules(name, ok):
    assert (port_name_problem(name) is None) is ok


# -- invalid manifests: exact one-line errors ---------------------------------------------------
INVALID = [
    (
        "except outside cidr",
        spec("""
            podSelector: {}
            ingress:
            - from:
              - podSelector: {}
              - ipBlock: {cidr: 10.1.0.0/16, except: [10.0.0.0/8]}
        """),
        "cases/x.yaml: documents[0].spec.ingress[0].from[1].ipBlock.except[0]: 10.0.0.0/8 is not inside cidr 10.1.0.0/16",
    ),
    (
        "except equal to cidr",
        spec("""
            podSelector: {}
            egress: [{to: [{ipBlock: {cidr: 10.1.0.0/16, except: [10.1.0.0/16]}}]}]
        """),
        "cases/x.yaml: documents[0].spec.egress[0].to[0].ipBlock.except[0]: "
        "10.1.0.0/16 must be strictly inside cidr 10.1.0.0/16 (it excepts the whole block)",
    ),
    (
        "ipBlock combined with a selector",
        spec("""
            podSelector: {}
            ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8}, podSelector: {}}]}]
        """),
        "cases/x.yaml: documents[0].spec.ingress[0].from[0].ipBlock: may not be combined with podSelector "
        "or namespaceSelector in one peer (use separate peers)",
    ),
    (
        "IPv6 except of an IPv4 cidr",
        spec("""
            podSelector: {}
            ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8, except: ["fd00::/64"]}}]}]
        """),
        "cases/x.yaml: documents[0].spec.ingress[0].from[0].ipBlock.except[0]: fd00::/64 is not inside cidr 10.0.0.0/8",
    ),
    (
        "cidr without prefix",
        spec("""
            podSelector: {}
            ingress: [{from: [{ipBlock: {cidr: 10.0.0.1}}]}]
        """),
        "cases/x.yaml: documents[0].spec.ingress[0].from[0].ipBlock.cidr: '10.0.0.1' is not a CIDR "
        "(write it as address/prefix, e.g. 10.0.0.1/32)",
    ),
    (
        "garbage cidr",
        spec("""
            podSelector: {}
            ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/33}}]}]
        """),
        "cases/x.yaml: documents[0].spec.ingress[0].from[0].ipBlock.cidr: '10.0.0.0/33' is not a valid CIDR",
    ),
    (
        "empty peer",
        spec("""
            podSelector: {}
            ingress: [{from: [{}]}]
        """),
        "cases/x.yaml: documents[0].spec.ingress[0].from[0]: must specify one of podSelector, namespaceSelector "
        "or ipBlock",
    ),
    (
        "In without values",
        spec("""
            podSelector:
              matchExpressions: [{key: pod, operator: In, values: []}]
        """),
        "cases/x.yaml: documents[0].spec.podSelector.matchExpressions[0].values: must be non-empty when operator is In",
    ),
    (
        "Exists with values",
        spec("""
            podSelector: {}
            ingress: [{from: [{namespaceSelector: {matchExpressions: [{key: ns, operator: Exists, values: [x]}]}}]}]
        """),
        "cases/x.yaml: documents[0].spec.ingress[0].from[0].namespaceSelector.matchExpressions[0].values: "
        "must be empty when operator is Exists",
    ),
    (
        "unknown operator",
        spec("""
            podSelector:
              matchExpressions: [{key: pod, operator: Equals, values: [a]}]
        """),
        "cases/x.yaml: documents[0].spec.podSelector.matchExpressions[0].operator: "
        "'Equals' is not one of In, NotIn, Exists, DoesNotExist",
    ),
    (
        "unknown protocol",
        spec("""
            podSelector: {}
            ingress: [{ports: [{protocol: ICMP, port: 80}]}]
        """),
        "cases/x.yaml: documents[0].spec.ingress[0].ports[0].protocol: 'ICMP' is not a supported protocol "
        "(TCP, UDP or SCTP)",
    ),
    (
        "port out of range",
        spec("""
            podSelector: {}
            ingress: [{ports: [{port: 70000}]}]
        """),
        "cases/x.yaml: documents[0].spec.ingress[0].ports[0].port: 70000 is not a valid port number (1-65535)",
    ),
    (
        "quoted number as port",
        spec("""
            podSelector: {}
            ingress: [{ports: [{port: "80"}]}]
        """),
        "cases/x.yaml: documents[0].spec.ingress[0].ports[0].port: named port '80' must contain at least one "
        "letter (write a port number unquoted)",
    ),
    (
        "named port too long",
        spec("""
            podSelector: {}
            egress: [{ports: [{port: a-very-long-port-name}]}]
        """),
        "cases/x.yaml: documents[0].spec.egress[0].ports[0].port: named port 'a-very-long-port-name' is longer "
        "than 15 characters",
    ),
    (
        "endPort below port",
        spec("""
            podSelector: {}
            ingress: [{ports: [{port: 81, endPort: 80}]}]
        """),
        "cases/x.yaml: documents[0].spec.ingress[0].ports[0].endPort: 80 must be greater than or equal to port 81",
    ),
    (
        "endPort with a named port",
        spec("""
            podSelector: {}
            ingress: [{ports: [{port: http, endPort: 90}]}]
        """),
        "cases/x.yaml: documents[0].spec.ingress[0].ports[0].endPort: may not be set when port is a named "
        "port ('http')",
    ),
    (
        "endPort without port",
        spec("""
            podSelector: {}
            ingress: [{ports: [{endPort: 90}]}]
        """),
        "cases/x.yaml: documents[0].spec.ingress[0].ports[0].port: required when endPort is set",
    ),
    (
        "bad policy type",
        spec("""
            podSelector: {}
            policyTypes: [Ingress, Both]
        """),
        "cases/x.yaml: documents[0].spec.policyTypes[1]: 'Both' is not a policy type (Ingress or Egress)",
    ),
    (
        "duplicate policy type",
        spec("""
            podSelector: {}
            policyTypes: [Egress, Egress]
        """),
        "cases/x.yaml: documents[0].spec.policyTypes[1]: duplicate policy type 'Egress'",
    ),
    (
        "missing podSelector",
        spec("""
            policyTypes: [Ingress]
        """),
        "cases/x.yaml: documents[0].spec.podSelector: required field is missing",
    ),
    (
        "typo in a peer",
        spec("""
            podSelector: {}
            ingress: [{from: [{namespaceSelecter: {}}]}]
        """),
        "cases/x.yaml: documents[0].spec.ingress[0].from[0].namespaceSelecter: unknown field "
        "(did you mean 'namespaceSelector'?)",
    ),
    (
        "from in an egress rule",
        spec("""
            podSelector: {}
            egress: [{from: [{podSelector: {}}]}]
        """),
        "cases/x.yaml: documents[0].spec.egress[0].from: unknown field (known: ports, to)",
    ),
    (
        "bad label value",
        spec("""
            podSelector: {matchLabels: {pod: "a b"}}
        """),
        "cases/x.yaml: documents[0].spec.podSelector.matchLabels.pod: label value 'a b' is invalid "
        "(up to 63 of [A-Za-z0-9-_.], alphanumeric at both ends)",
    ),
    (
        "bad label key in an expression",
        spec("""
            podSelector:
              matchExpressions: [{key: "-pod", operator: Exists}]
        """),
        "cases/x.yaml: documents[0].spec.podSelector.matchExpressions[0].key: label key '-pod' is invalid "
        "(name part: up to 63 of [A-Za-z0-9-_.], alphanumeric at both ends)",
    ),
    (
        "old apiVersion",
        "apiVersion: extensions/v1beta1\nkind: NetworkPolicy\nmetadata: {name: p}\nspec: {podSelector: {}}\n",
        "cases/x.yaml: documents[0].apiVersion: 'extensions/v1beta1' is not supported for NetworkPolicy "
        "(use networking.k8s.io/v1)",
    ),
    (
        "bad namespace",
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: X_1}\n"
        "spec: {podSelector: {}}\n",
        "cases/x.yaml: documents[0].metadata.namespace: 'X_1' is not a valid DNS label (lowercase alphanumerics and '-')",
    ),
    (
        "ports not a list",
        spec("""
            podSelector: {}
            ingress: [{ports: {port: 80}}]
        """),
        "cases/x.yaml: documents[0].spec.ingress[0].ports: must be a list, got a mapping",
    ),
    (
        "boolean port",
        spec("""
            podSelector: {}
            ingress: [{ports: [{port: true}]}]
        """),
        "cases/x.yaml: documents[0].spec.ingress[0].ports[0].port: must be an integer or a string, got a boolean (True)",
    ),
]


@pytest.mark.parametrize("text, expected", [(t, e) for _, t, e in INVALID], ids=[n for n, _, _ in INVALID])
def test_invalid_policy_one_line_error(text, expected):
    assert error(text) == expected
