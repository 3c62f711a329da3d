"""Conformance case files: loading, strict validation and the model change of each step (pure).

A case is a topology plus ordered steps, shaped like the upstream NetworkPolicy e2e tests::

    name: allow from namespace y to x/a
    topology: k8s-e2e            # a shipped topology name, or a path (relative to the case file)
    steps:
      - description: create the policy
        apply: [ {apiVersion: networking.k8s.io/v1, kind: NetworkPolicy, ...} ]
        delete: []               # "namespace/name" of policies to delete
        relabel: []              # {kind: Namespace|Pod, name: y | x/a, labels: {full label set after}}
        probe: {port: 80, protocol: TCP}
        ignore_self: true        # skip pod-to-itself cells
        expect:                  # optional; the oracle's table when absent
          default: allow
          exceptions: [ {from: z/b, to: x/a, verdict: deny} ]

``apply`` takes NetworkPolicy manifests (create, or replace one of the same name: a policy
update) and Namespace manifests (create, or replace the labels of an existing one). Pods come
from the topology; change their labels with ``relabel``. Strings in manifests may hold
``{{podIP:x/a}}`` (the pod's IP) and ``{{hostMask}}`` (32: the upstream e2e suite writes a
single pod as ``podIP/hostMask`` in ipBlocks); they are substituted from the model before the
manifest is parsed. ``from``/``to`` in exceptions name a pod (``x/a``) or a pattern (``x/*``,
``*/a``, ``*``); when several exceptions match a cell the last one wins.

``load_case`` validates the file and then dry-runs every step on the topology, so a bad
manifest, an unknown pod, a delete of a policy that does not exist at that step, or an unknown
placeholder is a one-line ``ConfigError`` naming the file and the field before any kernel work.
"""

from __future__ import annotations

import copy
import fnmatch
import logging
import os
import re
from dataclasses import dataclass, field
from typing import Any

from harness.analysis.truthtable import TableDiff, TruthTable, build_expectation, diff, expected_table
from harness.errors import ConfigError
from harness.model.cluster import NAMESPACE_NAME_LABEL, PROTOCOLS, Cluster, Namespace, PodKind
from harness.model.fields import Fields, items, load_yaml_documents
from harness.model.labels import validate_labels, validate_name
from harness.model.limits import MAX_CASE_STEPS

log = logging.getLogger(__name__)

VERDICTS = ("allow", "deny")
RELABEL_KINDS = ("Namespace", "Pod")
APPLY_KINDS = ("NetworkPolicy", "Namespace")
HOST_MASK = "32"  # IPv4 only: the lab's address plan has no IPv6
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_]+)\s*(?::\s*([^{}]*?))?\s*\}\}")
_PLACEHOLDER_NAMES = ("podIP", "hostMask")


@dataclass(frozen=True)
class Probe:
    """What a step probes between every pair of pods."""

    port: int = 80
    protocol: str = "TCP"

    def __str__(self) -> str:
        return f"{self.protocol}/{self.port}"


@dataclass
class Relabel:
    """Replace the whole label set of a namespace or pod (``kubectl label --overwrite`` of all keys)."""

    kind: str  # one of RELABEL_KINDS
    name: str  # namespace name, or pod key "ns/name"
    labels: dict[str, str]
    field: str = ""


@dataclass
class ExpectRule:
    """One exception of an explicit expectation: cells matching ``src``/``dst`` get ``verdict``."""

    src: str
    dst: str
    verdict: str
    field: str = ""

    def matches(self, src: str, dst: str) -> bool:
        return fnmatch.fnmatchcase(src, self.src) and fnmatch.fnmatchcase(dst, self.dst)


@dataclass
class Expectation:
    """A hand-written truth table: ``default`` everywhere but the exceptions (the last match wins)."""

    default: str
    exceptions: list[ExpectRule] = field(default_factory=list)

    def verdict(self, src: str, dst: str) -> str:
        """``allow`` or ``deny`` for the cell ``src -> dst``."""
        result = self.default
        for rule in self.exceptions:
            if rule.matches(src, dst):
                result = rule.verdict
        return result

    def allowed(self, src: str, dst: str) -> bool:
        return self.verdict(src, dst) == "allow"


