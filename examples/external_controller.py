#!/usr/bin/env python3
"""A tiny external network policy controller for netpol-harness (the protocol is described in
harness/engines/external/engine.py).

It is started by the harness *inside* a node's network namespace, reads one JSON line per
event on stdin, keeps its own view of the cluster and programs the namespace it runs in:
kube-router's ruleset rendered by the harness's renderer, written with ``ipset restore`` and
``iptables-restore`` (the whole filter table, as kube-router does). Unlike kube-router it syncs
once per *batch* of events already waiting on stdin, and reports each sync on stdout.

Run it through the harness, e.g.:

    netpol-harness conformance cases/conformance --engine external \
        --external-cmd "python3 examples/external_controller.py"
    ControllerConfig(external={"node-a": [sys.executable, "examples/external_controller.py"]})

Environment (set by the harness, nothing else is inherited): NPH_NODE, NPH_BACKEND (nft | legacy),
NPH_PROFILE, PATH, PYTHONPATH (the repository), LANG.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time

from harness.controller.events import ClusterEvent, apply_event, cluster_from_dict
from harness.engines.kube_router.apply.restore_text import (
    filter_restore_text,
    ipset_restore_text,
    parse_ipset_save,
    stale_sets,
)
from harness.engines.kube_router.render.kube_router import render_node

TOOLS = {"nft": ("iptables-nft-save", "iptables-nft-restore"), "legacy": ("iptables-legacy-save",
                                                                          "iptables-legacy-restore")}


def run(argv: list[str], text: str | None = None) -> str:
    proc = subprocess.run(argv, input=text, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]}: {proc.stderr.strip()}")
    return proc.stdout


def sync(cluster, node: str, config: dict, through_seq: int, reason: str) -> dict:
    """Render and program everything; return the sync line for the harness."""
    save, restore = TOOLS[config.get("backend", "nft")]
    start = time.time_ns()
    t0 = time.perf_counter_ns()
    ruleset = render_node(cluster, node, profile=config.get("profile", "v2.10"), sync_version=start,
                          default_deny=bool(config.get("default_deny")), reject_with=config.get("reject_with"))
    render = time.perf_counter_ns() - t0
    existing = parse_ipset_save(run(["ipset", "save"]))
    t1 = time.perf_counter_ns()
    run(["ipset", "restore", "-exist"], ipset_restore_text(ruleset, existing))
    ipset_time = time.perf_counter_ns() - t1
    sets_ns = time.time_ns()
    t2 = time.perf_counter_ns()
    saved = run([save, "-t", "filter"])
    save_time = time.perf_counter_ns() - t2
    t3 = time.perf_counter_ns()
    run([restore] + (["-w"] if restore.endswith("legacy-restore") else []), filter_restore_text(ruleset, saved))
    restore_time = time.perf_counter_ns() - t3
    rules_ns = time.time_ns()
    for name in stale_sets(ruleset, parse_ipset_save(run(["ipset", "save"]))):
        run(["ipset", "destroy", name])
    return {"type": "sync", "reason": reason, "through_seq": through_seq, "sync_version": start,
            "start_ns": start, "sets_ns": sets_ns, "rules_ns": rules_ns, "end_ns": time.time_ns(),
            "render_ns": render, "timings": {"ipset_restore_time": ipset_time, "iptables_save_time": save_time,
                                             "iptables_restore_time": restore_time}}


def main() -> int:
    node = os.environ.get("NPH_NODE", "")
    lines: queue.Queue[str | None] = queue.Queue()

    def reader() -> None:
        for line in sys.stdin:
            lines.put(line)
        lines.put(None)  # EOF: the run is over

    threading.Thread(target=reader, daemon=True).start()
    cluster, config, seq = None, {}, 0
    while True:
        batch = [lines.get()]
        while not lines.empty():  # everything already waiting becomes one sync
            batch.append(lines.get_nowait())
        reason = "events"
        for line in batch:
            if line is None:
                return 0
            msg = json.loads(line)
            if msg["type"] == "snapshot":
                cluster, config, seq = cluster_from_dict(msg["cluster"]), msg.get("config", {}), msg["seq"]
                node = msg.get("node", node)
                reason = "snapshot"
            elif msg["type"] == "event" and cluster is not None:
                apply_event(cluster, ClusterEvent.from_dict(msg))
                seq = msg["seq"]
            elif msg["type"] == "resync":
                reason = "resync"
        if cluster is not None:
            print(json.dumps(sync(cluster, node, config, seq, reason)), flush=True)


if __name__ == "__main__":
    sys.exit(main())
