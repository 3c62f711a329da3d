"""Run conformance cases against the kernel: build the lab of the case's topology, and for every
step change the model, have the policy engine program every real node for it (a full sync with
a new sync version, through ``harness.engines.base.NodeEngine.program``), probe every pair of
pods and compare with the expected truth table.

    from harness.conformance.case import load_case
    from harness.conformance.runner import RunOptions, run_case
    result = run_case(load_case("cases/conformance/01-default-deny-ingress.yaml"), RunOptions(backend="nft"))
    assert result.ok, result.report()

The engine is the one ``options.engine`` names (``harness.engines.registry``) or the one handed
in: ``run_case(case, options, engine=MyEngine())``.

The library never prints: ``run_case`` hands every finished step to an optional ``on_step``
callback (the CLI prints it) and logs with ``logging``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from harness.analysis.truthtable import Mismatch, TableDiff, TruthTable, diff, verdict_word
from harness.conformance.case import Case, Probe, Step, apply_step, hand_table, oracle_table, plan, probe_pods
from harness.controller.timeline import Timeline
from harness.engines import registry
from harness.engines.config import EnforcementConfig
from harness.errors import ConfigError, EnvironmentProblem, HarnessError
from harness.model.cluster import Cluster
from harness.outcome import Outcome

log = logging.getLogger(__name__)

NOT_SERVED = Outcome.NOT_SERVED
NOT_JUDGED = frozenset(o for o in Outcome if not o.judged)
SILENT = frozenset(o for o in Outcome if o.silent)
DEFAULT_TIMEOUT = 0.4  # s per probe; the shipped engine REJECTs, so only a dropped packet costs this
INITIAL_SYNC_TIMEOUT_S = 60.0  # an asynchronous engine's first report after its start


@dataclass
class RunOptions(EnforcementConfig):
    """How to run: the enforcement fields (``EnforcementConfig``: engine, profile, strategy,
    backend, ...), probe ``timeout`` in seconds, and ``flush_conntrack`` (forget tracked flows in
    every node namespace after each sync, so a UDP probe that happens to reuse a source port of
    an earlier step is judged as the new flow it is, not by an old ESTABLISHED entry)."""

    timeout: float = DEFAULT_TIMEOUT
    flush_conntrack: bool = True
    # packet: the probe engine (raw probes with kernel timestamps, all cells from one process);
    # socket: a real connect()/sendto() per cell (Lab.matrix).
    prober: str = "packet"
    # IPv6: run over IPv6 in a dual-stack lab (an IPv4 topology gets the default IPv6 plan,
    # harness.model.dualstack.enable_dual_stack); probes are real sockets (Lab.matrix), the
    # expected table is the oracle's for IPv6 (a hand-written one is still compared with it)
    family: str = "IPv4"


@dataclass
class NodeSync:
    """One node's part of a full sync."""

    node: str
    render_ns: int  # time to render the node's rules
    timings: dict  # the engine's Programmed.timings (phase durations, counts, moments; "total")

    @property
    def total_ns(self) -> int:
        return int(self.timings.get("total") or 0)


