"""The report's symptom map: "what the client saw -> mechanism -> configurations (counts)" over
the symptom rows of every scenario in a results.json (``harness.analysis.symptoms``). Pure."""

from __future__ import annotations

from typing import Any

from tabulate import tabulate

from harness.analysis.symptoms import rows_of, symptom_table


def symptom_map_lines(entries: list[dict[str, Any]]) -> list[str]:
    """The section's markdown lines (heading included), or [] when no scenario emitted rows."""
    table = symptom_table(rows_of(entries))
    if not table:
        return []
    rows = [[f"`{t['client_saw']}`", t["errno_or_code"], t["mechanism"],
             ", ".join(f"{c} ({n})" for c, n in t["configurations"].items())] for t in table]
    return ["## Symptom map", "",
            "Every first client attempt of the scenarios that emit symptom rows, grouped by what the client "
            "printed (IPs and pod names masked), its numbers (MySQL client code, then the errno or getaddrinfo "
            "code it printed) and the mechanism the configuration set up (with the DNS evidence the run saw).", "",
            tabulate(rows, headers=["what the client saw", "code / errno", "mechanism", "configurations (runs)"],
                     tablefmt="github"), ""]
