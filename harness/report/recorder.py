"""Collects scenario results during a pytest session (the ``scenario_recorder`` fixture of
``cases/scenarios/conftest.py``) and writes them: the entries as JSON for the suite, or a whole
run folder (results.json, report.md, plots) on its own."""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.scenarios.declaration import get as declared_scenario


def new_run_id() -> str:
    return dt.datetime.now().strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)


class ScenarioRecorder:
    """``record(...)`` one configuration's observations; ``entries`` is what results.json's
    ``scenarios`` holds."""

    def __init__(self, mode: str = "smoke"):
        self.mode = mode
        self.entries: list[dict[str, Any]] = []
        # called with each recorded entry (the main job's progress line shows its verdict)
        self.listeners: list[Callable[[dict[str, Any]], None]] = []
        self.started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        self.t0 = time.monotonic()

    def record(self, scenario: str, config: str, params: dict[str, Any], observations: list[dict[str, Any]] | dict,
               *, expectation: str, runtime_s: float, check=None, **extra: Any) -> dict[str, Any]:
        """Summarize by the declared scenario ``scenario`` (``harness.scenarios.timed``), judge
        with ``check(summary) -> bool`` (None: informational) and keep the entry; returns it.
        A scenario that runs once passes its one observation dict."""
        obs = observations if isinstance(observations, list) else [observations]
        summary = declared_scenario(scenario).summarize(obs)
        verdict = "info" if check is None else ("pass" if check(summary) else "fail")
        entry = {"scenario": scenario, "config": config, "params": params, "expectation": expectation,
                 "verdict": verdict, "summary": summary, "observations": obs, "runtime_s": runtime_s,
                 "mode": self.mode, **extra}
        self.entries.append(entry)
        for listener in self.listeners:
            listener(entry)
        return entry

    def dump(self, path: str | Path) -> None:
        """The entries as JSON (the suite merges them into its results.json)."""
        tmp = f"{path}.tmp"
        with open(tmp, "w") as f:
            json.dump({"mode": self.mode, "started": self.started, "wall_s": time.monotonic() - self.t0,
                       "scenarios": self.entries}, f, default=str)
        os.replace(tmp, path)

    def write_report(self, out_dir: str | Path) -> Path:
        """A complete run folder ``out_dir/<run-id>/`` from these entries alone."""
        from harness.report.machine import machine_info, tool_version
        from harness.report.scenario_report import overall, write_run

        results: dict[str, Any] = {"run_id": new_run_id(), "started": self.started, "mode": self.mode,
                                   "wall_s": time.monotonic() - self.t0, "machine": machine_info(),
                                   "mariadb": tool_version("mariadb"), "scenarios": self.entries}
        results["summary"] = overall(results)
        return write_run(results, Path(out_dir) / results["run_id"])
