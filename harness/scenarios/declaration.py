"""How a timed scenario declares itself, once, next to its code, and the registry that finds
the declarations.

A timed scenario is a module ``harness/scenarios/timed/<name>.py`` that sets
``SCENARIO = Scenario(...)``: its name (the key in results.json), what it shows, its place in
the report, the metric its summary leads with, its summarizer (observations -> summary) and
its report section (entries -> markdown lines). The recorder, the report and the plots look
the scenario up here by name and hold no list of scenarios of their own.

Pure: ``timed/`` modules are imported to render a report, so they import nothing of the
kernel at module level (their run code, if any, imports it inside functions);
tests/test_scenario_registry.py checks that.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from harness.analysis.scenarios import summary_head
from harness.errors import HarnessError

Summary = dict[str, Any]
Entry = dict[str, Any]


@dataclass(frozen=True)
class Scenario:
    """One timed scenario as the recorder and the report know it.

    ``summarize(observations)`` gets a configuration's observations (one per run; a scenario
    that runs once has one) and returns a summary that starts with ``head(...)``.
    ``section(entries)`` gets every results.json entry of this scenario and returns the
    section's markdown lines (its tables, after the heading, ``what`` and the expectations).
    ``cdf``: draw the empirical CDF of ``metric`` per configuration.
    """

    name: str
    order: int
    what: str
    metric: str
    failure_label: str
    summarize: Callable[[list[dict[str, Any]]], Summary]
    section: Callable[[list[Entry]], list[str]]
    cdf: bool = False

    def head(self, samples: list[float | None], failures: int, runs: int) -> Summary:
        """The summary's common head (``harness.analysis.scenarios.summary_head``) with this
        scenario's metric and failure label."""
        return summary_head(self.metric, samples, failures, runs, self.failure_label)


TIMED_PACKAGE = "harness.scenarios.timed"


@functools.cache
def declared() -> tuple[Scenario, ...]:
    """Every ``SCENARIO`` of the ``harness.scenarios.timed`` modules, in report order."""
    package = importlib.import_module(TIMED_PACKAGE)
    found: dict[str, tuple[Scenario, str]] = {}
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{TIMED_PACKAGE}.{info.name}")
        sc = getattr(module, "SCENARIO", None)
        if not isinstance(sc, Scenario):
            continue
        if sc.name in found:  # two modules claiming one results.json key would mix their entries
            raise HarnessError(f"{module.__name__}: scenario name {sc.name!r} is already declared by "
                               f"{found[sc.name][1]}")
        found[sc.name] = (sc, module.__name__)
    return tuple(sorted((sc for sc, _ in found.values()), key=lambda s: (s.order, s.name)))


def find(name: str) -> Scenario | None:
    """The declaration named ``name``, or None (e.g. a results.json of a scenario since removed)."""
    return next((sc for sc in declared() if sc.name == name), None)


def get(name: str) -> Scenario:
    """The declaration named ``name``; HarnessError naming the declared ones otherwise."""
    sc = find(name)
    if sc is None:
        raise HarnessError(f"scenario {name!r} is not declared (declared: "
                           f"{', '.join(s.name for s in declared())}; see harness/scenarios/timed/)")
    return sc
