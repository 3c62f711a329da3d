"""The main job: run the scenario suite on the default topology, write one report under
``reports/<run-id>/`` and print the summary table.

1. the scenarios: ``pytest.main`` on ``cases/scenarios`` with ``--scenario-size full`` (the same
   pytest modules CI runs at smoke size), their JUnit XML next to the report; their progress
   (configuration, run i of N, ETA) replaces pytest's dots (``harness.scenarios.progress``);
2. the conformance cases (``cases/suite``, ``cases/conformance``; cheap) through the
   conformance runner, as one section;
3. ``results.json`` (every observation and summary), ``report.md`` and the PNG plots
   (``harness.report.scenario_report``); ``netpol-harness report RUN`` re-renders them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.conformance.case import load_case
from harness.conformance.runner import CaseResult, RunOptions, StepResult, run_case
from harness.engines import options as engine_options
from harness.engines import registry
from harness.engines.config import EnforcementConfig
from harness.report.machine import machine_info
from harness.report.recorder import new_run_id

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CASES = (REPO / "cases" / "suite", REPO / "cases" / "conformance")
SCENARIO_DIR = REPO / "cases" / "scenarios"


@dataclass
class SuiteOptions:
    case_paths: list[Path] = field(default_factory=lambda: list(DEFAULT_CASES))
    run: RunOptions = field(default_factory=RunOptions)
    out_dir: Path = REPO / "reports"
    size: str = "full"  # scenario size: full (main job) or smoke (CI)
    scenarios: bool = True
    conformance: bool = True
    select: str | None = None  # pytest -k expression for the scenario tests
    quiet: bool = False  # progress: one line per finished configuration, no run updates


def case_files(paths: list[Path]) -> list[Path]:
    """Case files from files and directories (a directory stands for its sorted ``*.yaml``)."""
    out: list[Path] = []
    for p in paths:
        out.extend(sorted(p.glob("*.yaml")) if p.is_dir() else [p])
    return out


def step_json(step: StepResult) -> dict[str, Any]:
    return {
        "index": step.index,
        "description": step.description,
        "probe": str(step.probe),
        "changes": step.changes,
        "expected_from": step.expected_from,
        "expected": step.expected.render(),
        "observed": step.observed.render(),
        "cells_checked": step.diff.correct + step.diff.count,
        "mismatch_lines": [str(m) for m in step.mismatches],
        "oracle_vs_hand": [str(m) for m in step.oracle_vs_hand.mismatches] if step.oracle_vs_hand else [],
        "sync_version": step.sync_version,
        "syncs": [{"node": s.node, "render_ns": s.render_ns, "timings": dict(s.timings)}
                  for s in step.syncs],
        "outcomes": dict(step.outcomes),
        "probe_time_ns": step.probe_time_ns,
    }


def case_json(path: Path, topology: str, result: CaseResult) -> dict[str, Any]:
    return {
        "file": str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path),
        "name": result.name,
        "topology": topology,
        "verdict": "pass" if result.ok else ("error" if result.error else "fail"),
        "mismatches": result.mismatch_count,
        "oracle_disagreements": result.oracle_disagreements,
        "error": result.error,
        "engine_errors": list(result.engine_errors),
        "lab_up_ns": result.lab_up_ns,
        "lab_down_ns": result.lab_down_ns,
        "total_ns": result.total_ns,
        "steps": [step_json(s) for s in result.steps],
    }


def run_conformance(options: SuiteOptions, *, progress=None) -> dict[str, Any]:
    """Run every conformance case; the ``conformance`` section of results.json."""
    files = case_files(options.case_paths)
    cases = [load_case(str(f)) for f in files]  # validate every file before any kernel work
    t0 = time.monotonic()
    section: dict[str, Any] = {
        "run_id": "conformance", "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {},
        "options": {**options.run.describe(), "timeout": options.run.timeout,
                    "cases": [str(f) for f in files]},
        "cases": [],
    }
    for path, case in zip(files, cases, strict=True):
        result = run_case(case, options.run)
        entry = case_json(path, str(case.topology), result)
        section["cases"].append(entry)
        if progress:
            progress(f"{entry['verdict']:>5}  {entry['file']}  ({result.total_ns / 1e9:.1f} s, "
                     f"{entry['mismatches']} mismatches)")
    cases_json = section["cases"]
    passed = sum(1 for c in cases_json if c["verdict"] == "pass")
    section["wall_s"] = time.monotonic() - t0
    section["summary"] = {
        "cases": len(cases_json), "cases_passed": passed,
        "cells_checked": sum(s["cells_checked"] for c in cases_json for s in c["steps"]),
        "mismatches": sum(c["mismatches"] for c in cases_json),
        "verdict": "PASS" if passed == len(cases_json) else "FAIL",
    }
    return section


class _Outcomes:
    """A pytest plugin counting test outcomes (passed / failed / skipped / error)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.failed: list[str] = []

    def pytest_runtest_logreport(self, report) -> None:
        if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
            word = report.outcome if report.when == "call" else ("error" if report.failed else report.outcome)
            self.counts[word] = self.counts.get(word, 0) + 1
            if report.failed:
                self.failed.append(report.nodeid)


