"""Cluster DNS as a real server: Debian's ``dnsmasq`` in a kube-system pod of the lab, and
kubelet's ClusterFirst ``resolv.conf`` for the pods that resolve through it.

    with ClusterDNS(lab, {"mysql.db.svc.cluster.local": [db_ip]}) as dns:   # dnsmasq on dns.ip:53
        dns.update({...})                            # hosts file replaced; returns when served
        proc = dns.popen(lab, "batch/job-0", ["getent", "ahostsv4", "mysql.db"])  # glibc resolves via dns.ip

The server:

- **a full pod** ``kube-system/kube-dns-0`` (``k8s-app=kube-dns``, the label kube-dns/CoreDNS
  pods carry) on ``node`` with a **stable IP**: the last host of that node's pod CIDR
  (10.244.0.254 on the default topology), so it does not depend on the order pods are added;
  a ClusterIP Service can later be put in front of it.
- **records** come from a mapping ``fqdn -> [IPv4Address]`` (e.g. the Service model's
  ``service_dns_records(cluster)``): written as one hosts file in a ``--hostsdir`` directory,
  which dnsmasq 2.90 watches with inotify (its man page: "New or changed files are read
  automatically and modified and deleted files have removed records automatically deleted"),
  so an update is an atomic rename and no signal; ``update`` waits until the server answers with
  the new records and returns that delay.
- **authoritative for cluster.local, no upstream**: ``--local=/cluster.local/`` answers names
  not in the hosts file with NXDOMAIN; ``--no-resolv`` and no ``--server``: no query leaves the
  lab. Every other name gets NXDOMAIN too (``--address=/#/``), which is what a real cluster DNS
  relays from upstream for the names a ``search`` expansion tries last (``mysql.db.`` : no TLD
  ``db``); without it dnsmasq would answer REFUSED and glibc would report EAI_AGAIN ("Temporary
  failure") instead of EAI_NONAME for an unknown short name (measured). Assumption: the lab has no
  external names at all. ``--no-hosts``: the host's /etc/hosts is not served. ``-C /dev/null``:
  no host configuration file is read.
- **not root**: it runs as ``nobody`` (dropped before exec, so PR_SET_PDEATHSIG survives); to
  bind port 53 unprivileged, the DNS pod's own namespace gets ``ip_unprivileged_port_start=53``
  (a per-namespace sysctl of a namespace the harness made; nothing else listens there).
- **ownership**: its process (pid, start time, its directory as the cmdline marker) and its
  directory are in the run record under the owner ``dns``: ``gc`` stops and removes them after
  a SIGKILLed run.

The pods' resolver (``resolv_conf``): kubelet's ClusterFirst format, bind-mounted over
``/etc/resolv.conf`` in the client's own mount namespace (``netns.popen_with_files``); the
host's /etc is never written.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from typing import Any

from harness.cluster import child
from harness.errors import ConfigError, EnvironmentProblem, HarnessError
from harness.kernel import netns

log = logging.getLogger(__name__)

DNSMASQ = "/usr/sbin/dnsmasq"
OWNER = "dns"  # the owner name in the lab's run record
NAMESPACE = "kube-system"
POD_NAME = "kube-dns-0"
LABELS = {"k8s-app": "kube-dns"}
PORT = 53
CLUSTER_DOMAIN = "cluster.local"
SERVER_USER = "nobody"
PR_SET_PDEATHSIG = 1
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)

Records = Mapping[str, Sequence[ipaddress.IPv4Address | str]]


def require_dnsmasq() -> None:
    """EnvironmentProblem with the install hint if Debian's dnsmasq binary is missing."""
    if not os.path.exists(DNSMASQ):
        raise EnvironmentProblem("dnsmasq not installed (the lab's cluster DNS server)",
                                 "apt-get install --no-install-recommends dnsmasq-base")


