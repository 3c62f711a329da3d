"""The probe matrix: every (src, dst) pod pair x ports x protocols, probed with the packet prober.

Returns an ``Outcome`` per cell. ``probe_matrix(lab, pods, port, protocol, timeout)`` has the
shape and vocabulary of ``Lab.matrix`` (``{(src_key, dst_key): Outcome}`` in a real client's
terms: connected, refused, timeout, unreachable, n/a-same-light-host), so the conformance runner
can switch to it; ``probe_cells`` gives the full picture per (src, dst, port, protocol): the
prober's own classes (connected, refused_rst, rejected_icmp / unreachable + ICMP type/code,
dropped) with kernel times.

Parallelism is bounded: at most ``parallel`` flows are in flight, their first probes spread
``spacing_us`` apart so the kernel sees a steady stream instead of a burst.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from harness.outcome import Outcome
from harness.probe.packet import FlowSpec, PacketProber, ProbeRecord

log = logging.getLogger(__name__)

SAME_LIGHT_HOST = Outcome.SAME_LIGHT_HOST


class LabLike(Protocol):
    """What the matrix needs from a lab: pods, their namespaces, and which are light."""

    cluster: object

    def pod_netns(self, key: str) -> str: ...

    def is_light(self, key: str) -> bool: ...


@dataclass
class CellResult:
    """One matrix cell: the prober's outcome class, the real-client word, and the evidence."""

    src: str
    dst: str
    port: int
    protocol: str
    outcome: Outcome  # a prober class, or n/a-same-light-host
    detail: str = ""
    send_ns: int | None = None
    recv_ns: int | None = None
    mixed: bool = False  # probes of this cell disagreed (rules changed while probing?)

    @property
    def lab_outcome(self) -> Outcome:
        """The outcome ``Lab.matrix`` (real sockets) would report for this cell."""
        return self.outcome.client_view


@dataclass
class Target:
    """A probe source or destination: pod key, namespace (None for a destination-only address), IP."""

    key: str
    netns: str | None
    ip: str
    light: bool = False
    node: str = ""


def lab_targets(lab: LabLike, pods: Iterable[str] | None = None) -> dict[str, Target]:
    """Targets for the realized pods of a ``harness.lab.Lab`` (default: all realized pods)."""
    cluster = lab.cluster
    keys = list(pods) if pods is not None else list(cluster.pods)  # type: ignore[attr-defined]
    out: dict[str, Target] = {}
    for k in keys:
        pod = cluster.pods[k]  # type: ignore[attr-defined]
        try:
            ns = lab.pod_netns(k)
        except Exception:  # a virtual pod: the model only, no namespace
            continue
        out[k] = Target(k, ns, str(pod.ip), lab.is_light(k), pod.node)
    return out


def probe_cells(targets: dict[str, Target], pairs: Iterable[tuple[str, str]] | None = None,
                ports: Iterable[int] = (80,), protocols: Iterable[str] = ("TCP",), *,
                timeout: float = 0.5, probes_per_cell: int = 1, parallel: int = 256,
                spacing_us: int = 50) -> dict[tuple[str, str, int, str], CellResult]:
    """Probe every cell (pair x port x protocol) and classify it.

    ``pairs`` default to every ordered pair of ``targets`` (self included). With
    ``probes_per_cell`` > 1 the probes go 10 ms apart; the cell's class is the last probe's and
    ``mixed`` says whether they disagreed."""
    keys = list(targets)
    pair_list = list(pairs) if pairs is not None else [(s, d) for s in keys for d in keys]
    cells: list[tuple[str, str, int, str]] = []
    for s, d in pair_list:
        for proto in protocols:
            for port in (ports if proto.upper() != "ICMP" else (0,)):
                cells.append((s, d, port, proto.upper()))
    out: dict[tuple[str, str, int, str], CellResult] = {}
    todo: list[tuple[tuple[str, str, int, str], FlowSpec]] = []
    for cell in cells:
        s, d, port, proto = cell
        src, dst = targets[s], targets[d]
        if src.netns is None:
            raise ValueError(f"{s} cannot be a probe source (no namespace)")
        if s != d and src.light and dst.light and src.netns == dst.netns:
            out[cell] = CellResult(s, d, port, proto, SAME_LIGHT_HOST)
            continue
        todo.append((cell, FlowSpec(src.netns, src.ip, dst.ip, port, proto, rate=100.0,
                                    count=probes_per_cell, flow_id=f"{s}->{d}:{port}/{proto}")))
    prober = PacketProber(timeout_s=timeout)
    prober.start()
    try:
        for i in range(0, len(todo), parallel):
            batch = todo[i:i + parallel]
            t0 = time.time_ns()
            flows = [prober.add_flow(spec, start_ns=t0 + j * spacing_us * 1000) for j, (_c, spec) in
                     enumerate(batch)]
            budget = len(batch) * spacing_us / 1e6 + probes_per_cell * 0.01 + timeout + 5
            if not prober.wait(flows, timeout=budget):
                log.warning("probe matrix: batch did not complete in %.1f s", budget)
            for (cell, _spec), flow in zip(batch, flows, strict=True):
                out[cell] = _cell_result(cell, flow.series())
    finally:
        prober.stop()
    return {c: out[c] for c in cells if c in out}


def _cell_result(cell: tuple[str, str, int, str], series: list[ProbeRecord]) -> CellResult:
    s, d, port, proto = cell
    if not series:
        return CellResult(s, d, port, proto, Outcome.DROPPED, "no probe completed")
    last = series[-1]
    mixed = len({r.outcome for r in series}) > 1
    return CellResult(s, d, port, proto, last.outcome, last.detail, last.send_ns, last.recv_ns, mixed)


def probe_matrix(lab: LabLike, pods: Iterable[str] | None = None, port: int = 80, protocol: str = "TCP",
                 timeout: float = 0.5, **kwargs: object) -> dict[tuple[str, str], Outcome]:
    """Drop-in for ``Lab.matrix``: every ordered pair of ``pods`` (default all realized pods,
    self included) -> the real-client outcome word, measured with the packet prober."""
    targets = lab_targets(lab, pods)
    cells = probe_cells(targets, None, (port,), (protocol,), timeout=timeout, **kwargs)  # type: ignore[arg-type]
    return {(c.src, c.dst): c.lab_outcome for c in cells.values()}
