"""The ``netpol-harness`` command.

Each area of the harness contributes its subcommands through a ``register(sub, bench)``
function in its own ``commands`` module (``sub`` the top-level subparsers, ``bench`` the
subparsers of ``netpol-harness bench``); a handler is ``args.func(args) -> int``.
User errors (``HarnessError``) print one line and exit 2 (4 for ``EnvironmentProblem``, and for
a permission the caller lacks); any other exception prints one line naming its type and exits 1;
a bad command line is one line and exit 2. ``--debug`` shows the traceback. SIGINT, SIGTERM and
SIGHUP tear down like Ctrl-C (``harness.signals``) and exit 130, 143 or 129.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys

from harness import signals
from harness.errors import EnvironmentProblem, HarnessError

COMMAND_MODULES = (
    "harness.lab.commands",  # check, up, down, exec, gc, bench lab
    "harness.lab.docker_commands",  # docker-gc, bench docker
    "harness.engines.kube_router.render.commands",  # render, bench render
    "harness.engines.kube_router.apply.commands",  # bench apply
    "harness.conformance.commands",  # conformance
    "harness.controller.commands",  # controller, bench controller
    "harness.bench.commands",  # bench sweep|datapath|canaries|plot, compare
    "harness.bench.churn_commands",  # bench churn
    "harness.bench.proxy_load_commands",  # bench proxy-load
    "harness.sim.commands",  # simulate run|grid|validate|fit
    "harness.probe.commands",  # calibrate, bench probe
    "harness.suite",  # suite (the main job)
    "harness.report.commands",  # report
    "harness.bench.kernels.commands",  # kernels run|table|compare|fetch|gc
    "harness.cluster.ipvs_proxy.commands",  # bench ipvs
    "harness.cluster.kube_proxy.commands",  # kube-proxy (render a topology's Services)
)


MESSAGE_LIMIT = 500  # characters of an error line shown; the rest is cut, never a huge repr
DEBUG_HINT = "(run with --debug for the traceback)"


def one_line(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """``text`` on one line, cut to ``limit`` characters (a user sees the start of a huge value)."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``netpol-harness up: error: ... (see --help)``, exit 2.
    (The stock parser prints the usage block first; subparsers inherit this class.)"""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
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
    signals.install()  # first: a signal during the imports or the build tears down like Ctrl-C
    debug = "--debug" in (sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        debug = args.debug
        logging.basicConfig(
            level=logging.DEBUG if args.debug else logging.WARNING,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        rc = int(args.func(args) or 0)
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM/SIGHUP through harness.signals
        signum = e.signum if isinstance(e, signals.Terminated) else signals.received()
        print(f"netpol-harness: {'interrupted' if signum in (None, signal.SIGINT) else e}", file=sys.stderr)
        signals.teardown_done()
        return signals.exit_code(signum)
    except BrokenPipeError:  # output piped into head & co.: not an error of ours
        sys.stderr.close()
        return 0
    except Exception as e:
        if debug:
            raise
        return _report(e)
    # A signal a command caught (``up`` waits for Ctrl-C) still ends with its exit code.
    if signals.received():
        signals.teardown_done()
        return signals.exit_code()
    return rc


def _report(e: Exception) -> int:
    """Print one line for an exception a command let through; return the exit code."""
    if isinstance(e, HarnessError):
        print(f"netpol-harness: error: {one_line(str(e))}", file=sys.stderr)
        return 4 if isinstance(e, EnvironmentProblem) else 2
    if isinstance(e, PermissionError):  # e.g. non-root `gc` with a root-owned leftover
        what = f"{e.strerror}: {e.filename}" if e.filename else str(e)
        print(f"netpol-harness: error: {one_line(what)} (run as root: the lab's kernel objects, "
              f"run records and processes belong to root)", file=sys.stderr)
        return 4
    print(f"netpol-harness: error: {type(e).__name__}: {one_line(str(e))} {DEBUG_HINT}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
