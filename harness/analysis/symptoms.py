"""The symptom map (issue 12 items 5-6): "what the client saw -> mechanism -> configurations
(counts)", built from rows any scenario emits (pure).

A row is one observed client failure (or success) of one run::

    {"client_saw": "Unknown server host 'mysql.db' (-3)",   # the client's verbatim error, minus run-specific parts
     "errno_or_code": "2005 EAI_AGAIN",                    # the client's numeric code + errno/EAI name
     "mechanism": "DNS query rejected: egress not yet programmed (--netpol-default-deny)",
     "configuration": "client-path/egress-default-deny"}

A scenario puts its rows in its summary under ``SYMPTOM_ROWS`` (``"symptom_rows"``); ``rows_of``
collects them from every results.json entry whatever its scenario (the client-path scenario's
DNS/TLS/abort mechanisms, the Service scenario's NAT/endpoint mechanisms), so one table shows
every measured mechanism.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from typing import Any

SYMPTOM_ROWS = "symptom_rows"  # the summary key a scenario's rows live under
FIELDS = ("client_saw", "errno_or_code", "mechanism", "configuration")

# parts of a client's message that differ per run (addresses, ports, pod names, durations)
_VARIABLE = (
    (re.compile(r"'\d{1,3}(?:\.\d{1,3}){3}'"), "'<ip>'"),
    (re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}\b"), "<ip>"),
    (re.compile(r"job-\d+"), "job-<i>"),
)


def client_saw(message: str) -> str:
    """A client's verbatim error with what differs per run (IPs, job pod names) masked, so the
    same symptom of different runs is one line of the table."""
    out = message.strip()
    for pat, repl in _VARIABLE:
        out = pat.sub(repl, out)
    return out


def row(client_message: str, code: int | None, errno: str | None, mechanism: str, configuration: str,
        ) -> dict[str, str]:
    """One symptom row; ``errno_or_code`` is ``"<code> <errno>"`` with the missing part left out
    (``"ok"`` for a success: code and errno both None and no message)."""
    num = " ".join(str(x) for x in (code, errno) if x is not None) or ("ok" if not client_message else "-")
    return {"client_saw": client_saw(client_message) or "ok", "errno_or_code": num, "mechanism": mechanism,
            "configuration": configuration}


def check_row(r: Any) -> dict[str, str]:
    """``r`` if it is a well-formed row (a dict with the four string fields), else ValueError naming
    what is missing: a scenario emitting a bad row is a bug in that scenario."""
    if not isinstance(r, dict):
        raise ValueError(f"symptom row {r!r} is not a mapping")
    missing = [f for f in FIELDS if not isinstance(r.get(f), str) or not r.get(f)]
    if missing:
        raise ValueError(f"symptom row {r!r}: missing or empty {', '.join(missing)}")
    return r


def rows_of(entries: Iterable[dict[str, Any]]) -> list[dict[str, str]]:
    """Every symptom row of every results.json entry (any scenario) that has them."""
    out: list[dict[str, str]] = []
    for e in entries:
        for r in (e.get("summary") or {}).get(SYMPTOM_ROWS) or ():
            out.append(check_row(r))
    return out


def symptom_table(rows: Iterable[dict[str, str]]) -> list[dict[str, Any]]:
    """One line per (what the client saw, its numbers, mechanism): the configurations that
    produced it with their counts and the total. Sorted by symptom, then by total (desc)."""
    groups: dict[tuple[str, str, str], Counter[str]] = {}
    for r in rows:
        r = check_row(r)
        key = (r["client_saw"], r["errno_or_code"], r["mechanism"])
        groups.setdefault(key, Counter())[r["configuration"]] += 1
    lines = [{"client_saw": k[0], "errno_or_code": k[1], "mechanism": k[2],
              "configurations": dict(sorted(c.items())), "count": sum(c.values())}
             for k, c in groups.items()]
    return sorted(lines, key=lambda x: (x["errno_or_code"] == "ok", x["client_saw"], -x["count"], x["mechanism"]))