@dataclass
class Step:
    index: int
    description: str
    apply: list[dict[str, Any]] = field(default_factory=list)  # raw manifests, placeholders unresolved
    delete: list[str] = field(default_factory=list)
    relabel: list[Relabel] = field(default_factory=list)
    probe: Probe = field(default_factory=Probe)
    ignore_self: bool = True
    expect: Expectation | None = None
    field: str = ""

    @property
    def changes_cluster(self) -> bool:
        """Whether the step changes the model (and so triggers a sync); a probe-only step does not."""
        return bool(self.apply or self.delete or self.relabel)


@dataclass
class Case:
    name: str
    topology: str  # as written in the file
    steps: list[Step]
    source: str = "<case>"

    @property
    def topology_ref(self) -> str:
        """The topology to load: a path made relative to the case file's directory, or a shipped name."""
        return resolve_topology(self.topology, self.source)

    def load_cluster(self) -> Cluster:
        """A fresh model of the case's topology (pods have their IPs: allocation is deterministic)."""
        from harness.model.topology import load_topology

        try:
            return load_topology(self.topology_ref)
        except ConfigError as e:
            if e.source and e.source != self.topology_ref and os.path.exists(str(e.source)):
                raise  # an error inside an existing topology file names that file already
            detail = e.message if str(e.source) == self.topology_ref and not e.field else str(e)
            raise ConfigError(self.source, "topology", f"{self.topology!r}: {detail}") from None


# -- topology references ------------------------------------------------------------------------
def resolve_topology(ref: str, source: str | None) -> str:
    """A topology path is taken relative to the case file when it exists there; a bare name
    (no slash, no .yaml) is a shipped topology and passed through."""
    if "/" not in ref and not ref.endswith((".yaml", ".yml")):
        return ref
    if not os.path.isabs(ref) and source and os.path.exists(source):
        beside = os.path.join(os.path.dirname(source), ref)
        if os.path.exists(beside):
            return beside
    return ref


# -- parsing ------------------------------------------------------------------------------------
def load_case(path: str, *, check: bool = True) -> Case:
    """Read and validate one case file. With ``check`` (the default) also load its topology and
    dry-run every step on it, so anything that would fail at run time fails here, in one line."""
    docs = load_yaml_documents(path)
    if len(docs) != 1:
        raise ConfigError(path, None, f"must hold exactly one YAML document, found {len(docs)}")
    case = parse_case(docs[0], path)
    if check:
        cluster = case.load_cluster()
        dry_run(case, cluster)
    return case


def parse_case(data: Any, source: str) -> Case:
    """The case structure from a parsed YAML mapping (no topology needed)."""
    f = Fields(data, source, "", what="a mapping with name, topology and steps")
    name = f.req("name", str)
    if not name.strip():
        raise f.error("name", "must not be empty")
    topology = f.req("topology", str)
    raw_steps = f.req("steps", list)
    f.done()
    if not raw_steps:
        raise ConfigError(source, "steps", "needs at least one step")
    if len(raw_steps) > MAX_CASE_STEPS:
        raise ConfigError(source, "steps", f"{len(raw_steps)} steps, more than the limit of {MAX_CASE_STEPS}")
    steps = [_parse_step(i, raw, source, path) for i, (path, raw) in enumerate(items(raw_steps, source, "steps"))]
    return Case(name=name, topology=topology, steps=steps, source=source)


