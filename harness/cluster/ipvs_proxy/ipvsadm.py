"""The ``ipvsadm`` text the applier speaks (pure): IPVS ops as ``ipvsadm -R`` lines, and
``ipvsadm -S -n`` (save) output parsed back into virtual services.

Why ipvsadm and not generic netlink of our own: kube-router talks to IPVS through moby/ipvs
(generic netlink, one request per call); Debian's ipvsadm makes the same requests through
libipvs, and ``ipvsadm -R`` sends a whole sync's lines from one process, so the per-op
figure is netlink + kernel cost, not fork/exec. (Not Debian's ``ipvsadm-restore`` wrapper: it
runs ``ipvsadm -C`` first, clearing the table, which is no incremental sync - seen in the guest
as "Service not defined" for the edit of a destination that had just been wiped.) Its save format is also what a person reads
when a test fails. The price: the line format below (ipvsadm(8)) is the contract.
"""

from __future__ import annotations

import shlex

from harness.cluster.ipvs_proxy.plan import RealServer, VirtualService
from harness.cluster.ipvs_proxy.sync import (
    ADD_REAL,
    ADD_SERVICE,
    DEL_REAL,
    DEL_SERVICE,
    EDIT_REAL,
    EDIT_SERVICE,
    Op,
)
from harness.errors import KernelError

PROTO_FLAG = {"tcp": "-t", "udp": "-u", "sctp": "--sctp-service"}
FLAG_PROTO = {v: k for k, v in PROTO_FLAG.items()}
METHOD_FLAG = {"masq": "-m", "gatewaying": "-g", "ipip": "-i"}
FLAG_METHOD = {v: k for k, v in METHOD_FLAG.items()}


def _svc(s: VirtualService) -> list[str]:
    return [PROTO_FLAG[s.protocol], f"{s.vip}:{s.port}"]


def op_line(op: Op) -> str | None:
    """One ``ipvsadm -R`` line for an IPVS op (None for address ops)."""
    s = op.service
    if s is None:
        return None
    if op.kind in (ADD_SERVICE, EDIT_SERVICE):
        args = ["-A" if op.kind == ADD_SERVICE else "-E", *_svc(s), "-s", s.scheduler]
        if s.persistent_s:
            args += ["-p", str(s.persistent_s)]
    elif op.kind == DEL_SERVICE:
        args = ["-D", *_svc(s)]
    elif op.kind in (ADD_REAL, EDIT_REAL):
        r = op.real
        assert r is not None
        args = ["-a" if op.kind == ADD_REAL else "-e", *_svc(s), "-r", f"{r.ip}:{r.port}", METHOD_FLAG[r.method],
                "-w", str(r.weight)]
    elif op.kind == DEL_REAL:
        assert op.real is not None
        args = ["-d", *_svc(s), "-r", f"{op.real.ip}:{op.real.port}"]
    else:
        return None
    return " ".join(args)


def restore_text(ops: list[Op]) -> str:
    """The ``ipvsadm -R`` input for the IPVS ops among ``ops`` ('' if there are none)."""
    lines = [ln for ln in (op_line(o) for o in ops) if ln]
    return "\n".join(lines) + "\n" if lines else ""


def _addr(text: str, line: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise KernelError(f"ipvsadm -S: cannot read address {text!r} in {line!r}")
    return host, int(port)


def parse_save(text: str) -> list[VirtualService]:
    """``ipvsadm -S -n`` output -> virtual services with their real servers (in listed order).
    A line it cannot read is a KernelError naming the line (the format is our contract)."""
    order: list[tuple[str, str, int]] = []
    heads: dict[tuple[str, str, int], dict] = {}
    reals: dict[tuple[str, str, int], list[RealServer]] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        words = shlex.split(line)
        cmd, proto_flag = words[0], words[1] if len(words) > 1 else ""
        if proto_flag not in FLAG_PROTO or len(words) < 3:
            raise KernelError(f"ipvsadm -S: unexpected line {line!r}")
        vip, port = _addr(words[2], line)
        key = (vip, FLAG_PROTO[proto_flag], port)
        opts = words[3:]
        if cmd == "-A":
            head = {"scheduler": "rr", "persistent_s": 0}
            for i, w in enumerate(opts):
                if w == "-s":
                    head["scheduler"] = opts[i + 1]
                elif w == "-p":
                    head["persistent_s"] = int(opts[i + 1])
            heads[key] = head
            order.append(key)
            reals.setdefault(key, [])
        elif cmd == "-a":
            ip = port_r = None
            weight, method = 1, "masq"
            for i, w in enumerate(opts):
                if w == "-r":
                    ip, port_r = _addr(opts[i + 1], line)
                elif w == "-w":
                    weight = int(opts[i + 1])
                elif w in FLAG_METHOD:
                    method = FLAG_METHOD[w]
            if ip is None or port_r is None or key not in heads:
                raise KernelError(f"ipvsadm -S: real server line without service or -r: {line!r}")
            reals[key].append(RealServer(ip, port_r, weight, method))
        else:
            raise KernelError(f"ipvsadm -S: unexpected command in {line!r}")
    return [VirtualService(k[1], k[0], k[2], heads[k]["scheduler"], heads[k]["persistent_s"], tuple(reals[k]))
            for k in order]
