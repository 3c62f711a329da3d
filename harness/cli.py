"""The ``netpol-harness`` command.

Each area of the harness contributes its subcommands through a ``register(sub, bench)``
function in its own ``commands`` module (``sub`` the top-level subparsers, ``bench`` the
subparsers of ``netpol-harness bench``); a handler is ``args.func(args) -> int``.
User errors (``HarnessError``) print one line and exit 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from harness.errors import EnvironmentProblem, HarnessError

COMMAND_MODULES = (
    "harness.lab.commands",  # check, up, down, exec, gc, bench lab
    "harness.lab.docker_commands",  # docker-gc, bench docker
    "harness.engines.kube_router.render.commands",  # render, bench render
    "harness.engines.kube_router.apply.commands",  # bench apply
    "harness.conformance.commands",  # conformance
    "harness.controller.commands",  # controller, bench controller
    "harness.bench.commands",  # bench sweep|datapath|canaries|plot, compare
    "harness.probe.commands",  # calibrate, bench probe
    "harness.suite",  # suite (the main job)
    "harness.report.commands",  # report
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="netpol-harness",
        description="Kernel-level test harness for Kubernetes NetworkPolicy enforcement.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    bench_parser = sub.add_parser("bench", help="benchmarks (lab, render, apply, probe, ...)")
    bench = bench_parser.add_subparsers(dest="bench", metavar="SUITE")
    bench.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub, bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except HarnessError as e:
        if args.debug:
            raise
        print(f"netpol-harness: error: {e}", file=sys.stderr)
        return 4 if isinstance(e, EnvironmentProblem) else 2
    except KeyboardInterrupt:
        print("netpol-harness: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into head & co.: not an error of ours
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
