"""CLI: ``netpol-harness bench ipvs`` (kube-router's IPVS service proxy in a real kernel; on a
kernel without CONFIG_IP_VS it exits 4 naming the reason and the kernel-matrix command)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def _ipvs(args: argparse.Namespace) -> int:
    from harness.bench import baseline as bl
    from harness.bench.commands import format_metrics
    from harness.cluster.ipvs_proxy import experiment
    from harness.errors import ConfigError

    if args.repeat <= 0:
        raise ConfigError(None, "--repeat", "must be positive")
    experiment.require()
    b = experiment.run(experiment.SMOKE if args.smoke else experiment.Sizes(), repeat=args.repeat,
                       verbose=not args.quiet)
    bl.stamp(b)
    out = Path(args.out) if args.out else Path("reports/bench") / f"ipvs-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}.json"
    bl.save(b, out)
    print(format_metrics(b, f"ipvs proxy (kube-router v2.10.0 layout), sizes {b.params['sizes']}, "
                            f"median [min-max] of {args.repeat}"))
    print(f"saved {out}")
    return 0


def register(sub: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None:
    """Add ``bench ipvs``."""
    p = bench.add_parser("ipvs", help="kube-router's IPVS proxy: ClusterIP path, real-server removal, sync cost",
                         description=__doc__)
    p.add_argument("--out", help="baseline JSON path (default reports/bench/ipvs-<UTC time>.json)")
    p.add_argument("--repeat", type=int, default=2, help="repeats per sync size (default 2)")
    p.add_argument("--smoke", action="store_true", help="small sizes (the kernel matrix's ipvs suite)")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=_ipvs)
