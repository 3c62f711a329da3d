"""The policy-engine protocol: what enforces NetworkPolicy on one node, as the harness sees it.

An ``Engine`` is handed in (``Controller(lab, config, engine=...)``, ``run_case(case, options,
engine=...)``), never imported by name outside its own package; ``harness.engines.registry``
maps the configuration's ``engine`` name to one when none is handed in. Per real node it makes
a ``NodeEngine`` bound to that node's namespace:

- a *synchronous* node engine (``reports_syncs = False``, e.g. the shipped rule-layout engine) is driven by the
  caller: ``program(view, sync_version=...)`` programs the node's kernel for that view of the
  cluster now and returns a ``Programmed`` record (render time, timed apply phases);
- an *asynchronous* one (``reports_syncs = True``, e.g. an external process, or an engine that
  decides per connection) gets every delivered event through ``deliver`` and writes its own
  sync records into the ``Timeline`` as they happen; ``program`` still works (it hands the
  whole view over and waits for the engine's report), which is how the conformance runner
  drives every engine the same way.

    engine = registry.get_engine(config.engine)
    engine.validate(config, source)
    ne = engine.node("node-a", lab.node_netns("node-a"), config, timeline)
    ne.start(view)
    done = ne.program(view, sync_version=time.time_ns())
    ne.stop()
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from harness.engines.config import EnforcementConfig
from harness.errors import HarnessError
from harness.model.cluster import Cluster

if TYPE_CHECKING:  # the controller's records; imported for types only (the controller imports us)
    from harness.controller.timeline import SyncRecord, Timeline

# called between render and apply with the engine's rendered state (tests hold a sync open with it)
BeforeApply = Callable[[Any], None]


class NotProgrammed(HarnessError):
    """A wait for a node's engine to program something timed out or failed."""


@dataclass
class Programmed:
    """What one programming of a node did: the ``sync_version`` it used, the ``strategy`` that
    applied it, ``render_ns`` (building the rules), and ``timings`` (phase durations in ns under
    the sync-metric names, counts, and the ``start_ns``/``sets_ns``/``rules_ns``/``end_ns``
    CLOCK_REALTIME moments; ``total`` is the apply's duration)."""

    sync_version: int
    strategy: str
    render_ns: int
    timings: dict[str, Any] = field(default_factory=dict)

    @property
    def total_ns(self) -> int:
        """The apply's duration in ns (0 when the engine did not report it)."""
        return int(self.timings.get("total") or 0)


@runtime_checkable
class NodeEngine(Protocol):
    """One node's enforcement (see the module docstring)."""

    node: str
    strategy: str  # the label its sync records carry
    reports_syncs: bool  # True: it records its own syncs in the timeline (asynchronous)
    errors: list[str]  # problems it survived (shown in the run's records); never raises for them

    def start(self, view: Cluster) -> None:
        """Take the node's initial view (an asynchronous engine starts working on it)."""

    def sync_version(self, start_ns: int) -> int:
        """The version a sync starting at ``start_ns`` renders with."""

    def program(self, view: Cluster, *, sync_version: int, full: bool = False,
                before_apply: BeforeApply | None = None) -> Programmed:
        """Program the node's kernel for ``view`` now; raise HarnessError when it could not."""

    def wants_sync(self, event: Any, before: Cluster) -> bool:
        """Whether ``event`` (judged against the view ``before`` it) asks a synchronous engine
        for a full sync (its informer handlers' filter)."""

    def deliver(self, event: Any) -> None:
        """An event reached the node (asynchronous engines act on it; others ignore it)."""

    def request_sync(self, reason: str) -> None:
        """A sync is asked for without an event (asynchronous engines only)."""

    def wait_initial(self, timeout: float) -> SyncRecord:
        """Block until an asynchronous engine reported its first sync; NotProgrammed otherwise."""

    def stop(self, timeout: float = 10.0) -> None:
        """Release what the engine holds (processes, threads); kernel state stays for the lab."""


@runtime_checkable
class TwoPhaseNode(Protocol):
    """A synchronous node engine whose render and apply can be timed apart (what the sync-cost
    sweep measures: the apply of a ruleset rendered beforehand). ``program`` = both."""

    def prepare(self, view: Cluster) -> Any:
        """What renders of an unchanged ``view`` can share (e.g. an index of its pods)."""

    def render(self, view: Cluster, *, sync_version: int, prepared: Any = None) -> Any:
        """The node's rules for ``view`` (``rule_count``, ``sets``, ``set_entry_count``)."""

    def apply(self, rendered: Any, *, full: bool = False) -> dict[str, Any]:
        """Program ``rendered``; the timings as in ``Programmed.timings``."""

    def estimated_execs(self, rendered: Any) -> int:
        """How many processes an apply of ``rendered`` would spawn (0 when not exec-based)."""


@runtime_checkable
class Engine(Protocol):
    """A system under test: validates its configuration and makes one ``NodeEngine`` per node."""

    name: str

    def validate(self, config: EnforcementConfig, source: str | None = None) -> None:
        """ConfigError (``source: field: problem``) when ``config`` does not fit this engine."""

    def require_tools(self, config: EnforcementConfig) -> None:
        """EnvironmentProblem with an install hint when the machine lacks what it needs."""

    def node(self, node: str, netns: str, config: EnforcementConfig, timeline: Timeline) -> NodeEngine:
        """The engine of ``node``, programming namespace ``netns`` and recording into ``timeline``."""

    # Optional: ``bind_lab(lab)``. An engine that needs the lab itself (the ``binary`` engine
    # serves it over the Kubernetes API) gets it from the controller loop and the conformance
    # runner before any ``node`` call. ``sync_records = False`` (on the engine and its node
    # engines): it never writes a sync record (a real controller binary), so callers measure
    # it by probes and do not wait for records (a node engine's optional ``wait_quiet()`` is
    # what ``Controller.wait_idle`` waits for instead).
    # Optional: ``spec_deviations(config, cluster, pods, port, protocol, ignore_self)`` -> cells
    # (``src``, ``dst``, ``allowed``, ``kind``, ``why``) where the engine at ``config`` is known to
    # depart from the NetworkPolicy spec (kube-router v1.2.x); the conformance runner expects its
    # verdict there and lists them as expected deviations instead of mismatches.


class SynchronousNode:
    """Shared defaults of a node engine the caller drives with ``program`` (no own reports)."""

    reports_syncs = False

    def __init__(self, node: str) -> None:
        self.node = node
        self.errors: list[str] = []

    def start(self, view: Cluster) -> None:
        return None

    def sync_version(self, start_ns: int) -> int:
        return start_ns

    def wants_sync(self, event: Any, before: Cluster) -> bool:
        return True  # without a filter of its own, every event asks for a sync

    def deliver(self, event: Any) -> None:
        return None

    def request_sync(self, reason: str) -> None:
        return None

    def wait_initial(self, timeout: float) -> SyncRecord:
        raise NotImplementedError("a synchronous engine's initial sync is the caller's")

    def stop(self, timeout: float = 10.0) -> None:
        return None