def _parse_step(index: int, data: Any, source: str, path: str) -> Step:
    f = Fields(data, source, path, what="a mapping (a step)")
    description = f.req("description", str)
    apply = []
    for p, doc in items(f.opt("apply", list, []), source, f.field("apply")):
        if not isinstance(doc, dict):
            raise ConfigError(source, p, "must be a Kubernetes manifest (a mapping)")
        kind = doc.get("kind")
        if kind not in APPLY_KINDS:
            hint = " (pods come from the topology; change their labels with relabel)" if kind == "Pod" else ""
            raise ConfigError(source, f"{p}.kind", f"{kind!r} is not one of {', '.join(APPLY_KINDS)}{hint}")
        apply.append(doc)
    delete = []
    for p, ref in items(f.opt("delete", list, []), source, f.field("delete")):
        if not isinstance(ref, str) or ref.count("/") != 1 or not all(ref.split("/")):
            raise ConfigError(source, p, f"must be 'namespace/name' of a NetworkPolicy, got {ref!r}")
        delete.append(ref)
    relabel = [_parse_relabel(d, source, p) for p, d in items(f.opt("relabel", list, []), source, f.field("relabel"))]
    probe = _parse_probe(f.opt("probe", dict, None), source, f.field("probe"))
    ignore_self = f.opt("ignore_self", bool, True)
    raw_expect = f.opt("expect", dict, None)
    expect = _parse_expect(raw_expect, source, f.field("expect")) if raw_expect is not None else None
    f.done()
    return Step(index=index, description=description, apply=apply, delete=delete, relabel=relabel,
                probe=probe, ignore_self=ignore_self, expect=expect, field=path)


def _parse_relabel(data: Any, source: str, path: str) -> Relabel:
    f = Fields(data, source, path, what="a mapping {kind, name, labels}")
    kind = f.req("kind", str, choices=RELABEL_KINDS)
    name = f.req("name", str)
    if kind == "Pod" and (name.count("/") != 1 or not all(name.split("/"))):
        raise f.error("name", f"a pod is named 'namespace/name', got {name!r}")
    if kind == "Namespace":
        validate_name(name, source, f.field("name"), dns_label=True)
    if "labels" not in f.data:
        raise f.error("labels", "required field is missing (the full label set after the change; {} for none)")
    labels = validate_labels(f.opt("labels", dict, {}), source, f.field("labels"))
    f.done()
    return Relabel(kind=kind, name=name, labels=labels, field=path)


def _parse_probe(data: dict | None, source: str, path: str) -> Probe:
    if data is None:
        return Probe()
    f = Fields(data, source, path)
    port = f.opt("port", int, 80)
    if not 1 <= port <= 65535:
        raise f.error("port", f"{port} is not a port number (1-65535)")
    protocol = f.opt("protocol", str, "TCP", choices=PROTOCOLS)
    f.done()
    return Probe(port=port, protocol=protocol)


def _parse_expect(data: dict, source: str, path: str) -> Expectation:
    f = Fields(data, source, path, what="a mapping {default, exceptions}")
    default = f.req("default", str, choices=VERDICTS)
    rules = []
    for p, raw in items(f.opt("exceptions", list, []), source, f.field("exceptions")):
        g = Fields(raw, source, p, what="a mapping {from, to, verdict}")
        src = g.req("from", str)
        dst = g.req("to", str)
        verdict = g.req("verdict", str, choices=VERDICTS)
        g.done()
        for key, value in (("from", src), ("to", dst)):
            if value != "*" and (value.count("/") != 1 or not all(value.split("/"))):
                raise g.error(key, f"must be a pod 'namespace/name' or a pattern like 'x/*', '*/a', '*'; got {value!r}")
        rules.append(ExpectRule(src=src, dst=dst, verdict=verdict, field=p))
    f.done()
    return Expectation(default=default, exceptions=rules)


# -- the model side of a step -------------------------------------------------------------------
def probe_pods(cluster: Cluster) -> list[str]:
    """Keys of the pods a truth table covers: every pod realized in the kernel, sorted."""
    return sorted(p.key for p in cluster.pods.values() if p.kind is not PodKind.VIRTUAL)


