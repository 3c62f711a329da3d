"""Per-scenario summaries of observations (the dicts ``harness.scenarios`` returns): the head
every summary starts with. Pure: what goes into results.json and the report.

Every summary has the same head, so the report can put all scenarios in one table:
``metric`` (name of the latency it summarizes, ms), ``samples``, ``stats`` (``stats.Summary``
dict), ``failures`` / ``runs`` (what counts as a failure is the scenario's: a failed first
attempt, a fail-open window, a refused probe, a reset), ``failure_label``, then the
scenario's extras. Each scenario's own summarizer sits next to its declaration in
``harness/scenarios/timed/<name>.py`` (``harness.scenarios.declaration.get(name).summarize``).
"""

from __future__ import annotations

from typing import Any

from harness.analysis.stats import summarize


def summary_head(metric: str, samples: list[float | None], failures: int, runs: int, label: str) -> dict[str, Any]:
    """The common head of a scenario summary (see the module docstring)."""
    return {"metric": metric, "samples": samples, "stats": summarize(samples).as_dict(),
            "failures": failures, "runs": runs, "failure_label": label}
