"""``netpol-harness report RUN``: re-render ``report.md`` (and the plots) of a past run from its
results.json alone."""

from __future__ import annotations

import json
from pathlib import Path

from harness.errors import ConfigError


def register(sub, bench) -> None:
    p = sub.add_parser("report", help="re-render a run's report.md and plots from its results.json")
    p.add_argument("run", type=Path, help="a run folder (reports/<run-id>) or its results.json")
    p.add_argument("--no-plots", dest="plots", action="store_false", help="only report.md")
    p.set_defaults(func=cmd_report)


def cmd_report(args) -> int:
    path = args.run / "results.json" if args.run.is_dir() else args.run
    try:
        results = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(str(path), None, "file not found") from None
    except json.JSONDecodeError as e:
        raise ConfigError(str(path), f"line {e.lineno}", f"not valid JSON: {e.msg}") from None
    try:
        if "scenarios" in results or "conformance" in results:
            from harness.report.scenario_report import write_run

            report = write_run(results, path.parent, plots=args.plots)
            text = report.read_text()
        else:  # a conformance-only run of the earlier suite
            from harness.report.suite_report import render_markdown

            text = render_markdown(results)
            (path.parent / "report.md").write_text(text)
    except (KeyError, TypeError) as e:
        raise ConfigError(str(path), str(e), "not a netpol-harness results file (missing field)") from None
    print(text)
    return 0