@dataclass
class StepResult:
    """What one step expected, observed and how they differ."""

    index: int
    description: str
    probe: Probe
    changes: list[str]
    expected: TruthTable
    expected_from: str  # "hand" (the case's expect) or "oracle"
    observed: TruthTable
    diff: TableDiff
    oracle_vs_hand: TableDiff | None  # where the oracle disagrees with a hand-written table
    sync_version: int | None  # None: the step changed nothing, so no sync ran
    syncs: list[NodeSync] = field(default_factory=list)
    outcomes: Counter = field(default_factory=Counter)  # probe outcome word -> count
    probe_time_ns: int = 0
    retried: int = 0  # cells that timed out and were probed once more
    recovered: int = 0  # of those, cells whose second attempt got an answer
    # cells where the engine at its profile is known to depart from the spec (the engine's
    # ``spec_deviations``): expected as the engine gives them, listed here, not mismatches
    deviations: list = field(default_factory=list)

    @property
    def mismatches(self) -> list[Mismatch]:
        return self.diff.mismatches

    @property
    def ok(self) -> bool:
        return self.diff.ok

    @property
    def sync_ms(self) -> float:
        """The slowest node's apply time of this step's sync, in ms (0 without a sync)."""
        return max((s.total_ns for s in self.syncs), default=0) / 1e6

    def report(self) -> str:
        """Header, expected, observed, comparison and the e2e-style summary line."""
        head = (f"step {self.index}: {self.description} [{self.probe}] "
                f"(expected from {self.expected_from}"
                + (f", sync {self.sync_version}, {self.sync_ms:.1f} ms" if self.sync_version else ", no sync")
                + ")")
        lines = [head]
        lines += [f"  {c}" for c in self.changes]
        lines.append(self.diff.report())
        if self.deviations:
            lines.append(f"expected deviations from the spec ({len(self.deviations)}):")
            lines += [f"  {d}" for d in self.deviations]
        outcome_words = ", ".join(f"{k}:{v}" for k, v in sorted(self.outcomes.items()))
        lines.append(f"probe outcomes: {outcome_words}"
                     + (f" (retried {self.retried} timeouts, {self.recovered} answered)" if self.retried else ""))
        if self.oracle_vs_hand is not None and not self.oracle_vs_hand.ok:
            lines.append(render_oracle_vs_hand(self.oracle_vs_hand))
        return "\n".join(lines)


@dataclass
class CaseResult:
    """The outcome of one case on one backend/profile/strategy."""

    name: str
    source: str
    options: RunOptions
    steps: list[StepResult] = field(default_factory=list)
    lab_up_ns: int = 0
    lab_down_ns: int = 0
    total_ns: int = 0
    error: str | None = None  # a HarnessError that stopped the case
    engine_errors: list[str] = field(default_factory=list)  # what the engine survived (e.g. bad lines)

    @property
    def mismatch_count(self) -> int:
        return sum(len(s.mismatches) for s in self.steps)

    @property
    def deviation_count(self) -> int:
        """Cells expected to differ from the spec because of the engine's known deviations."""
        return sum(len(s.deviations) for s in self.steps)

    @property
    def oracle_disagreements(self) -> int:
        return sum(s.oracle_vs_hand.count for s in self.steps if s.oracle_vs_hand is not None)

    @property
    def ok(self) -> bool:
        return self.error is None and self.mismatch_count == 0 and self.oracle_disagreements == 0

    def report(self) -> str:
        """Every step's report (what the CLI prints and a pytest failure shows)."""
        parts = [f"case {self.name} ({self.source}) engine={self.options.engine} backend={self.options.backend} "
                 f"profile={self.options.profile} strategy={self.options.strategy}"]
        parts += [s.report() for s in self.steps]
        parts += [f"engine: {e}" for e in self.engine_errors]
        if self.error:
            parts.append(f"error: {self.error}")
        return "\n\n".join(parts)

    def failure_summary(self) -> str:
        """Only the failing steps, with their diffs: short enough for an assertion message."""
        parts = [s.report() for s in self.steps
                 if not s.ok or (s.oracle_vs_hand is not None and not s.oracle_vs_hand.ok)]
        if self.error:
            parts.append(f"error: {self.error}")
        return "\n\n".join(parts)


def render_oracle_vs_hand(d: TableDiff) -> str:
    """The cells where the oracle contradicts a hand-written table, with the oracle's reason."""
    lines = ["ORACLE DISAGREES WITH THE HAND-WRITTEN TABLE:"]
    for m in d.mismatches:
        lines.append(f"  {m.src} -> {m.dst}: hand says {verdict_word(m.expected.allowed)}, "
                     f"oracle says {verdict_word(m.observed.allowed)} ({m.observed.detail})")
    return "\n".join(lines)


