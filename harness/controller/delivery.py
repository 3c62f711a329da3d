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

import math
import random
from dataclasses import dataclass, field

from harness.errors import ConfigError

NS = 1_000_000_000


@dataclass(frozen=True)
class DelayModel:
    """A delay distribution; ``kind`` is fixed | uniform | lognormal | exponential, ``params`` in
    seconds (fixed: value; uniform: low, high; lognormal: median, sigma; exponential: mean[, min])."""

    kind: str
    params: tuple[float, ...]

    def sampler(self, node: str, seed: int = 0) -> DelaySampler:
        """A repeatable stream of delays for ``node``."""
        return DelaySampler(self, random.Random(f"{seed}:{node}"))

    @property
    def mean_s(self) -> float:
        """The distribution's mean in seconds."""
        p = self.params
        if self.kind == "fixed":
            return p[0]
        if self.kind == "uniform":
            return (p[0] + p[1]) / 2
        if self.kind == "lognormal":
            return p[0] * math.exp(p[1] ** 2 / 2)
        return p[0] + (p[1] if len(p) > 1 else 0.0)

    def __str__(self) -> str:
        return f"{self.kind}:{','.join(f'{x:g}' for x in self.params)}"


@dataclass
class DelaySampler:
    model: DelayModel
    rng: random.Random

    def next_s(self) -> float:
        """The next delay in seconds (never negative)."""
        k, p, r = self.model.kind, self.model.params, self.rng
        if k == "fixed":
            return p[0]
        if k == "uniform":
            return r.uniform(p[0], p[1])
        if k == "lognormal":
            return r.lognormvariate(math.log(p[0]), p[1]) if p[0] > 0 else 0.0
        minimum = p[1] if len(p) > 1 else 0.0
        return minimum + (r.expovariate(1.0 / p[0]) if p[0] > 0 else 0.0)

    def next_ns(self) -> int:
        return int(round(self.next_s() * NS))


_ARITY = {"fixed": (1, 1), "uniform": (2, 2), "lognormal": (2, 2), "exponential": (1, 2)}

NO_DELAY = DelayModel("fixed", (0.0,))


def parse_delay(spec: str | float | int | DelayModel | None, source: str | None = None,
                field: str = "delivery_delay") -> DelayModel:
    """A DelayModel from a spec (see the module docstring); ConfigError naming ``field`` otherwise."""
    if spec is None:
        return NO_DELAY
    if isinstance(spec, DelayModel):
        return spec
    if isinstance(spec, bool):
        raise ConfigError(source, field, f"{spec!r} is not a delay")
    if isinstance(spec, int | float):
        kind, params = "fixed", (float(spec),)
    else:
        text = str(spec).strip()
        kind, sep, rest = text.partition(":")
        if not sep:
            kind, rest = "fixed", text
        kind = kind.strip().lower()
        if kind not in _ARITY:
            raise ConfigError(source, field, f"{text!r}: unknown delay model {kind!r} "
                              f"(one of {', '.join(_ARITY)}, e.g. uniform:0.01,0.2)")
        try:
            params = tuple(float(x.strip().removesuffix("s")) for x in rest.split(","))
        except ValueError:
            raise ConfigError(source, field, f"{text!r}: parameters must be numbers of seconds") from None
    lo, hi = _ARITY[kind]
    if not lo <= len(params) <= hi:
        raise ConfigError(source, field, f"{kind} takes {lo}{'' if lo == hi else f'-{hi}'} parameter(s), "
                          f"got {len(params)}")
    if any(math.isnan(x) or math.isinf(x) or x < 0 for x in params):
        raise ConfigError(source, field, f"{spec!r}: delays must be finite and >= 0")
    if kind == "uniform" and params[0] > params[1]:
        raise ConfigError(source, field, f"{spec!r}: uniform low {params[0]:g} is above high {params[1]:g}")
    return DelayModel(kind, params)


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
