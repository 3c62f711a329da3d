"""DNS queries as a resolver made them: packets watched in the client pod paired into rows
"query left -> answer came (rcode) / ICMP error / nothing" (pure).

A row per (transport, client port, DNS id, name, type) query; glibc sends A and AAAA in
parallel from one socket and retries the same id after ``timeout`` (5 s by default), so a
retry of the same id is a second ``sent`` of the same row (``retries``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class DnsPacket:
    """One packet the watcher saw: ``kind`` udp | tcp | icmp; ``direction`` out (from the pod) |
    in; for DNS messages the id, question and (responses) rcode and addresses."""

    ts_ns: int
    direction: str
    kind: str
    src: str
    dst: str
    sport: int = 0
    dport: int = 0
    dns_id: int | None = None
    qname: str = ""
    qtype: str = ""
    response: bool = False
    rcode: str = ""
    answers: tuple[str, ...] = ()
    icmp: str = ""


@dataclass
class DnsQueryRow:
    """One query: when it left (every send), what came back and when (``result``: the rcode,
    ``ICMP type 3 code 3``, or ``no answer``)."""

    qname: str
    qtype: str
    transport: str
    sent_ns: list[int] = field(default_factory=list)
    answered_ns: int | None = None
    result: str = "no answer"
    answers: tuple[str, ...] = ()

    def as_dict(self, t0_ns: int = 0) -> dict[str, Any]:
        """JSON form, times in ms from ``t0_ns``."""
        return {"qname": self.qname, "qtype": self.qtype, "transport": self.transport,
                "sent_ms": [(t - t0_ns) / 1e6 for t in self.sent_ns],
                "answered_ms": None if self.answered_ns is None else (self.answered_ns - t0_ns) / 1e6,
                "result": self.result, "answers": list(self.answers), "retries": max(0, len(self.sent_ns) - 1)}


def pair_queries(packets: list[DnsPacket]) -> list[DnsQueryRow]:
    """Rows in the order the queries first left. An answer closes the row of its (transport,
    client port, id, name, type); an ICMP error quoting the query's ports closes the open rows
    of that client port with ``ICMP ...``."""
    rows: dict[tuple[Any, ...], DnsQueryRow] = {}
    for p in sorted(packets, key=lambda p: p.ts_ns):
        if p.kind == "icmp":
            for key, row in rows.items():
                if key[1] == p.sport and row.answered_ns is None:  # the ICMP quotes the query: its sport is the client's
                    row.answered_ns, row.result = p.ts_ns, f"ICMP {p.icmp}"
            continue
        if p.dns_id is None:
            continue
        if not p.response and p.direction == "out":
            key = (p.kind, p.sport, p.dns_id, p.qname, p.qtype)
            row = rows.setdefault(key, DnsQueryRow(p.qname, p.qtype, p.kind))
            row.sent_ns.append(p.ts_ns)
        elif p.response and p.direction == "in":
            key = (p.kind, p.dport, p.dns_id, p.qname, p.qtype)
            row = rows.get(key)
            if row is not None and row.answered_ns is None:
                row.answered_ns, row.result, row.answers = p.ts_ns, p.rcode, p.answers
    return list(rows.values())
