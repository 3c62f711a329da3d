"""CLI of the docker backend: ``docker-gc`` and ``bench docker``.

``bench docker`` builds the default topology, obtains an engine (timed: a private ``dockerd``
start when none answers), then adds container pods one at a time (CNI-like ADD, timed: sandbox,
network ready, application started), runs one job container, removes the pods (CNI DEL) and
stops the engine.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from typing import Any

from tabulate import tabulate

from harness.argtypes import positive_int
from harness.errors import HarnessError


def register(sub: Any, bench: Any) -> None:
    """Add ``docker-gc`` and ``bench docker``."""
    p = sub.add_parser("docker-gc", help="stop private docker engines and containers of dead lab runs")
    p.set_defaults(func=cmd_docker_gc)

    p = bench.add_parser("docker", help="time engine start and container-pod add/remove (CNI-like)")
    p.add_argument("--pods", type=positive_int, default=10, help="container pods added one by one; default 10")
    p.add_argument("--private", action="store_true", help="always start a private engine (never reuse)")
    p.set_defaults(func=cmd_bench_docker)


def check_docker_selector(cluster: Any, spec: str) -> list[str]:
    """The model's pods that ``up --docker SPEC`` would turn into containers (full pods on real
    nodes, the ones the lab realizes in a namespace of their own), with the grammar of
    ``docker_pods.select_pods``; HarnessError if the selector is malformed or matches none.
    Checked before the lab is built, so a typo costs nothing."""
    from harness.model.cluster import PodKind

    full = [k for k, p in cluster.pods.items()
            if p.kind is PodKind.FULL and p.node in cluster.nodes and cluster.nodes[p.node].is_real]
    if spec.strip() == "all":
        out = full
    else:
        out = []
        for item in (x.strip() for x in spec.split(",") if x.strip()):
            if "/" in item:
                if item not in full:
                    raise HarnessError(f"--docker: {item[:80]}: no full pod of that name in the topology")
                out.append(item)
            elif "=" in item:
                k, _, v = item.partition("=")
                out += [p for p in full if cluster.pods[p].labels.get(k) == v]
            else:
                raise HarnessError(f"--docker: {item[:80]!r}: expected all, ns/name or label=value")
    if not out:
        raise HarnessError(f"--docker: {spec[:80]!r} matches no full pod of topology {cluster.name} "
                           f"(selectable: all, ns/name or label=value of a full pod on a real node)")
    return list(dict.fromkeys(out))


def cmd_docker_gc(args: argparse.Namespace) -> int:
    from harness.lab.docker_pods import gc

    out = gc()
    print(f"removed {len(out['engines'])} private docker engine(s){': ' if out['engines'] else ''}"
          f"{' '.join(out['engines'])}; {len(out['containers'])} container(s) on a reused engine")
    return 0


def _ms(ns: float) -> str:
    return f"{ns / 1e6:.1f}"


def cmd_bench_docker(args: argparse.Namespace) -> int:
    from harness.lab.docker_engine import Engine
    from harness.lab.docker_pods import DockerPods, run_job_container
    from harness.lab.lab import Lab
    from harness.model.cluster import Pod
    from harness.model.topology import load_topology

    t0 = time.perf_counter()
    engine = Engine.obtain(reuse=not args.private)
    engine_s = time.perf_counter() - t0
    try:
        with Lab(load_topology("default")) as lab:
            t1 = time.perf_counter()
            pods = DockerPods(lab, engine)
            image_s = time.perf_counter() - t1
            try:
                nodes = [n.name for n in lab.cluster.real_nodes()]
                adds, sandbox, cni, app = [], [], [], []
                for i in range(args.pods):
                    t = time.perf_counter()
                    cp = pods.add(Pod("bench", f"c{i}", nodes[i % len(nodes)]))
                    adds.append((time.perf_counter() - t) * 1e3)
                    cni.append(cp.network_ready_ns - cp.sandbox_ns)
                    app.append(cp.app_started_ns - cp.network_ready_ns)
                    sandbox.append(cp.sandbox_ns)
                t = time.perf_counter()
                job = run_job_container(lab, Pod("bench", "job", nodes[-1]), ["true"], pods=pods)
                job_s = time.perf_counter() - t
                dels = []
                for key in list(pods.pods):
                    t = time.perf_counter()
                    pods.remove(key)
                    dels.append((time.perf_counter() - t) * 1e3)
            finally:
                pods.close()
    except HarnessError:
        raise
    finally:
        t2 = time.perf_counter()
        engine.close()
        stop_s = time.perf_counter() - t2
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"kernel {platform.release()}, {os.cpu_count()} CPUs, python {sys.version.split()[0]}, load average {load}")
    kind = f"private dockerd ({engine.base_url})" if engine.private else f"reused engine {engine.base_url}"
    print(f"engine: {kind}: ready in {engine_s:.2f} s, stopped in {stop_s:.2f} s; pod image ready in {image_s:.2f} s")
    rows = [["container pod add (create+start+CNI ADD+go), ms", f"{statistics.median(adds):.0f}",
             f"{min(adds):.0f}", f"{max(adds):.0f}"],
            ["sandbox -> network ready (CNI ADD), ms", _ms(statistics.median(cni)), _ms(min(cni)), _ms(max(cni))],
            ["network ready -> app started, ms", _ms(statistics.median(app)), _ms(min(app)), _ms(max(app))],
            ["container pod remove (kill+CNI DEL+rm), ms", f"{statistics.median(dels):.0f}",
             f"{min(dels):.0f}", f"{max(dels):.0f}"]]
    print(tabulate(rows, headers=[f"{args.pods} pods", "median", "min", "max"]))
    print(f"job container `true`: {job_s * 1e3:.0f} ms end to end, exit {job.exit_code}, "
          f"app started {_ms(job.app_started_ns - job.network_ready_ns)} ms after network ready")
    return 0