def enforcement_args(config: EnforcementConfig) -> list[str]:
    """The pytest options that make ``config`` the scenarios' session configuration."""
    args = ["--engine", config.engine, "--profile", config.profile, "--strategy", config.strategy,
            "--backend", config.backend]
    if config.external_cmd:
        args += ["--external-cmd", shlex.join(config.external_cmd)]
    if config.binary_cmd:
        args += ["--binary-cmd", shlex.join(config.binary_cmd)]
    if config.metrics_port is not None:
        args += ["--metrics-port", str(config.metrics_port)]
    if config.datapath != "iptables":
        args += ["--datapath", config.datapath]
    return args


def run_scenarios(size: str, folder: Path, *, select: str | None = None,
                  extra_args: list[str] | None = None, enforcement: EnforcementConfig | None = None,
                  progress: bool = True, quiet: bool = False) -> dict[str, Any]:
    """Run the scenario pytest modules in this process (its main thread: the MariaDB server
    dies with the thread that started it) with ``enforcement`` as their session configuration
    (the pytest options), and return their entries plus the test run's facts.
    ``progress``: show the scenario, configuration, run i of N, elapsed and ETA in place of
    pytest's dots (``harness.scenarios.progress``; ``quiet``: finished configurations only)."""
    import pytest

    from harness import signals
    from harness.scenarios.progress import ProgressPlugin

    folder.mkdir(parents=True, exist_ok=True)
    dump = folder / "scenarios.json"
    args = [str(SCENARIO_DIR), "-p", "no:cacheprovider", "-q", "--scenario-size", size,
            "--scenario-json", str(dump), f"--junitxml={folder / 'junit.xml'}", "-o", "junit_family=xunit1"]
    if select:
        args += ["-k", select]
    if enforcement is not None:
        args += enforcement_args(enforcement)
    args += extra_args or []
    outcomes = _Outcomes()
    plugins: list[Any] = [outcomes]
    shown = None
    if progress:
        # classic style: no "[ 40%]" column beside the (blanked) dots
        args += ["-o", "console_output_style=classic"]
        shown = ProgressPlugin(quiet=quiet)
        plugins.append(shown)
    t0 = time.monotonic()
    try:
        code = pytest.main(args, plugins=plugins)
    finally:
        if shown is not None:
            shown.close()
    signals.raise_if_received()  # pytest ended its session on SIGTERM/SIGINT: the suite stops too
    wall = time.monotonic() - t0
    data = json.loads(dump.read_text()) if dump.exists() else {"scenarios": []}
    with contextlib.suppress(FileNotFoundError):
        dump.unlink()
    return {"entries": data["scenarios"],
            "run": {"exit_code": int(code), "wall_s": wall, "tests": outcomes.counts, "failed": outcomes.failed,
                    "size": size, "args": args}}