# -- pure: what kubelet writes, what dnsmasq reads ---------------------------------------------
def resolv_conf(namespace: str, nameservers: Sequence[str], cluster_domain: str = CLUSTER_DOMAIN,
                host_search: Sequence[str] = ()) -> str:
    """A pod's ``/etc/resolv.conf`` under ``dnsPolicy: ClusterFirst``, as kubelet forms it.

    kubernetes 04791b4 pkg/kubelet/network/dns/dns.go: GetPodDNS (podDNSCluster: the cluster
    DNS servers are the only nameservers, ``Options = defaultDNSOptions`` = ``ndots:5``) and
    generateSearchesForDNSClusterFirst (``<ns>.svc.<domain> svc.<domain> <domain>``, then the
    host's own search list, duplicates omitted). Assumption: the node's resolv.conf (kubelet's
    ``--resolv-conf``) has no search line, so ``host_search`` is empty by default. The file's
    line format (nameserver lines, one search line, one options line) is the container
    runtime's; assumed here, not read from containerd's source."""
    searches = [f"{namespace}.svc.{cluster_domain}", f"svc.{cluster_domain}", cluster_domain, *host_search]
    searches = list(dict.fromkeys(searches))  # omitDuplicates, order kept
    lines = [f"nameserver {ns}" for ns in nameservers]
    lines += [f"search {' '.join(searches)}", "options ndots:5"]
    return "\n".join(lines) + "\n"


def check_records(records: Records, cluster_domain: str = CLUSTER_DOMAIN,
                  source: str = "dns records") -> dict[str, list[ipaddress.IPv4Address]]:
    """``records`` normalized (lower-case names without the trailing dot, IPv4 addresses); a
    ConfigError naming the record if a name is outside ``<domain>`` or an address is not IPv4."""
    out: dict[str, list[ipaddress.IPv4Address]] = {}
    for name, ips in records.items():
        fqdn = str(name).rstrip(".").lower()
        if not fqdn.endswith("." + cluster_domain) or any(not part for part in fqdn.split(".")):
            raise ConfigError(source, f"records.{name}", f"not a name under {cluster_domain}")
        try:
            out[fqdn] = [ipaddress.IPv4Address(str(ip)) for ip in ips]
        except ValueError as e:
            raise ConfigError(source, f"records.{name}", str(e)) from None
    return out


def hosts_file(records: Mapping[str, Sequence[ipaddress.IPv4Address]]) -> str:
    """The hosts file dnsmasq serves: one ``<ip> <fqdn>`` line per address, sorted (so an
    unchanged mapping writes the same bytes)."""
    lines = sorted(f"{ip} {name}" for name, ips in records.items() for ip in ips)
    return "".join(line + "\n" for line in lines)


def stable_ip(cluster: Any, node: str) -> ipaddress.IPv4Address:
    """The DNS pod's address: the last host of ``node``'s pod CIDR (HarnessError if taken)."""
    cidr = cluster.nodes[node].pod_cidr
    ip = cidr.broadcast_address - 1
    taken = [p.key for p in cluster.pods.values() if p.ip == ip and p.key != f"{NAMESPACE}/{POD_NAME}"]
    if taken:
        raise HarnessError(f"cluster DNS address {ip} (last host of {node}'s {cidr}) is taken by {taken[0]}")
    return ip


# -- the wire: a query from a namespace ----------------------------------------------------------
def query(ns: str, server: str, name: str, qtype: str = "A", timeout_s: float = 1.0,
          ) -> tuple[str, list[str]]:
    """One UDP query from namespace ``ns`` (no resolver in between): (rcode name, answers),
    e.g. ("NOERROR", ["10.244.0.4"]) or ("NXDOMAIN", []); ("TIMEOUT", []) without an answer."""
    from scapy.layers.dns import DNS, DNSQR

    q = DNS(rd=1, qd=DNSQR(qname=name, qtype=qtype))
    with netns.entered(ns):  # the socket belongs to the namespace it was made in
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.settimeout(timeout_s)
        s.sendto(bytes(q), (server, PORT))
        try:
            data = s.recv(4096)
        except (TimeoutError, ConnectionRefusedError) as e:
            return ("TIMEOUT" if isinstance(e, TimeoutError) else "ECONNREFUSED"), []
    finally:
        s.close()
    r = DNS(data)
    rcode = {0: "NOERROR", 2: "SERVFAIL", 3: "NXDOMAIN", 5: "REFUSED"}.get(r.rcode, str(r.rcode))
    answers = [str(r.an[i].rdata) for i in range(r.ancount or 0) if r.an[i].type == 1]
    return rcode, sorted(answers)


# -- the server ----------------------------------------------------------------------------------
def _preexec(ns_fd: int, uid: int | None, gid: int | None):
    def enter() -> None:  # between fork and exec
        if _libc.setns(ns_fd, CLONE_NEWNET) != 0:
            os._exit(127)
        if uid is not None and gid is not None:  # before PDEATHSIG: a credential change clears it
            os.setgroups([gid])
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # dies with the harness
        os.setpgid(0, 0)
    return enter