# -- the kernel side ----------------------------------------------------------------------------
def observed_table(outcomes: dict[tuple[str, str], Outcome], pods: list[str], ignore_self: bool) -> TruthTable:
    """A truth table from probe outcomes (``Outcome.allowed`` decides, the word is kept as the
    cell's detail; a word that is no outcome, e.g. an older ``error:EXXX``, is a denial)."""
    table = TruthTable(pods, ignore_self=ignore_self)
    for (src, dst), outcome in outcomes.items():
        if src not in pods or dst not in pods:
            continue
        try:
            known = Outcome.parse(outcome)
        except ValueError:
            table.set(src, dst, False, detail=str(outcome))  # not a working connection
            continue
        if not known.judged:
            continue  # not probeable (two light pods sharing a namespace): left unknown, not judged
        table.set(src, dst, known)
    return table


@contextlib.contextmanager
def node_engines(lab, cluster: Cluster, options: RunOptions, engine=None) -> Iterator[dict]:
    """Every real node's engine (``engine`` or the one ``options.engine`` names), started on
    ``cluster`` (an asynchronous one has reported its first sync) and stopped on exit."""
    eng = registry.resolve(options, engine)
    bind = getattr(eng, "bind_lab", None)
    if bind is not None:  # an engine that needs the lab itself (the binary one serves its API)
        bind(lab)
    timeline = Timeline()
    nodes = {}
    try:
        for node in cluster.real_nodes():
            ne = eng.node(node.name, lab.node_netns(node.name), options, timeline)
            nodes[node.name] = ne
            ne.start(cluster)
        for ne in nodes.values():
            if ne.reports_syncs:
                ne.wait_initial(INITIAL_SYNC_TIMEOUT_S)
        yield nodes
    finally:
        for ne in nodes.values():
            ne.stop()


def full_sync(cluster: Cluster, lab, options: RunOptions, engines: dict | None = None) -> tuple[int, list[NodeSync]]:
    """Program every real node for ``cluster`` with one new sync version (the sync's start time
    in ns) through its engine (``engines``: node -> started NodeEngine; None: the configured
    engine's, for this one sync); returns (sync_version, per-node syncs)."""
    if engines is None:
        with node_engines(lab, cluster, options) as made:
            return full_sync(cluster, lab, options, made)
    sync_version = time.time_ns()
    syncs = []
    for node in cluster.real_nodes():
        # full=False: a strategy that diffs (incremental) may; every other one applies everything
        done = engines[node.name].program(cluster, sync_version=engines[node.name].sync_version(sync_version))
        syncs.append(NodeSync(node.name, done.render_ns, done.timings))
    if options.flush_conntrack:
        from harness.kernel import netns

        for node in cluster.real_nodes():
            netns.run(lab.node_netns(node.name), ["conntrack", "-F"], check=False)
    return sync_version, syncs


def probe_all(lab, pods: list[str], probe: Probe, ignore_self: bool, timeout: float,
              prober: str = "packet", family: str = "IPv4") -> dict[tuple[str, str], Outcome]:
    """Probe every ordered pair of ``pods`` (without self pairs when ``ignore_self``). SCTP goes
    through ``harness.conformance.sctp`` (the lab's sockets have no SCTP); self pairs are never
    probed for it."""
    if probe.protocol == "SCTP":
        from harness.conformance import sctp

        return sctp.matrix(lab, pods, probe.port, timeout)
    if family == "IPv6":
        if probe.protocol not in ("TCP", "UDP"):
            raise ConfigError(None, "probe.protocol", f"{probe.protocol} probes are IPv4 only (TCP or UDP over IPv6)")
        result = lab.matrix(pods=pods, port=probe.port, protocol=probe.protocol, timeout=timeout, family=family)
    elif prober == "packet":
        from harness.probe.matrix import probe_matrix

        result = probe_matrix(lab, pods=pods, port=probe.port, protocol=probe.protocol, timeout=timeout)
    else:
        result = lab.matrix(pods=pods, port=probe.port, protocol=probe.protocol, timeout=timeout)
    if ignore_self:
        result = {k: v for k, v in result.items() if k[0] != k[1]}
    # A destination without a listener on the port answers like a REJECT (RST / port-unreachable),
    # so its cells say nothing about policy: mark them unprobeable (the e2e model serves every
    # port on every pod, so this only matters for other topologies).
    served = {k for k in pods if any(cp.port == probe.port and cp.protocol == probe.protocol
                                     for cp in lab.cluster.pods[k].ports)}
    return {k: (v if k[1] in served else NOT_SERVED) for k, v in result.items()}


