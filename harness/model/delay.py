"""Delay distributions and their spec grammar (pure), shared by the controller's event delivery
(``harness.controller.delivery``) and the churn workload (``harness.model.churn``).

A spec: ``0.05`` or ``fixed:0.05`` (seconds), ``uniform:0.01,0.2``, ``lognormal:0.08,0.5``
(median, sigma), ``exponential:0.05`` (mean), ``exponential:0.05,0.01`` (mean, minimum). A
sampler for a node is seeded with ``(seed, node)``, so a run is repeatable and adding a node does
not change the others' delays.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from harness.errors import ConfigError

NS = 1_000_000_000


@dataclass(frozen=True)
class DelayModel:
    """A delay distribution; ``kind`` is fixed | uniform | lognormal | exponential, ``params`` in
    seconds (fixed: value; uniform: low, high; lognormal: median, sigma; exponential: mean[, min])."""

    kind: str = "fixed"
    params: tuple[float, ...] = (0.0,)

    def draw(self, rng: random.Random) -> float:
        """One delay in seconds drawn with ``rng`` (never negative)."""
        k, p = self.kind, self.params
        if k == "fixed":
            return p[0]
        if k == "uniform":
            return rng.uniform(p[0], p[1])
        if k == "lognormal":
            return rng.lognormvariate(math.log(p[0]), p[1]) if p[0] > 0 else 0.0
        minimum = p[1] if len(p) > 1 else 0.0
        return minimum + (rng.expovariate(1.0 / p[0]) if p[0] > 0 else 0.0)

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
        return self.model.draw(self.rng)

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