def substitute(value: Any, cluster: Cluster, source: str | None, path: str) -> Any:
    """``value`` with ``{{podIP:ns/name}}`` and ``{{hostMask}}`` replaced in every string (deep copy)."""
    if isinstance(value, dict):
        return {k: substitute(v, cluster, source, f"{path}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, cluster, source, f"{path}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str) or "{{" not in value:
        return value

    def replace(m: re.Match) -> str:
        name, arg = m.group(1), m.group(2)
        if name == "hostMask":
            if arg:
                raise ConfigError(source, path, f"{{{{hostMask}}}} takes no argument, got {arg!r}")
            return HOST_MASK
        if name == "podIP":
            if not arg:
                raise ConfigError(source, path, "{{podIP:ns/name}} needs a pod, e.g. {{podIP:x/a}}")
            pod = cluster.pods.get(arg)
            if pod is None:
                raise ConfigError(source, path, f"{{{{podIP:{arg}}}}}: no pod {arg!r} in the topology")
            if pod.ip is None:
                raise ConfigError(source, path, f"{{{{podIP:{arg}}}}}: the pod has no IP")
            return str(pod.ip)
        raise ConfigError(source, path, f"unknown placeholder {m.group(0)!r} (known: {', '.join(_PLACEHOLDER_NAMES)})")

    result = _PLACEHOLDER.sub(replace, value)
    if "{{" in result:
        raise ConfigError(source, path, f"malformed placeholder in {value!r} (use {{{{podIP:x/a}}}} or {{{{hostMask}}}})")
    return result


def apply_step(cluster: Cluster, step: Step, source: str | None) -> list[str]:
    """Change ``cluster`` as the step says (apply, then delete, then relabel), like API events.

    Returns a short description of each change, for logs. Raises ConfigError naming the field
    for anything the API server would refuse (unknown namespace, pod or policy)."""
    changes: list[str] = []
    for i, raw in enumerate(step.apply):
        path = f"{step.field}.apply[{i}]"
        doc = substitute(raw, cluster, source, path)
        if doc["kind"] == "Namespace":
            changes.append(_apply_namespace(cluster, doc, source, path))
        else:
            changes.append(_apply_policy(cluster, doc, source, path))
    for i, ref in enumerate(step.delete):
        if ref not in cluster.policies:
            known = ", ".join(sorted(cluster.policies)) or "none"
            raise ConfigError(source, f"{step.field}.delete[{i}]",
                              f"no NetworkPolicy {ref!r} exists at this step (existing: {known})")
        del cluster.policies[ref]
        changes.append(f"deleted networkpolicy {ref}")
    for r in step.relabel:
        if r.kind == "Pod":
            pod = cluster.pods.get(r.name)
            if pod is None:
                raise ConfigError(source, f"{r.field}.name", f"no pod {r.name!r} in the topology")
            pod.labels = dict(r.labels)
        else:
            ns = cluster.namespaces.get(r.name)
            if ns is None:
                raise ConfigError(source, f"{r.field}.name", f"no namespace {r.name!r} in the topology")
            # The API server keeps kubernetes.io/metadata.name on every namespace whatever is set.
            ns.labels = {**r.labels, NAMESPACE_NAME_LABEL: ns.name}
        changes.append(f"relabeled {r.kind.lower()} {r.name}: {r.labels}")
    return changes


def _apply_namespace(cluster: Cluster, doc: dict, source: str | None, path: str) -> str:
    f = Fields(doc, source, path)
    f.req("apiVersion", str, choices=("v1",))
    f.req("kind", str)
    meta = Fields(f.req("metadata", dict), source, f.field("metadata"))
    name = validate_name(meta.req("name", str), source, meta.field("name"), dns_label=True)
    labels = validate_labels(meta.opt("labels", dict, {}), source, meta.field("labels"))
    meta.ignore("annotations")
    meta.done()
    f.ignore("spec", "status")
    f.done()
    if name in cluster.namespaces:
        cluster.namespaces[name].labels = {**labels, NAMESPACE_NAME_LABEL: name}
        return f"updated namespace {name}"
    cluster.namespaces[name] = Namespace(name, dict(labels))
    return f"created namespace {name}"


def _apply_policy(cluster: Cluster, doc: dict, source: str | None, path: str) -> str:
    from harness.model.netpol import check_ip_families, parse_network_policy

    policy = parse_network_policy(doc, source, path)
    check_ip_families(policy, cluster, source, path)
    if policy.namespace not in cluster.namespaces:
        raise ConfigError(source, f"{path}.metadata.namespace", f"namespace {policy.namespace!r} does not exist")
    verb = "updated" if policy.key in cluster.policies else "created"
    cluster.policies[policy.key] = policy
    return f"{verb} networkpolicy {policy.key}"


def check_expectation(step: Step, pods: list[str], source: str | None) -> None:
    """Every ``from``/``to`` of the step's exceptions must match at least one pod."""
    if step.expect is None:
        return
    for rule in step.expect.exceptions:
        for key, pattern in (("from", rule.src), ("to", rule.dst)):
            if not any(fnmatch.fnmatchcase(p, pattern) for p in pods):
                raise ConfigError(source, f"{rule.field}.{key}", f"{pattern!r} matches no pod of the topology")


def dry_run(case: Case, cluster: Cluster) -> list[Cluster]:
    """Apply every step to a copy of ``cluster``; return the model after each step (validates the
    whole case without a kernel)."""
    model = copy.deepcopy(cluster)
    pods = probe_pods(model)
    if not pods:
        raise ConfigError(case.source, "topology", f"{case.topology!r} has no pod that can be probed")
    states = []
    for step in case.steps:
        check_expectation(step, pods, case.source)
        apply_step(model, step, case.source)
        states.append(copy.deepcopy(model))
    return states


# -- expected tables ----------------------------------------------------------------------------
def oracle_table(step: Step, cluster: Cluster, pods: list[str], family: str = "IPv4") -> TruthTable:
    """The oracle's truth table for the step's probe on ``cluster`` (the model after the step),
    over IP ``family``."""
    return expected_table(cluster, pods, step.probe.port, step.probe.protocol, ignore_self=step.ignore_self,
                          family=family)


def hand_table(step: Step, pods: list[str]) -> TruthTable | None:
    """The step's hand-written ``expect`` as a truth table, or None when the step has none."""
    if step.expect is None:
        return None
    return build_expectation(pods, step.expect.default,
                             [(r.src, r.dst, r.verdict) for r in step.expect.exceptions],
                             ignore_self=step.ignore_self)


@dataclass
class PlannedStep:
    """A step with the model after it and what the run must observe."""

    step: Step
    cluster: Cluster
    expected: TruthTable  # the hand-written table when there is one, else the oracle's
    oracle: TruthTable
    hand: TruthTable | None

    @property
    def oracle_vs_hand(self) -> TableDiff | None:
        """Where the oracle disagrees with the hand-written table (None without one)."""
        return diff(self.hand, self.oracle) if self.hand is not None else None


def plan(case: Case, cluster: Cluster | None = None) -> list[PlannedStep]:
    """Dry-run ``case`` on its topology (or on ``cluster``) and compute every step's expected
    table. Pure: this is what a run will compare its observations with."""
    base = cluster if cluster is not None else case.load_cluster()
    pods = probe_pods(base)
    out = []
    for step, state in zip(case.steps, dry_run(case, base), strict=True):
        hand = hand_table(step, pods)
        oracle = oracle_table(step, state, pods)
        out.append(PlannedStep(step, state, hand if hand is not None else oracle, oracle, hand))
    return out


def uses_field(case: Case, key: str) -> bool:
    """Whether any manifest of the case sets ``key`` anywhere (e.g. ``endPort``, which profiles
    of kube-router releases before endPort support do not render)."""
    def walk(value: Any) -> bool:
        if isinstance(value, dict):
            return key in value or any(walk(v) for v in value.values())
        if isinstance(value, list):
            return any(walk(v) for v in value)
        return False

    return any(walk(doc) for step in case.steps for doc in step.apply)
