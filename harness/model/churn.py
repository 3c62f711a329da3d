"""A churn workload: the stream of cluster changes a busy production cluster produces, as data.
Pure, seeded, deterministic; read strictly from a ``churn:`` block of a topology/scenario YAML.

    churn:
      duration_s: 120
      seed: 1
      namespaces: 8              # churn-00 .. churn-07 (created if the topology lacks them)
      pods:
        create_per_s: 2.0        # Poisson arrivals of pod creations (rollouts, autoscaling)
        lifetime_s: 30           # each created pod is deleted this long after its creation
        status_update_delay: "lognormal:0.4,0.3"   # CNI ADD -> the pod's IP in a status update
      bursts:                    # CronJobs: many pods at each minute boundary, across namespaces
        every_s: 60
        pods: 12
        spread_s: 2.0            # the CronJob controller's creations spread over this
      label_changes_per_s: 0.1   # a live churn pod changes labels (requests a full sync)
      policy_changes_per_s: 0.05 # a policy of a churn namespace is updated (requests a full sync)

Both consumers read the same ``ChurnOp`` list (``schedule(spec)``): the simulation
(``harness.sim``) feeds it to its model of every node's controller; the kernel driver
(``harness.bench.churn``) plays it against a lab. A pod's IP arrives by a status update, as in
Kubernetes (kubelet reports ``status.podIP`` after the CNI ADD): a creation is two events, the
pod without IP (kube-router ignores it) and, ``status_update_delay`` later, the IP.

Assumption (no source models it): arrivals are Poisson; a burst's creations are uniform over
``spread_s`` after the boundary; lifetimes are fixed. Namespaces are chosen round-robin.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

from harness.errors import ConfigError
from harness.model.delay import DelayModel
from harness.model.delay import parse_delay as parse_delay_spec
from harness.model.fields import Fields

MAX_DURATION_S = 86_400.0
MAX_OPS = 5_000_000  # a schedule beyond this is a typo, not a workload

# Delays use the delivery grammar (harness.model.delay: the controller's event delivery reads it too).
Delay = DelayModel


def parse_delay(value: Any, source: str | None, field_name: str) -> Delay:
    """``0.3``, ``"fixed:0.3"``, ``"uniform:0.1,0.5"``, ``"lognormal:0.4,0.3"``, ``"exponential:0.2"``
    (a churn field must name a delay: no ``None``)."""
    if value is None:
        raise ConfigError(source, field_name, f"{value!r} is not a delay")
    return parse_delay_spec(value, source, field_name)


@dataclass(frozen=True)
class Bursts:
    """CronJob-like bursts: ``pods`` creations at every ``every_s`` boundary, over ``spread_s``."""

    every_s: float = 60.0
    pods: int = 0
    spread_s: float = 1.0


@dataclass(frozen=True)
class ChurnSpec:
    """The churn workload (see the module docstring); rates per second, times in seconds."""

    duration_s: float = 60.0
    seed: int = 0
    namespaces: int = 4
    create_per_s: float = 0.0
    lifetime_s: float = 30.0
    status_update_delay: Delay = field(default_factory=Delay)
    bursts: Bursts = field(default_factory=Bursts)
    label_changes_per_s: float = 0.0
    policy_changes_per_s: float = 0.0

    @property
    def namespace_names(self) -> list[str]:
        return [f"churn-{i:02d}" for i in range(self.namespaces)]

    @property
    def creations_per_s(self) -> float:
        """Mean pod creations per second, bursts included."""
        return self.create_per_s + (self.bursts.pods / self.bursts.every_s if self.bursts.pods else 0.0)

    def describe(self) -> dict[str, Any]:
        return {"duration_s": self.duration_s, "seed": self.seed, "namespaces": self.namespaces,
                "create_per_s": self.create_per_s, "lifetime_s": self.lifetime_s,
                "status_update_delay": str(self.status_update_delay),
                "bursts": {"every_s": self.bursts.every_s, "pods": self.bursts.pods,
                           "spread_s": self.bursts.spread_s},
                "label_changes_per_s": self.label_changes_per_s,
                "policy_changes_per_s": self.policy_changes_per_s}


def _number(f: Fields, key: str, default: float, *, lo: float = 0.0, hi: float = math.inf,
            strict_lo: bool = False) -> float:
    v = f.opt(key, (int, float), default)
    if isinstance(v, bool):
        raise f.error(key, f"must be a number, got a boolean ({v})")
    v = float(v)
    if not math.isfinite(v) or v < lo or (strict_lo and v == lo) or v > hi:
        bound = f"> {lo:g}" if strict_lo else f">= {lo:g}"
        raise f.error(key, f"must be {bound}{'' if hi == math.inf else f' and <= {hi:g}'}, got {v:g}")
    return v


def churn_from_dict(data: Any, source: str | None = None, path: str = "churn") -> ChurnSpec:
    """A ``ChurnSpec`` from the parsed ``churn:`` mapping; ConfigError (file: field: problem)."""
    f = Fields(data, source, path, what="a churn mapping")
    duration = _number(f, "duration_s", 60.0, lo=0.0, hi=MAX_DURATION_S, strict_lo=True)
    seed = f.opt("seed", int, 0)
    namespaces = f.opt("namespaces", int, 4)
    if isinstance(namespaces, bool) or not 1 <= namespaces <= 1000:
        raise f.error("namespaces", f"must be 1-1000, got {namespaces!r}")
    pods = Fields(f.opt("pods", dict, {}), source, f.field("pods"))
    create = _number(pods, "create_per_s", 0.0, hi=10_000)
    lifetime = _number(pods, "lifetime_s", 30.0, strict_lo=True)
    status = parse_delay(pods.opt("status_update_delay", (int, float, str), 0.0), source,
                         pods.field("status_update_delay"))
    pods.done()
    b = Fields(f.opt("bursts", dict, {}), source, f.field("bursts"))
    every = _number(b, "every_s", 60.0, strict_lo=True)
    burst_pods = b.opt("pods", int, 0)
    if isinstance(burst_pods, bool) or not 0 <= burst_pods <= 100_000:
        raise b.error("pods", f"must be 0-100000, got {burst_pods!r}")
    spread = _number(b, "spread_s", 1.0)
    if spread > every:
        raise b.error("spread_s", f"{spread:g} s is longer than every_s ({every:g} s)")
    b.done()
    labels = _number(f, "label_changes_per_s", 0.0, hi=10_000)
    policies = _number(f, "policy_changes_per_s", 0.0, hi=10_000)
    f.done()
    spec = ChurnSpec(duration, seed, namespaces, create, lifetime, status, Bursts(every, burst_pods, spread),
                     labels, policies)
    expected = duration * (2 * spec.creations_per_s + labels + policies)
    if expected > MAX_OPS:
        raise ConfigError(source, path, f"about {expected:,.0f} operations exceed the limit of {MAX_OPS:,}")
    return spec


def load_churn(path: str) -> ChurnSpec:
    """The ``churn:`` block of the YAML file at ``path`` (a topology or scenario file)."""
    from harness.model.fields import load_yaml_documents

    docs = load_yaml_documents(path)
    if len(docs) != 1 or not isinstance(docs[0], dict):
        raise ConfigError(path, None, "expected one YAML mapping with a churn: block")
    if "churn" not in docs[0]:
        raise ConfigError(path, "churn", "required field is missing")
    return churn_from_dict(docs[0]["churn"], path)


# -- the schedule ------------------------------------------------------------------------------
CREATE = "create"  # the pod object exists (no IP): kube-router ignores it
IP = "ip"  # the pod's IP arrives by status update: the event that requests a sync
DELETE = "delete"
RELABEL = "relabel"
POLICY = "policy"
KINDS = (CREATE, IP, DELETE, RELABEL, POLICY)


@dataclass(frozen=True)
class ChurnOp:
    """One change at ``t_s`` seconds after the start: ``kind`` (create, ip, delete, relabel,
    policy), the pod (``namespace``/``name``, ``index`` = creation order) or the policy's namespace.
    ``burst`` says a CronJob burst created it; ``slot`` is a uniform draw in [0, 1) a consumer may
    use to place the pod on a node (the same for every op of one pod)."""

    t_s: float
    kind: str
    namespace: str
    name: str = ""
    index: int = -1
    burst: bool = False
    slot: float = 0.0

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def _poisson(rng: random.Random, rate: float, duration: float) -> list[float]:
    out, t = [], 0.0
    if rate <= 0:
        return out
    while True:
        t += rng.expovariate(rate)
        if t >= duration:
            return out
        out.append(t)


def schedule(spec: ChurnSpec) -> list[ChurnOp]:
    """Every op of the workload, sorted by time (ties: creation order). Deletions and status
    updates past ``duration_s`` are kept (the pods' lives end), so a consumer runs until the last op."""
    rng = random.Random(f"churn:{spec.seed}")
    namespaces = spec.namespace_names
    creations: list[tuple[float, bool]] = [(t, False) for t in _poisson(rng, spec.create_per_s, spec.duration_s)]
    if spec.bursts.pods:
        boundary = spec.bursts.every_s
        while boundary < spec.duration_s:
            creations += [(boundary + rng.uniform(0, spec.bursts.spread_s), True) for _ in range(spec.bursts.pods)]
            boundary += spec.bursts.every_s
    creations.sort()
    ops: list[ChurnOp] = []
    alive: list[tuple[float, float, ChurnOp]] = []  # (ip time, delete time, create op)
    for i, (t, burst) in enumerate(creations):
        ns = namespaces[i % len(namespaces)]
        name = f"{'cron' if burst else 'pod'}-{i:06d}"
        slot = rng.random()
        create = ChurnOp(t, CREATE, ns, name, i, burst, slot)
        t_ip = t + spec.status_update_delay.draw(rng)
        t_del = max(t + spec.lifetime_s, t_ip)
        ops += [create, ChurnOp(t_ip, IP, ns, name, i, burst, slot), ChurnOp(t_del, DELETE, ns, name, i, burst, slot)]
        alive.append((t_ip, t_del, create))
    for t in _poisson(rng, spec.label_changes_per_s, spec.duration_s):
        live = [c for t_ip, t_del, c in alive if t_ip < t < t_del]
        if live:  # a label change of a pod with an IP (kube-router syncs on it)
            c = rng.choice(live)
            ops.append(ChurnOp(t, RELABEL, c.namespace, c.name, c.index, c.burst, c.slot))
    for t in _poisson(rng, spec.policy_changes_per_s, spec.duration_s):
        ops.append(ChurnOp(t, POLICY, rng.choice(namespaces)))
    ops.sort(key=lambda o: (o.t_s, o.index, KINDS.index(o.kind)))
    return ops


def place(slot: float, nodes: int, client_nodes: int, client_share: float) -> int:
    """The node index (0 .. nodes-1) a churn pod lands on, from its ``slot`` draw: a share
    ``client_share`` of the pods goes to the client nodes 1..client_nodes (the probed ones: a
    kernel run's real nodes), the rest spreads over the other nodes; node 0 (the server's) gets
    none. The simulation and the kernel driver place pods with this same function."""
    if nodes < 2:
        raise ValueError("churn needs at least 2 nodes (node 0 holds the server)")
    client_nodes = max(1, min(client_nodes, nodes - 1))
    others = nodes - 1 - client_nodes
    if others == 0 or slot < client_share:
        frac = slot / client_share if others and client_share > 0 else slot
        return 1 + min(int(frac * client_nodes), client_nodes - 1)
    frac = (slot - client_share) / (1 - client_share)
    return 1 + client_nodes + min(int(frac * others), others - 1)
