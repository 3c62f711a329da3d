"""Mitigations of the enforcement race, as small composable pieces a scenario picks per run.

The life of a new client pod, and where each mitigation acts:

    lab.add_pod (CNI ADD: network up, IP)  -> pod-added event emitted
    [cni-wait]   network reported ready only once the controller programmed the pod
    [init-wait]  an init step retries until the destination answers
    [sleep N]    the client's entrypoint sleeps first
    client       one attempt, or [retry] attempts with exponential backoff
    [default-deny] is a controller option (``--netpol-default-deny`` of the v2.10 profile): a local
                 pod the controller has not programmed yet is refused (fail-closed)

    mits = parse_mitigations(["cni-wait:all", "retry"])
    config = mits.configure(ControllerConfig(...))
    with Controller(lab, config) as ctl:
        run = start_pod(ctl, Pod("batch", "job-1", "node-b", labels={"app": "backup"}),
                        tcp_client("10.244.0.4", 3306), mits)
        run.first_ok_ns - run.ready_ns   # pod_creation_reachability_latency

``cni-wait`` waits, like Calico's CNI with ``policy_setup_timeout_seconds``, for the pod's *own*
node by default (``cni-wait``); ``cni-wait:all`` waits for every node's controller, which is what
a cross-node client of a protected server actually needs (the server's node must have the
client's IP in its ipsets). On timeout the pod proceeds, as Calico's does, and the run records it.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from harness.errors import ConfigError

log = logging.getLogger(__name__)


class Attempt(Protocol):
    """What a client attempt returns (``harness.probe.sockets.ConnectResult`` fits)."""

    ok: bool
    start_ns: int
    end_ns: int


@dataclass
class PodContext:
    """What the mitigations of one pod start see: the controller, the pod's key and the times
    so far (CLOCK_REALTIME ns)."""

    controller: Any
    pod_key: str
    ready_ns: int = 0
    event_seq: int = 0
    notes: dict[str, Any] = field(default_factory=dict)


@dataclass
class Mitigation:
    """Base: every hook does nothing. ``configure`` changes the controller config;
    ``network_ready`` may delay the pod's network-ready report (returns nothing, may block);
    ``before_client`` runs in the pod before the client; ``run_client`` wraps the attempts."""

    name = "none"

    def configure(self, config: Any) -> Any:
        return config

    def network_ready(self, ctx: PodContext) -> None:
        return None

    def before_client(self, ctx: PodContext, attempt: Callable[[], Attempt]) -> None:
        return None

    def run_client(self, attempt: Callable[[], Attempt]) -> list[Attempt] | None:
        """The attempts, or None to leave the client to the next mitigation (or one attempt)."""
        return None

    def __str__(self) -> str:
        return self.name


@dataclass
class Sleep(Mitigation):
    """``sleep N`` before the client starts (the #1652 workaround)."""

    seconds: float = 10.0
    name = "sleep"

    def before_client(self, ctx: PodContext, attempt: Callable[[], Attempt]) -> None:
        time.sleep(self.seconds)

    def __str__(self) -> str:
        return f"sleep:{self.seconds:g}"


@dataclass
class Retry(Mitigation):
    """Client retry with exponential backoff: up to ``attempts`` tries, waiting ``initial_s``,
    then ×``factor`` up to ``max_s`` between them, never past ``deadline_s`` after the first."""

    attempts: int = 10
    initial_s: float = 0.1
    factor: float = 2.0
    max_s: float = 2.0
    deadline_s: float = 30.0
    name = "retry"

    def run_client(self, attempt: Callable[[], Attempt]) -> list[Attempt]:
        return retry(attempt, self.attempts, self.initial_s, self.factor, self.max_s, self.deadline_s)


def retry(attempt: Callable[[], Attempt], attempts: int = 10, initial_s: float = 0.1, factor: float = 2.0,
          max_s: float = 2.0, deadline_s: float = 30.0, sleep: Callable[[float], None] = time.sleep) -> list[Attempt]:
    """Call ``attempt`` until one is ``ok`` or the budget is spent; return every attempt."""
    out: list[Attempt] = []
    start = time.monotonic()
    wait = initial_s
    for i in range(max(attempts, 1)):
        result = attempt()
        out.append(result)
        if result.ok or i == attempts - 1:
            break
        if time.monotonic() + wait - start > deadline_s:
            break
        sleep(wait)
        wait = min(wait * factor, max_s)
    return out


@dataclass
class DefaultDeny(Mitigation):
    """``--netpol-default-deny`` (the v2.10 profile): unprogrammed local pods are refused."""

    name = "default-deny"

    def configure(self, config: Any) -> Any:
        return dataclasses.replace(config, default_deny=True)


@dataclass
class CniWait(Mitigation):
    """Network ready only after the controller programmed the pod: on its own node
    (``nodes="own"``, Calico's behaviour) or on every node (``"all"``); ``timeout_s`` as Calico's
    policy_setup_timeout_seconds, after which the pod proceeds anyway (``ctx.notes``)."""

    timeout_s: float = 10.0
    nodes: str = "own"
    name = "cni-wait"

    def network_ready(self, ctx: PodContext) -> None:
        from harness.controller.loop import NotProgrammed

        try:
            t = ctx.controller.await_programmed(ctx.pod_key, self.timeout_s,
                                                nodes=None if self.nodes == "own" else self.nodes)
            ctx.notes["programmed_ns"] = t
        except NotProgrammed as e:
            log.warning("cni-wait for %s: %s; proceeding", ctx.pod_key, e)
            ctx.notes["cni_wait_timed_out"] = True

    def __str__(self) -> str:
        return "cni-wait" if self.nodes == "own" else f"cni-wait:{self.nodes}"


@dataclass
class InitWait(Mitigation):
    """An init step that tries the client's own connection every ``interval_s`` until it
    succeeds (or ``timeout_s`` passes); the attempts are kept in ``ctx.notes['init_attempts']``."""

    timeout_s: float = 30.0
    interval_s: float = 0.05
    name = "init-wait"

    def before_client(self, ctx: PodContext, attempt: Callable[[], Attempt]) -> None:
        tries: list[Attempt] = []
        deadline = time.monotonic() + self.timeout_s
        while True:
            r = attempt()
            tries.append(r)
            if r.ok or time.monotonic() >= deadline:
                break
            time.sleep(self.interval_s)
        ctx.notes["init_attempts"] = tries
        if not tries[-1].ok:
            ctx.notes["init_wait_timed_out"] = True


@dataclass
class Mitigations:
    """An ordered combination; ``str()`` gives the spec back (``"cni-wait+retry"``)."""

    items: list[Mitigation] = field(default_factory=list)

    def configure(self, config: Any) -> Any:
        for m in self.items:
            config = m.configure(config)
        return config

    def __str__(self) -> str:
        return "+".join(str(m) for m in self.items) or "none"

    def __iter__(self):
        return iter(self.items)


def _params(text: str, source: str | None, field_name: str) -> tuple[list[float], dict[str, float]]:
    pos: list[float] = []
    kw: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, eq, value = part.partition("=")
        try:
            if eq:
                kw[key.strip()] = float(value.rstrip("s"))
            else:
                pos.append(float(part.rstrip("s")))
        except ValueError:
            raise ConfigError(source, field_name, f"{part!r} is not a number") from None
    return pos, kw


def parse_mitigation(spec: str, source: str | None = None, field_name: str = "mitigation") -> Mitigation | None:
    """One mitigation from a spec: ``none``, ``sleep N`` / ``sleep:N``, ``retry`` /
    ``retry:attempts=5,initial=0.1,factor=2,max=2,deadline=30``, ``default-deny``, ``cni-wait`` /
    ``cni-wait:all`` / ``cni-wait:own,timeout=10``, ``init-wait`` / ``init-wait:timeout=30,interval=0.05``.
    None for ``none``; ConfigError otherwise."""
    text = str(spec).strip()
    name, rest = ([*re.split(r"[:\s]+", text, maxsplit=1), ""])[:2]
    name = name.lower()
    if name in ("none", ""):
        return None
    if name == "sleep":
        pos, kw = _params(rest, source, field_name)
        seconds = pos[0] if pos else kw.get("seconds", 10.0)
        if seconds < 0:
            raise ConfigError(source, field_name, "sleep must be >= 0 seconds")
        return Sleep(seconds)
    if name == "retry":
        _, kw = _params(rest, source, field_name)
        unknown = set(kw) - {"attempts", "initial", "factor", "max", "deadline"}
        if unknown:
            raise ConfigError(source, field_name, f"unknown retry parameter(s) {', '.join(sorted(unknown))}")
        return Retry(int(kw.get("attempts", 10)), kw.get("initial", 0.1), kw.get("factor", 2.0),
                     kw.get("max", 2.0), kw.get("deadline", 30.0))
    if name == "default-deny":
        return DefaultDeny()
    if name == "cni-wait":
        nodes = "own"
        parts = [p.strip() for p in rest.split(",") if p.strip()]
        if parts and parts[0] in ("own", "all"):
            nodes = parts.pop(0)
        _, kw = _params(",".join(parts), source, field_name)
        return CniWait(kw.get("timeout", 10.0), nodes)
    if name == "init-wait":
        _, kw = _params(rest, source, field_name)
        return InitWait(kw.get("timeout", 30.0), kw.get("interval", 0.05))
    raise ConfigError(source, field_name, f"unknown mitigation {text!r} "
                      "(none, sleep N, retry, default-deny, cni-wait[:all], init-wait)")


def parse_mitigations(specs: str | Iterable[str] | None, source: str | None = None,
                      field_name: str = "mitigations") -> Mitigations:
    """Several mitigations: a list of specs or one string joined with ``+``."""
    if specs is None:
        return Mitigations()
    if isinstance(specs, str):
        specs = specs.split("+")
    items = []
    for i, s in enumerate(specs):
        m = parse_mitigation(s, source, f"{field_name}[{i}]")
        if m is not None:
            items.append(m)
    return Mitigations(items)


@dataclass
class PodRun:
    """One pod start with its client: times in CLOCK_REALTIME ns. ``ready_ns``: CNI ADD done
    (the lab's network ready); ``released_ns``: network reported ready (after cni-wait);
    ``client_start_ns``: the client's first attempt began (after init-wait and sleep)."""

    pod_key: str
    mitigations: str
    event_seq: int
    ready_ns: int
    released_ns: int
    client_start_ns: int
    attempts: list[Any]
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def first(self) -> Any:
        return self.attempts[0] if self.attempts else None

    @property
    def ok(self) -> bool:
        return any(a.ok for a in self.attempts)

    @property
    def first_ok_ns(self) -> int | None:
        """When the first successful attempt completed, or None."""
        for a in self.attempts:
            if a.ok:
                return a.end_ns
        return None


def start_pod(controller: Any, pod: Any, client: Callable[[PodContext], Callable[[], Attempt]],
              mitigations: Mitigations | Iterable[Mitigation] | None = None) -> PodRun:
    """Create ``pod`` through the controller (lab CNI ADD + pod-added event), apply the
    mitigations in lifecycle order and run the client. ``client(ctx)`` returns the zero-argument
    attempt function (e.g. ``tcp_client(dst_ip, port)``)."""
    mits = mitigations if isinstance(mitigations, Mitigations) else Mitigations(list(mitigations or []))
    added = controller.add_pod(pod)
    ctx = PodContext(controller, added.pod.key, added.ready_ns, added.event.seq)
    for m in mits:
        m.network_ready(ctx)
    released = time.time_ns()
    attempt = client(ctx)
    for m in mits:
        m.before_client(ctx, attempt)
    client_start = time.time_ns()
    attempts = None
    for m in mits:
        attempts = m.run_client(attempt)
        if attempts is not None:
            break
    if attempts is None:
        attempts = [attempt()]
    return PodRun(added.pod.key, str(mits), added.event.seq, added.ready_ns, released, client_start,
                  list(attempts), ctx.notes)


def tcp_client(dst_ip: str, port: int, timeout_s: float = 1.0,
               exchange: bytes | None = None) -> Callable[[PodContext], Callable[[], Attempt]]:
    """A client factory for ``start_pod``: each attempt is one real ``connect()`` from the pod's
    namespace (``harness.probe.sockets.tcp_connect``; a light pod binds its own IP)."""

    def factory(ctx: PodContext) -> Callable[[], Attempt]:
        from harness.probe.sockets import tcp_connect

        lab = ctx.controller.lab
        ns = lab.pod_netns(ctx.pod_key)
        src = str(lab.cluster.pods[ctx.pod_key].ip) if lab.is_light(ctx.pod_key) else None
        return lambda: tcp_connect(ns, str(dst_ip), port, src_ip=src, timeout_s=timeout_s, exchange=exchange)

    return factory
