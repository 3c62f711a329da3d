"""CLI commands of the lab: check, up, down, exec, gc, and ``bench lab``."""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sys
import time
from typing import Any

from tabulate import tabulate

from harness.argtypes import non_negative_int, positive_int
from harness.errors import HarnessError


def register(sub: Any, bench: Any) -> None:
    """Add the lab's subcommands to the top-level and ``bench`` subparsers."""
    p = sub.add_parser("check", help="can this machine run the kernel part? (exit 4 if not)")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("up", help="build a topology in the kernel (until Ctrl-C, or --keep)")
    p.add_argument("topology", help="a shipped topology name (default, k8s-e2e, ...) or a YAML path")
    p.add_argument("--keep", action="store_true", help="leave it up and exit; remove with `netpol-harness down`")
    p.add_argument("--no-servers", action="store_true", help="do not start the TCP/UDP echo listeners")
    p.add_argument("--docker", metavar="PODS",
                   help="make these pods Docker containers: all, ns/name,... or label=value (not with --keep)")
    p.add_argument("--api", action="store_true",
                   help="serve the Kubernetes API inside the lab (plain HTTP on the underlay; not with --keep)")
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("down", help="remove a kept lab")
    p.add_argument("run_id", nargs="?", help="run id (default: the only kept lab)")
    p.set_defaults(func=cmd_down)

    p = sub.add_parser("exec", help="run a command inside a pod (ns/name) or node of a kept lab")
    p.add_argument("--run", dest="run_id", help="run id (default: the only kept lab)")
    p.add_argument("target", metavar="POD", help="pod as namespace/name, or a real node's name")
    p.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD", help="the command and its arguments")
    p.set_defaults(func=cmd_exec)

    p = sub.add_parser("gc", help="remove leftovers of crashed lab runs (never a live run)")
    p.add_argument("--all", action="store_true", help="also remove kept labs whose owner has exited")
    p.add_argument("--orphans", action="store_true",
                   help="also delete nph-<run id>-* namespaces that no run record claims")
    p.set_defaults(func=cmd_gc)

    p = bench.add_parser("lab", help="time realizing and removing full and light pods")
    p.add_argument("--full", type=non_negative_int, default=1000,
                   help="full pods (own namespace + veth); default 1000")
    p.add_argument("--light", type=non_negative_int, default=0, help="light pods (addresses in a shared namespace)")
    p.add_argument("--nodes", type=positive_int, default=2, help="real nodes; default 2")
    p.add_argument("--repeat", type=positive_int, default=1, help="runs (one row each)")
    p.add_argument("--no-servers", action="store_true", help="without echo listeners")
    p.add_argument("--services", type=non_negative_int, default=0,
                   help="also time the Service path (EndpointSlices + kube-proxy render and apply per node) "
                        "for the same number of pods behind this many Services")
    p.add_argument("--backend", choices=("nft", "legacy"), default="nft", help="iptables backend of --services")
    p.set_defaults(func=cmd_bench_lab)


# -- check ---------------------------------------------------------------------------------------
def cmd_check(args: argparse.Namespace) -> int:
    from harness.lab.check import NOTES, checks

    rows = []
    bad = 0
    for c in checks():
        # br_netfilter missing is loaded by the lab itself: a note, not a failure.
        fatal = not c.ok and c.name not in NOTES
        bad += fatal
        rows.append([c.name, "ok" if c.ok else ("MISSING" if fatal else "note"), c.detail, c.hint or ""])
    print(tabulate(rows, headers=["check", "status", "detail", "fix"]))
    print(f"\nkernel {platform.release()}: " + ("ready" if not bad else f"{bad} problem(s)"))
    return 4 if bad else 0


# -- up / down / exec ------------------------------------------------------------------------------
def _load_cluster(name_or_path: str) -> Any:
    from harness.model.topology import load_topology  # lazy: written alongside this module

    return load_topology(name_or_path)


def print_lab(lab: Any) -> None:
    """Tables of a lab's nodes and pods (CLI output)."""
    nodes, pods = lab.describe()
    print(tabulate(nodes, headers=["node", "kind", "node IP", "pod CIDR", "netns"]))
    print()
    print(tabulate(pods, headers=["pod", "node", "kind", "IP", "ports", "netns"]))


def cmd_up(args: argparse.Namespace) -> int:
    from harness.lab.lab import Lab

    if args.docker and args.keep:  # a private engine belongs to the process that started it
        raise HarnessError("up: --docker cannot be combined with --keep")
    if args.api and args.keep:  # the API server is threads of this process
        raise HarnessError("up: --api cannot be combined with --keep")
    cluster = _load_cluster(args.topology)
    if args.docker:  # a selector that matches nothing is a mistake: say so before building anything
        from harness.lab.docker_commands import check_docker_selector

        check_docker_selector(cluster, args.docker)
    lab = Lab(cluster, servers=not args.no_servers, topology=args.topology)
    lab.up()
    docker = api = None
    try:
        if args.docker:
            from harness.lab.docker_pods import up_docker

            docker = up_docker(lab, args.docker)
        print_lab(docker or lab)
        print(f"\nrun {lab.run_id}: up in {lab.timings.up:.3f} s")
        if args.api:
            from harness.cluster.apiserver import LabApi

            api = LabApi.start(lab)
            print(f"API server {api.url} (from a node: netpol-harness exec --run {lab.run_id} NODE -- "
                  f"kubectl --server {api.url} get pods -A -w)")
        if args.keep:
            lab.detach()
            print(f"kept. `netpol-harness exec POD -- CMD`, `netpol-harness down {lab.run_id}`")
            return 0
        print("press Ctrl-C to tear down", flush=True)
        # SIGINT/SIGTERM/SIGHUP raise KeyboardInterrupt here (harness.signals, installed by main).
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
        return 0
    finally:
        if api is not None:
            api.stop()
        if docker is not None:
            docker.close()
        if not lab.kept:
            lab.down()
            print(f"run {lab.run_id}: down in {lab.timings.down:.3f} s")


