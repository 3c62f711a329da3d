"""The main job: run the scenario suite and write a report under ``reports/<run-id>/``.

The suite is a list of case files (``cases/suite/`` on the default topology, then the
conformance cases on the e2e model); each runs in its own lab through the conformance runner.
The result is ``results.json`` plus ``report.md`` rendered from it (``harness.report``).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.conformance.case import load_case
from harness.conformance.runner import CaseResult, RunOptions, StepResult, run_case
from harness.report.machine import machine_info
from harness.report.suite_report import render_markdown

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CASES = (REPO / "cases" / "suite", REPO / "cases" / "conformance")


@dataclass
class SuiteOptions:
    case_paths: list[Path] = field(default_factory=lambda: list(DEFAULT_CASES))
    run: RunOptions = field(default_factory=RunOptions)
    out_dir: Path = REPO / "reports"


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
        "syncs": [{"node": s.node, "render_ns": s.render_ns, "timings": s.timings.as_dict()}
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
        "lab_up_ns": result.lab_up_ns,
        "lab_down_ns": result.lab_down_ns,
        "total_ns": result.total_ns,
        "steps": [step_json(s) for s in result.steps],
    }


def run_suite(options: SuiteOptions, *, progress=None) -> tuple[Path, dict[str, Any]]:
    """Run every case, write ``results.json`` and ``report.md`` into a new run folder and
    return (folder, results). ``progress(text)`` is called after each case."""
    files = case_files(options.case_paths)
    cases = [load_case(str(f)) for f in files]  # validate every file before any kernel work
    run_id = dt.datetime.now().strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    t0 = time.monotonic()
    results: dict[str, Any] = {
        "run_id": run_id, "started": started, "machine": machine_info(),
        "options": {"backend": options.run.backend, "profile": options.run.profile,
                    "strategy": options.run.strategy, "timeout": options.run.timeout,
                    "cases": [str(f) for f in files]},
        "cases": [],
    }
    for path, case in zip(files, cases, strict=True):
        result = run_case(case, options.run)
        entry = case_json(path, str(case.topology), result)
        results["cases"].append(entry)
        if progress:
            progress(f"{entry['verdict']:>5}  {entry['file']}  ({result.total_ns / 1e9:.1f} s, "
                     f"{entry['mismatches']} mismatches)")
    cases_json = results["cases"]
    passed = sum(1 for c in cases_json if c["verdict"] == "pass")
    results["wall_s"] = time.monotonic() - t0
    results["summary"] = {
        "cases": len(cases_json), "cases_passed": passed,
        "cells_checked": sum(s["cells_checked"] for c in cases_json for s in c["steps"]),
        "mismatches": sum(c["mismatches"] for c in cases_json),
        "verdict": "PASS" if passed == len(cases_json) else "FAIL",
    }
    folder = write_report(results, options.out_dir)
    return folder, results


def write_report(results: dict[str, Any], out_dir: Path) -> Path:
    """Write ``results.json`` and ``report.md`` into ``out_dir/<run_id>/``; return the folder."""
    folder = out_dir / results["run_id"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    (folder / "report.md").write_text(render_markdown(results))
    latest = out_dir / "latest"
    if latest.is_symlink() or not latest.exists():
        if latest.is_symlink():
            latest.unlink()
        os.symlink(folder.name, latest)
    return folder


# -- CLI ----------------------------------------------------------------------------------------
def register(sub, bench) -> None:
    """``netpol-harness suite``: the README's main job."""
    p = sub.add_parser("suite", help="run the scenario suite and write a report under reports/<run-id>/")
    p.add_argument("cases", nargs="*", type=Path,
                   help="case files or directories (default: cases/suite and cases/conformance)")
    p.add_argument("--backend", choices=("nft", "legacy"), default="nft", help="iptables backend (default nft)")
    p.add_argument("--profile", default="v2.10", help="kube-router version profile (default v2.10)")
    p.add_argument("--strategy", choices=("restore", "per-rule", "netlink"), default="restore",
                   help="apply strategy (default restore: kube-router's full sync)")
    p.add_argument("--out", type=Path, default=REPO / "reports", help="report folder (default reports/)")
    p.set_defaults(func=cmd_suite)


def cmd_suite(args) -> int:
    from harness.errors import EnvironmentProblem
    from harness.lab.check import environment_problems

    problems = environment_problems()
    if problems:  # e.g. not root, or ipset missing: one line each, with the fix
        raise EnvironmentProblem("; ".join(str(p) for p in problems))
    options = SuiteOptions(case_paths=args.cases or list(DEFAULT_CASES),
                           run=RunOptions(backend=args.backend, profile=args.profile, strategy=args.strategy),
                           out_dir=args.out)
    folder, results = run_suite(options, progress=lambda line: print(line, flush=True))
    print()
    print((folder / "report.md").read_text())
    print(f"report: {folder / 'report.md'}\nresults: {folder / 'results.json'}")
    return 0 if results["summary"]["verdict"] == "PASS" else 1