def with_deviations(expected: TruthTable, deviations: list) -> TruthTable:
    """``expected`` with every deviating cell set to the engine's verdict (detail: the deviation)."""
    if not deviations:
        return expected
    out = TruthTable(expected.pods, ignore_self=expected.ignore_self)
    for s, d, c in expected.pairs():
        if c.allowed is not None:
            out.set(s, d, c.allowed, c.detail)
    for dev in deviations:
        out.set(dev.src, dev.dst, dev.allowed, str(dev))
    return out


def engine_deviations(engine, options: RunOptions, cluster: Cluster, pods: list[str], step: Step) -> list:
    """The engine's known departures from the spec for this step's probe (its optional
    ``spec_deviations(config, cluster, pods, port, protocol, ignore_self)``; none without it)."""
    fn = getattr(engine, "spec_deviations", None)
    if fn is None:
        return []
    return list(fn(options, cluster, pods, step.probe.port, step.probe.protocol, step.ignore_self))


def judge(expected: TruthTable, observed: TruthTable, outcomes: dict[tuple[str, str], Outcome]) -> TableDiff:
    """``diff(expected, observed)``, with cells the lab cannot probe (``n/a-...`` outcomes)
    counted as ignored instead of as missing observations."""
    d = diff(expected, observed)
    skip = {cell for cell, o in outcomes.items() if o in NOT_JUDGED}
    if not skip:
        return d
    kept = [m for m in d.mismatches if (m.src, m.dst) not in skip]
    return TableDiff(d.expected, d.observed, kept, d.correct, d.ignored + len(d.mismatches) - len(kept))


def retry_timeouts(lab, outcomes: dict[tuple[str, str], Outcome], probe: Probe,
                   timeout: float, family: str = "IPv4") -> tuple[int, int]:
    """Probe every cell that timed out once more, with a longer timeout, and keep the second
    answer. The shipped engine never drops a denied packet silently (it REJECTs), so a timeout means a
    lost or starved probe (an echo server descheduled on a loaded runner) or a real drop; a
    real drop times out again and stays visible. Returns (retried, answered)."""
    cells = [c for c, o in outcomes.items() if o in SILENT]
    if not cells:
        return 0, 0
    retry_timeout = max(1.0, 2 * timeout)
    if probe.protocol == "SCTP":
        from harness.conformance import sctp

        def one(cell: tuple[str, str]) -> Outcome:
            s, d = cell
            return lab.call(s, sctp.probe, lab.pod_netns(s), str(lab.cluster.pods[s].ip),
                            str(lab.cluster.pods[d].ip), probe.port, retry_timeout)
    else:
        def one(cell: tuple[str, str]) -> Outcome:
            extra = {"family": family} if family != "IPv4" else {}  # IPv4: the call any lab takes
            return lab.connect(cell[0], cell[1], probe.port, probe.protocol, timeout=retry_timeout, **extra)

    with ThreadPoolExecutor(max_workers=min(16, len(cells))) as ex:
        second = dict(zip(cells, ex.map(one, cells), strict=True))
    log.warning("%d probe(s) timed out; retried: %s", len(cells), dict(Counter(second.values())))
    outcomes.update(second)
    return len(cells), sum(1 for o in second.values() if o not in SILENT)


@contextlib.contextmanager
def _lab_for(cluster: Cluster, topology: str) -> Iterator[object]:
    from harness.lab import Lab

    with Lab(cluster, topology=topology) as lab:
        yield lab