def _unprivileged_port_start(port: int) -> None:  # runs inside the DNS pod's namespace
    with open("/proc/sys/net/ipv4/ip_unprivileged_port_start", "w") as f:
        f.write(str(port))


class ClusterDNS:
    """dnsmasq in ``kube-system/kube-dns-0`` on ``node`` serving ``records`` (context manager).
    ``start()`` returns once it answers; ``stop()`` ends it and removes its files, its pod and
    its record entries."""

    def __init__(self, lab: Any, records: Records | None = None, *, node: str = "node-a",
                 cluster_domain: str = CLUSTER_DOMAIN):
        self.lab = lab
        self.node = node
        self.cluster_domain = cluster_domain
        self.records = check_records(records or {}, cluster_domain)
        self.pod_key = f"{NAMESPACE}/{POD_NAME}"
        self.ip = ""
        # what pods' resolv.conf names: the server's pod IP, or the kube-dns Service's ClusterIP
        # once a service proxy DNATs it (kubelet's --cluster-dns)
        self.nameserver = ""
        self.proc: subprocess.Popen | None = None
        self.dir: str | None = None
        self._added_pod = False
        self.started_s = 0.0

    def __enter__(self) -> ClusterDNS:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def hosts_dir(self) -> str:
        return os.path.join(self.dir or "", "hosts")

    @property
    def log_path(self) -> str:
        return os.path.join(self.dir or "", "dnsmasq.log")

    def start(self, timeout: float = 10.0) -> ClusterDNS:
        """Add the DNS pod (if absent), start dnsmasq in it, wait until it answers a record."""
        require_dnsmasq()
        t0 = time.monotonic()
        from harness.model.cluster import Pod

        try:
            if self.pod_key not in self.lab.cluster.pods:
                ip = stable_ip(self.lab.cluster, self.node)
                self.lab.add_pod(Pod(NAMESPACE, POD_NAME, self.node, dict(LABELS), ip=ip))
                self._added_pod = True
            self.ip = str(self.lab.cluster.pods[self.pod_key].ip)
            self.dir = tempfile.mkdtemp(prefix=f"nph-dns-{self.lab.run_id}-")
            st = self.lab.state
            if st is not None:  # recorded before anything is made in it
                st.own_path(OWNER, self.dir)
            self._launch()
            self._wait_serving(timeout)
        except BaseException:
            self.stop()
            raise
        self.started_s = time.monotonic() - t0
        log.info("dnsmasq %d in %s on %s:53 up in %.3f s", self.proc.pid if self.proc else -1, self.pod_key,
                 self.ip, self.started_s)
        return self

    def _launch(self) -> None:
        assert self.dir is not None
        try:
            pw = pwd.getpwnam(SERVER_USER)
            uid, gid = pw.pw_uid, pw.pw_gid
        except KeyError:
            uid = gid = None
        # 0711 + 0755 hosts dir + 0644 files: the server (nobody) reads them, writes nothing
        os.chmod(self.dir, 0o711)
        os.mkdir(self.hosts_dir, 0o755)
        self._write_hosts()
        ns = self.lab.pod_netns(self.pod_key)
        if uid is not None:
            netns.call_in(ns, _unprivileged_port_start, PORT)
        log_fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        if uid is not None:
            os.fchown(log_fd, uid, gid)
        os.close(log_fd)
        argv = [DNSMASQ, "-C", "/dev/null", "--keep-in-foreground", "--no-resolv", "--no-hosts", "--no-poll",
                "--bind-interfaces", f"--listen-address={self.ip}", f"--port={PORT}",
                f"--local=/{self.cluster_domain}/", "--address=/#/", "--domain-needed", "--bogus-priv",
                f"--hostsdir={self.hosts_dir}", "--pid-file=", f"--log-facility={self.log_path}",
                "--log-queries"]
        if uid is None:
            argv.append("--user=root")  # no nobody account: stays root (it would try to switch)
        fd = os.open(netns.path(ns), os.O_RDONLY | os.O_CLOEXEC)
        try:
            self.proc = subprocess.Popen(argv, preexec_fn=_preexec(fd, uid, gid), stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        finally:
            os.close(fd)
        st = self.lab.state
        if st is not None:
            from harness.lab.state import process_start_time

            st.own_process(OWNER, self.proc.pid, process_start_time(self.proc.pid), marker=self.dir)

    def _write_hosts(self) -> None:
        # written beside the watched directory, then renamed into it: dnsmasq never reads half a file
        assert self.dir is not None
        fd, tmp = tempfile.mkstemp(prefix="hosts-", dir=self.dir)
        with os.fdopen(fd, "w") as f:
            f.write(hosts_file(self.records))
        os.chmod(tmp, 0o644)
        os.rename(tmp, os.path.join(self.hosts_dir, "records"))

    def _alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            err = self.proc.stderr.read().decode(errors="replace").strip() if self.proc.stderr else ""
            raise HarnessError(f"dnsmasq in {self.pod_key} exited with {self.proc.returncode}: "
                               f"{err.splitlines()[0] if err else self.log_tail()}")

    def _wait_serving(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        ns = self.lab.pod_netns(self.pod_key)
        probe = f"nph-probe.invalid.{self.cluster_domain}"
        while time.monotonic() < deadline:
            self._alive()
            rcode, _ = query(ns, self.ip, probe, timeout_s=0.2)
            if rcode == "NXDOMAIN":
                return
            time.sleep(0.02)
        raise HarnessError(f"dnsmasq in {self.pod_key} not answering on {self.ip}:53 within {timeout:g} s")

    def update(self, records: Records, timeout: float = 5.0) -> float:
        """Serve ``records`` instead (hosts file replaced in place); returns the seconds from the
        rename to the first query answering with the new set for a changed name (0.0 if nothing
        changed). HarnessError if the server still answers the old records after ``timeout``."""
        new = check_records(records, self.cluster_domain)
        changed = sorted(n for n in set(new) | set(self.records) if new.get(n) != self.records.get(n))
        self.records = new
        t0 = time.monotonic()
        self._write_hosts()
        if not changed:
            return 0.0
        name = changed[0]
        want = ("NOERROR", sorted(str(ip) for ip in new[name])) if new.get(name) else ("NXDOMAIN", [])
        ns = self.lab.pod_netns(self.pod_key)
        while time.monotonic() - t0 < timeout:
            got = query(ns, self.ip, name, timeout_s=0.2)
            if got == want:
                return time.monotonic() - t0
            time.sleep(0.001)
        raise HarnessError(f"dnsmasq in {self.pod_key}: {name} not {want} within {timeout:g} s of the update")

    def resolv_path(self, namespace: str) -> str:
        """The per-run resolv.conf for pods of ``namespace`` (written once, in the server's
        directory: the run record owns it)."""
        assert self.dir is not None, "the DNS server is not started"
        server = self.nameserver or self.ip
        p = os.path.join(self.dir, f"resolv-{namespace}-{server}.conf")
        if not os.path.exists(p):
            fd, tmp = tempfile.mkstemp(prefix="resolv-", dir=self.dir)
            with os.fdopen(fd, "w") as f:
                f.write(resolv_conf(namespace, [server], self.cluster_domain))
            os.chmod(tmp, 0o644)
            os.rename(tmp, p)
        return p

    def popen(self, lab: Any, pod_key: str, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen:
        """Start ``argv`` in pod ``pod_key``'s network namespace with the pod's resolv.conf over
        /etc/resolv.conf in a mount namespace of its own: glibc in it resolves through this server."""
        namespace = pod_key.split("/", 1)[0]
        return netns.popen_with_files(lab.pod_netns(pod_key), argv,
                                      [(self.resolv_path(namespace), "/etc/resolv.conf")], **kwargs)

    def log_tail(self, lines: int = 3) -> str:
        return child.log_tail(self.log_path, lines)

    def stop(self) -> None:
        """SIGTERM, SIGKILL after 5 s; remove its directory, its pod (if it added it) and its
        entries in the run record."""
        proc, self.proc = self.proc, None
        child.stop(proc, grace_s=5)
        if proc is not None and proc.stderr is not None:
            proc.stderr.close()
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
        st = self.lab.state
        if st is not None and (proc is not None or self.dir):
            st.disown(OWNER, pid=proc.pid if proc is not None else None, path=self.dir)
        self.dir = None
        if self._added_pod:
            self._added_pod = False
            with contextlib.suppress(Exception):
                self.lab.remove_pod(self.pod_key)
