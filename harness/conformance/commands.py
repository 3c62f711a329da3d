"""``netpol-harness conformance CASE.yaml [CASE.yaml ...]``: run conformance cases in the kernel.

Prints every step's expected, observed and comparison tables (``--quiet``: only failing steps),
then a summary table, and exits 1 on any mismatch (2 for a user error, 4 when the machine cannot
run it). ``--plan`` prints the expected tables without touching the kernel.
"""

from __future__ import annotations

import argparse
import glob
import json
import os

from tabulate import tabulate

from harness.argtypes import positive_float
from harness.conformance.case import Case, load_case, plan
from harness.conformance.runner import (
    DEFAULT_TIMEOUT,
    CaseResult,
    RunOptions,
    StepResult,
    render_oracle_vs_hand,
    run_case,
)
from harness.engines import options as engine_options
from harness.engines import registry
from harness.errors import ConfigError


def register(sub: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None:
    """Add the ``conformance`` subcommand."""
    p = sub.add_parser("conformance", help="run NetworkPolicy conformance cases against the kernel",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cases", nargs="+", metavar="CASE.yaml",
                   help="case files (a directory means every *.yaml in it)")
    engine_options.add_arguments(p)
    p.add_argument("--timeout", type=positive_float, default=DEFAULT_TIMEOUT,
                   help=f"probe timeout in seconds (default {DEFAULT_TIMEOUT})")
    p.add_argument("--prober", choices=("packet", "socket"), default="packet",
                   help="packet: the probe engine (raw probes, kernel timestamps; default); "
                        "socket: a real connect()/sendto() per cell")
    p.add_argument("--family", choices=("IPv4", "IPv6"), default="IPv4",
                   help="IPv6: probe over IPv6 in a dual-stack lab (IPv4 topologies get the default IPv6 "
                        "plan; kube-router v2.x profiles; socket probes, TCP/UDP)")
    p.add_argument("--keep-conntrack", action="store_true",
                   help="do not flush conntrack in node namespaces after each sync")
    p.add_argument("--quiet", "-q", action="store_true", help="print only failing steps and the summary")
    p.add_argument("--json", metavar="FILE",
                   help="also write each case's verdict (case id, engine, backend, verdict) as JSON to FILE")
    p.add_argument("--plan", action="store_true",
                   help="print each step's expected table (hand-written or oracle) without a kernel run")
    p.set_defaults(func=cmd_conformance)


def expand_case_paths(paths: list[str]) -> list[str]:
    """Case files from the command line; a directory stands for its ``*.yaml`` files, sorted.
    A directory without case files is a ConfigError: a wrong path in CI must not pass as 0/0."""
    out: list[str] = []
    for path in paths:
        if os.path.isdir(path):
            found = sorted(glob.glob(os.path.join(path, "*.yaml")))
            if not found:
                raise ConfigError(path, None, "directory holds no case files (*.yaml)")
            out.extend(found)
        else:
            out.append(path)
    return out


def cmd_conformance(args: argparse.Namespace) -> int:
    cases = [load_case(p) for p in expand_case_paths(args.cases)]  # every file validated before any run
    if args.plan:
        return _print_plan(cases)
    options = RunOptions(timeout=args.timeout, flush_conntrack=not args.keep_conntrack,
                         prober=args.prober, family=args.family).with_enforcement(engine_options.from_args(args))
    registry.resolve(options)  # a bad flag is one line before any case starts
    results: list[CaseResult] = []
    for case in cases:
        print(f"=== {case.name} ({case.source}) engine={options.engine} backend={options.backend} "
              f"profile={options.profile} strategy={options.strategy}", flush=True)

        def show(step: StepResult) -> None:
            failing = not step.ok or (step.oracle_vs_hand is not None and not step.oracle_vs_hand.ok)
            if failing or not args.quiet:
                print(step.report() + "\n", flush=True)

        result = run_case(case, options, on_step=show)
        for problem in result.engine_errors:
            print(f"engine: {problem}", flush=True)
        if result.error:
            print(f"error: {result.error}\n", flush=True)
        results.append(result)
    print(summary_table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"schema": 1, "cases": case_verdicts(results)}, f, indent=1)
            f.write("\n")
    failed = [r for r in results if not r.ok]
    total_ms = sum(r.total_ns for r in results) / 1e6
    print(f"\n{len(results) - len(failed)}/{len(results)} cases passed "
          f"({sum(len(r.steps) for r in results)} steps, {total_ms / 1000:.1f} s)")
    deviations = sum(r.deviation_count for r in results)
    if deviations:  # the engine's known departures from the spec at this profile, expected as such
        print(f"{deviations} cells expected as the engine's known deviations from the spec "
              f"(profile {options.profile}; each listed in its step report without --quiet)")
    return 1 if failed else 0


def case_verdicts(results: list[CaseResult]) -> list[dict]:
    """One dict per case result: ``case`` (file name without .yaml, the id the kernel matrix diffs
    on), engine, backend, profile, strategy, ``verdict`` (pass | FAIL | ERROR), mismatches, error."""
    return [{"case": os.path.splitext(os.path.basename(r.source))[0], "engine": r.options.engine,
             "backend": r.options.backend, "profile": r.options.profile, "strategy": r.options.strategy,
             "verdict": "pass" if r.ok else ("ERROR" if r.error else "FAIL"),
             "mismatches": r.mismatch_count, "error": r.error or ""} for r in results]


def summary_table(results: list[CaseResult]) -> str:
    """One row per case: steps, syncs, cells checked, mismatches, slowest sync, time, result."""
    rows = []
    for r in results:
        syncs = [s for s in r.steps if s.sync_version]
        checked = sum(s.diff.correct + s.diff.count for s in r.steps)
        timeouts = sum(s.outcomes.get("timeout", 0) for s in r.steps)
        retried = sum(s.retried for s in r.steps)
        rows.append([
            os.path.basename(r.source), r.options.engine, r.options.backend, len(r.steps), len(syncs), checked,
            r.mismatch_count, r.oracle_disagreements or "",
            f"{max((s.sync_ms for s in syncs), default=0):.1f}",
            f"{timeouts} (retried {retried})" if retried else (timeouts or ""),
            f"{r.total_ns / 1e9:.2f}", "ok" if r.ok else ("ERROR" if r.error else "FAIL"),
        ])
    return tabulate(rows, headers=["case", "engine", "backend", "steps", "syncs", "cells", "mismatches", "oracle≠hand",
                                   "max sync ms", "timeouts", "time s", "result"])


def _print_plan(cases: list[Case]) -> int:
    disagreements = 0
    for case in cases:
        print(f"=== {case.name} ({case.source})")
        for planned in plan(case):
            s = planned.step
            print(f"step {s.index}: {s.description} [{s.probe}] "
                  f"(expected from {'hand' if planned.hand is not None else 'oracle'})")
            print(planned.expected.render("  "))
            d = planned.oracle_vs_hand
            if d is not None and not d.ok:
                disagreements += 1
                print(render_oracle_vs_hand(d))
            print()
    return 1 if disagreements else 0