# -- one case -----------------------------------------------------------------------------------
def run_case(case: Case, options: RunOptions | None = None, *,
             on_step: Callable[[StepResult], None] | None = None, engine=None) -> CaseResult:
    """Run ``case`` in a fresh lab through ``engine`` (default: the one ``options.engine``
    names) and return its result (never raises for a mismatch; a HarnessError during the run is
    recorded in ``error`` after the lab is torn down, except a ConfigError or an
    EnvironmentProblem, which are raised so callers can report or skip)."""
    options = options or RunOptions()
    eng = registry.resolve(options, engine)
    eng.require_tools(options)
    cluster = case.load_cluster()
    if options.family == "IPv6":
        from harness.model.dualstack import enable_dual_stack

        enable_dual_stack(cluster)
    elif options.family != "IPv4":
        raise ConfigError(None, "family", f"unknown IP family {options.family!r} (IPv4 or IPv6)")
    plan(case, cluster)  # validate every step before any kernel work (plan works on copies)
    pods = probe_pods(cluster)
    result = CaseResult(case.name, case.source, options)
    t_start = time.perf_counter_ns()
    t_up = time.perf_counter_ns()
    try:
        with _lab_for(cluster, case.topology_ref) as lab:
            result.lab_up_ns = time.perf_counter_ns() - t_up
            model = getattr(lab, "cluster", cluster)
            with node_engines(lab, model, options, eng) as engines:
                try:
                    for step in case.steps:
                        sr = _run_step(case, step, model, lab, pods, options, engines, first=step.index == 0,
                                       engine=eng)
                        result.steps.append(sr)
                        log.info("%s step %d: %s", case.name, step.index, sr.diff.summary())
                        if on_step:
                            on_step(sr)
                finally:
                    result.engine_errors = [e for ne in engines.values() for e in ne.errors]
            t_down = time.perf_counter_ns()
        result.lab_down_ns = time.perf_counter_ns() - t_down
    except (ConfigError, EnvironmentProblem):
        raise
    except HarnessError as e:
        result.error = str(e)
    result.total_ns = time.perf_counter_ns() - t_start
    return result


def _run_step(case: Case, step: Step, model: Cluster, lab, pods: list[str], options: RunOptions,
              engines: dict, *, first: bool, engine=None) -> StepResult:
    changes = apply_step(model, step, case.source)
    hand = hand_table(step, pods)
    oracle = oracle_table(step, model, pods, options.family)
    deviations = engine_deviations(engine, options, model, pods, step)
    from_hand = hand is not None and options.family == "IPv4"
    expected = with_deviations(hand if from_hand else oracle, deviations)
    sync_version, syncs = None, []
    # A probe-only step changes nothing, and a controller would not sync for it; the first step
    # always syncs so every node has the engine's rules before anything is probed.
    if step.changes_cluster or first:
        sync_version, syncs = full_sync(model, lab, options, engines)
    t0 = time.perf_counter_ns()
    outcomes = probe_all(lab, pods, step.probe, step.ignore_self, options.timeout, options.prober, options.family)
    retried, recovered = retry_timeouts(lab, outcomes, step.probe, options.timeout, options.family)
    probe_ns = time.perf_counter_ns() - t0
    observed = observed_table(outcomes, pods, step.ignore_self)
    return StepResult(
        index=step.index, description=step.description, probe=step.probe, changes=changes,
        expected=expected, expected_from="hand" if from_hand else "oracle", observed=observed,
        diff=judge(expected, observed, outcomes), oracle_vs_hand=diff(hand, oracle) if hand is not None else None,
        sync_version=sync_version, syncs=syncs, outcomes=Counter(outcomes.values()), probe_time_ns=probe_ns,
        retried=retried, recovered=recovered, deviations=deviations,
    )


def run_cases(cases: list[Case], options: RunOptions | None = None, *,
              on_step: Callable[[StepResult], None] | None = None,
              on_case: Callable[[CaseResult], None] | None = None, engine=None) -> list[CaseResult]:
    """Run several cases one after the other (each in its own lab)."""
    results = []
    for case in cases:
        r = run_case(case, options, on_step=on_step, engine=engine)
        results.append(r)
        if on_case:
            on_case(r)
    return results