def _pick_run(run_id: str | None) -> Any:
    from harness.lab import state

    if run_id:
        return state.load(state.check_run_id(run_id, "RUN"))
    runs = state.list_runs()
    kept = [r for r in runs if r.kept]
    if len(kept) == 1:
        return kept[0]
    if not kept:
        raise HarnessError("no kept lab (start one with `netpol-harness up TOPOLOGY --keep`)")
    raise HarnessError("several kept labs, name one: " + ", ".join(r.run_id for r in kept))


def cmd_down(args: argparse.Namespace) -> int:
    from harness.lab import state

    st = _pick_run(args.run_id)
    if st.owner_alive() and not st.kept:
        raise HarnessError(f"run {st.run_id} belongs to running process {st.owner_pid}: it tears down itself")
    n = state.remove_run(st)
    print(f"run {st.run_id}: removed {n} namespaces")
    return 0


def cmd_exec(args: argparse.Namespace) -> int:
    from harness.kernel import netns

    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        raise HarnessError("exec: no command given (netpol-harness exec POD -- CMD ...)")
    st = _pick_run(args.run_id)
    target = args.target
    ns = None
    if target in st.pods:
        ns = st.pods[target].get("netns")
        if ns is None:
            raise HarnessError(f"pod {target} is virtual: it exists in the model only")
    elif target in st.nodes:
        ns = st.nodes[target].get("netns")
        if ns is None:
            raise HarnessError(f"node {target} is virtual: it exists in the model only")
    else:
        raise HarnessError(f"run {st.run_id}: no pod or node {target!r} (pods are namespace/name)")
    try:
        proc = netns.popen(ns, cmd)
    except FileNotFoundError:
        raise HarnessError(f"exec: command not found: {cmd[0]}") from None
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        return 130


# -- gc ------------------------------------------------------------------------------------------------
def cmd_gc(args: argparse.Namespace) -> int:
    from harness.lab import state

    rep = state.gc(include_kept=args.all, orphans=args.orphans)
    runs = f" ({' '.join(rep.removed)})" if rep.removed else ""
    print(f"removed {len(rep.removed)} run(s){runs}, {rep.namespaces} namespaces")
    if rep.orphans:
        print(f"removed {len(rep.orphans)} orphan namespaces: {' '.join(rep.orphans)}")
    if rep.live:
        print(f"left alone (owner running): {' '.join(rep.live)}")
    if rep.kept:
        print(f"left alone (kept; `gc --all` or `down RUN`): {' '.join(rep.kept)}")
    if rep.processes:
        print(f"stopped {rep.processes} process(es) the removed runs owned")
    from harness.lab.docker_pods import gc as docker_gc

    d = docker_gc()  # private engines of dead runs and containers/images of removed runs
    if d["engines"] or d["containers"]:
        print(f"removed docker: {len(d['engines'])} private engine(s), {len(d['containers'])} container(s)/image(s)")
    from harness.bench.kernels.runs import gc as kernels_gc

    qemus, kruns = kernels_gc()  # qemu and scratch directories of dead `kernels run`s
    if qemus or kruns:
        print(f"removed {kruns} dead kernel-matrix run(s), killed {qemus} qemu process(es)")
    return 0


# -- bench lab ---------------------------------------------------------------------------------------
def cmd_bench_lab(args: argparse.Namespace) -> int:
    from harness.lab.bench import cpu_count, run_lab_bench

    rows = []
    for _ in range(max(1, args.repeat)):
        r = run_lab_bench(args.full, args.light, args.nodes, servers=not args.no_servers)
        rows.append([r.nodes, r.full, r.light, f"{r.infrastructure_s:.3f}", f"{r.full_pods_s:.3f}",
                     f"{r.light_pods_s:.3f}", f"{r.servers_s:.3f}" if r.servers else "-", f"{r.up_s:.3f}",
                     f"{r.up_cpu_s:.3f}",
                     f"{r.down_s:.3f}", "-" if r.settled_s is None else f"{r.settled_s:.3f}",
                     f"{r.add_pod_ms:.1f}"])
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"kernel {platform.release()}, {cpu_count()} CPUs, python {sys.version.split()[0]}, load average {load}")
    print(tabulate(rows, headers=["nodes", "full", "light", "infra s", "full pods s", "light pods s", "servers s",
                                  "realize s", "cpu s", "teardown s", "kernel freed s", "add_pod ms"]))
    if args.services:
        _bench_service_path(args)
    return 0


def _bench_service_path(args: argparse.Namespace) -> None:
    # the Service path per pod (harness.bench.service_path)
    from harness.bench.service_path import run_service_bench

    rows = []
    for _ in range(max(1, args.repeat)):
        r = run_service_bench(args.full + args.light, args.services, args.nodes, backend=args.backend)
        rows.append([r.nodes, r.pods, r.services, r.endpoints, r.backend, f"{r.derive_ms:.1f}", f"{r.render_ms:.1f}",
                     f"{r.full_sync_ms:.1f}", f"{r.partial_sync_ms:.1f}", r.restore_lines, f"{r.per_pod_ms:.3f}"])
    print()
    print("Service path (kube-proxy iptables mode on every real node):")
    print(tabulate(rows, headers=["nodes", "pods", "services", "endpoints", "backend", "EndpointSlices ms",
                                  "render ms", "full sync ms (all nodes)", "partial sync ms", "restore lines",
                                  "per pod ms"]))
