"""Delivery delay models: how long an event takes from the API server to one node's controller
(kubelet -> API server -> watch -> informer), fixed or drawn from a seeded distribution. Pure.

A model is written as a short spec (scenario files, CLI): ``0.05`` or ``fixed:0.05`` (seconds),
``uniform:0.01,0.2``, ``lognormal:0.08,0.5`` (median, sigma), ``exponential:0.05`` (mean),
``exponential:0.05,0.01`` (mean, minimum). Every node draws from its own generator seeded with
``(seed, node)``, so a run is repeatable and adding a node does not change the others' delays.

An informer's watch stream is ordered, so one node sees events in emission order: a
``NodeSchedule`` delivers an event no earlier than the one before it (FIFO), whatever delay was
drawn for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# the distributions and their spec grammar live in the model layer (the churn workload reads them too)
from harness.model.delay import NO_DELAY, NS, DelayModel, DelaySampler, parse_delay

__all__ = ["NS", "NO_DELAY", "DelayModel", "DelaySampler", "parse_delay", "Delivery", "NodeSchedule"]


@dataclass
class Delivery:
    """Delivery delays for a whole run: ``default`` for every node, ``per_node`` overrides, one
    ``seed``. ``Delivery.parse({"default": "uniform:0.01,0.1", "node-a": 0.2}, seed=7)``."""

    default: DelayModel = NO_DELAY
    per_node: dict[str, DelayModel] = field(default_factory=dict)
    seed: int = 0

    @classmethod
    def parse(cls, spec: str | float | dict | Delivery | None, seed: int = 0, source: str | None = None,
              field: str = "delivery") -> Delivery:
        """From a single spec (all nodes) or a mapping ``{"default": spec, "<node>": spec}``."""
        if isinstance(spec, Delivery):
            return spec
        if isinstance(spec, dict):
            per = {str(k): parse_delay(v, source, f"{field}.{k}") for k, v in spec.items() if k != "default"}
            return cls(parse_delay(spec.get("default"), source, f"{field}.default"), per, seed)
        return cls(parse_delay(spec, source, field), {}, seed)

    def __str__(self) -> str:
        parts = [str(self.default)] + [f"{n}={m}" for n, m in sorted(self.per_node.items())]
        return " ".join(parts) + (f" (seed {self.seed})" if self.seed else "")

    def model_for(self, node: str) -> DelayModel:
        return self.per_node.get(node, self.default)

    def schedule(self, node: str) -> NodeSchedule:
        return NodeSchedule(self.model_for(node).sampler(node, self.seed))


@dataclass
class NodeSchedule:
    """Delivery times of one node's watch stream: ``deliver_at(emitted_ns)`` = emission + drawn
    delay, but never before the previous event's delivery (events stay in order)."""

    sampler: DelaySampler
    last_ns: int = 0

    def deliver_at(self, emitted_ns: int) -> int:
        at = max(emitted_ns + self.sampler.next_ns(), self.last_ns)
        self.last_ns = at
        return at