def run_suite(options: SuiteOptions, *, progress=None) -> tuple[Path, dict[str, Any]]:
    """The main job: scenarios, then conformance; writes the run folder; returns (folder, results)."""
    from harness.report.machine import tool_version
    from harness.report.scenario_report import overall, write_run

    run_id = new_run_id()
    folder = options.out_dir / run_id
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    t0 = time.monotonic()
    results: dict[str, Any] = {"run_id": run_id, "started": started, "mode": options.size,
                               "machine": machine_info(), "mariadb": tool_version("mariadb")}
    if options.scenarios:
        sc = run_scenarios(options.size, folder, select=options.select, enforcement=options.run.enforcement(),
                           quiet=options.quiet)
        results["scenarios"] = sc["entries"]
        results["scenario_run"] = sc["run"]
    if options.conformance:
        results["conformance"] = run_conformance(options, progress=progress)
        results["conformance"]["machine"] = results["machine"]
    results["wall_s"] = time.monotonic() - t0
    results["summary"] = overall(results)
    write_run(results, folder)
    _link_latest(options.out_dir, folder)
    return folder, results


def _link_latest(out_dir: Path, folder: Path) -> None:
    latest = out_dir / "latest"
    if latest.is_symlink():
        latest.unlink()
    if not latest.exists():
        os.symlink(folder.name, latest)


# -- CLI ----------------------------------------------------------------------------------------
def register(sub, bench) -> None:
    """``netpol-harness suite``: the README's main job."""
    p = sub.add_parser("suite", help="run the scenario suite (and the conformance cases), write a report "
                                     "under reports/<run-id>/ and print the summary table")
    p.add_argument("cases", nargs="*", type=Path,
                   help="conformance case files or directories (default: cases/suite and cases/conformance)")
    p.add_argument("--size", choices=("smoke", "full"), default="full",
                   help="scenario size: full (default; >= 30 runs per configuration) or smoke (the CI size)")
    p.add_argument("-k", dest="select", default=None, help="only scenario tests matching this pytest -k expression")
    p.add_argument("--no-scenarios", dest="scenarios", action="store_false", help="skip the scenarios")
    p.add_argument("--no-conformance", dest="conformance", action="store_false", help="skip the conformance cases")
    engine_options.add_arguments(p, what="every scenario configuration that does not pin it and the conformance "
                                          "cases")
    p.add_argument("--out", type=Path, default=REPO / "reports", help="report folder (default reports/)")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="short logs: one line per finished scenario configuration and per failed conformance "
                        "case, no live progress")
    p.set_defaults(func=cmd_suite)


def _case_line_printer(quiet: bool):
    """Prints each conformance case's line (``quiet``: only those that did not pass)."""
    def show(line: str) -> None:
        if not quiet or not line.lstrip().startswith("pass "):
            print(line, flush=True)
    return show


def cmd_suite(args) -> int:
    from harness.cluster.mariadb import require_mariadb
    from harness.errors import EnvironmentProblem
    from harness.lab.check import environment_problems
    from harness.report.scenario_report import summary_table

    run = RunOptions().with_enforcement(engine_options.from_args(args))
    registry.resolve(run)  # a bad flag is one line before anything runs
    problems = environment_problems()
    if problems:  # e.g. not root, or ipset missing: one line each, with the fix
        raise EnvironmentProblem("; ".join(str(p) for p in problems))
    if args.scenarios:
        require_mariadb()
    options = SuiteOptions(case_paths=args.cases or list(DEFAULT_CASES),
                           run=run,
                           out_dir=args.out, size=args.size, scenarios=args.scenarios,
                           conformance=args.conformance, select=args.select, quiet=args.quiet)
    folder, results = run_suite(options, progress=_case_line_printer(args.quiet))
    s = results["summary"]
    print()
    if results.get("scenarios"):
        print(summary_table(results, fmt="simple"))
        sr = results["scenario_run"]
        print(f"\nscenario tests: {sr['wall_s']:.0f} s, " + ", ".join(f"{k} {v}" for k, v in sorted(sr["tests"].items())))
    if results.get("conformance"):
        cs = results["conformance"]["summary"]
        print(f"conformance: {cs['cases_passed']}/{cs['cases']} cases passed, {cs['cells_checked']} cells, "
              f"{cs['mismatches']} mismatches ({results['conformance']['wall_s']:.0f} s)")
    print(f"\nverdict: {s['verdict']}  (wall time {results['wall_s']:.0f} s)")
    print(f"report: {folder / 'report.md'}\nresults: {folder / 'results.json'}")
    return 0 if s["verdict"] == "PASS" else 1
