"""What a person watching the main job sees while it runs: the scenario and configuration under
way, run i of N, elapsed and ETA, and one status line per finished configuration.

``SuiteProgress`` is the pure part (state, ETA, the lines; tested without a terminal, with a
fake clock). ``LiveDisplay`` draws it as a live bar (rich) on a terminal; ``PlainDisplay``
writes plain one-line updates where stdout is not a terminal (CI logs), at most one run
update per ``every_s`` per configuration; ``quiet`` keeps only the finished-configuration
lines. ``harness.scenarios.progress`` feeds them from pytest.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TextIO


def duration(seconds: float | None) -> str:
    """``42s``, ``3m05s``, ``1h02m``; ``?`` when unknown."""
    if seconds is None:
        return "?"
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def eta(done: int, total: int, elapsed_s: float) -> float | None:
    """Seconds left if the remaining ``total - done`` items take as long as the done ones did
    on average; None before the first is done."""
    if done <= 0 or total <= 0:
        return None
    return max(0.0, elapsed_s / done * (total - done))


def parse_nodeid(nodeid: str) -> tuple[str, str]:
    """``(scenario, configuration)`` of a scenario test id:
    ``cases/scenarios/test_job_to_mysql.py::test_job_to_mysql[none]`` -> ``("job-to-mysql", "none")``
    (the module is named after the scenario, the parameter id is the configuration)."""
    path, _, name = nodeid.partition("::")
    module = path.rsplit("/", 1)[-1].removesuffix(".py").removeprefix("test_")
    config = name[name.index("[") + 1:-1] if name.endswith("]") and "[" in name else ""
    return module.replace("_", "-"), config


@dataclass
class Current:
    """The configuration under way."""

    nodeid: str
    scenario: str
    config: str
    started: float
    done: int = 0
    total: int = 0
    unit: str = "run"


class SuiteProgress:
    """The main job's progress: ``start(nodeid)`` a test, ``runs(done, total)`` inside it,
    ``finish(...)`` it; ``status()`` is the live line, ``finish`` returns the finished line."""

    def __init__(self, total_tests: int = 0, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.total = total_tests
        self.started = clock()
        self.finished = 0
        self.durations: list[float] = []
        self.current: Current | None = None

    def start(self, nodeid: str) -> Current:
        scenario, config = parse_nodeid(nodeid)
        self.current = Current(nodeid, scenario, config, self.clock())
        return self.current

    def runs(self, done: int, total: int, unit: str = "run") -> None:
        if self.current is not None:
            self.current.done, self.current.total, self.current.unit = done, total, unit

    def config_eta(self, now: float | None = None) -> float | None:
        """Seconds left in the configuration under way (from its runs so far, else from the
        finished configurations' mean duration)."""
        c = self.current
        if c is None:
            return None
        now = self.clock() if now is None else now
        left = eta(c.done, c.total, now - c.started)
        if left is None and self.durations:
            left = max(0.0, sum(self.durations) / len(self.durations) - (now - c.started))
        return left

    def suite_eta(self, now: float | None = None) -> float | None:
        """Seconds left in the whole scenario run: the configuration under way, then every test
        not started at the finished ones' mean duration (a rough figure: the ETA says ``~``)."""
        now = self.clock() if now is None else now
        waiting = self.total - self.finished - (1 if self.current else 0)
        mean = sum(self.durations) / len(self.durations) if self.durations else None
        current = self.config_eta(now) if self.current else 0.0
        if current is None or (waiting > 0 and mean is None):
            return None
        return current + max(0, waiting) * (mean or 0.0)

    def fraction(self) -> float:
        """0..1 of the tests, the one under way counted by its runs."""
        if self.total <= 0:
            return 0.0
        part = 0.0
        c = self.current
        if c is not None and c.total:
            part = min(1.0, c.done / c.total)
        return min(1.0, (self.finished + part) / self.total)

    def status(self, now: float | None = None) -> str:
        """The live line: ``job-to-mysql none · run 2/3 · 0:05, ETA 3s · suite 3/12, 1m23s, ETA ~4m10s``."""
        now = self.clock() if now is None else now
        parts = []
        c = self.current
        if c is not None:
            head = f"{c.scenario} {c.config}".strip()
            if c.total:
                head += f" · {c.unit} {min(c.done + 1, c.total)}/{c.total}"
            head += f" · {duration(now - c.started)}, ETA {duration(self.config_eta(now))}"
            parts.append(head)
        parts.append(f"suite {min(self.finished + (1 if c else 0), self.total)}/{self.total}, "
                     f"{duration(now - self.started)}, ETA ~{duration(self.suite_eta(now))}")
        return " · ".join(parts)

    def finish(self, outcome: str, entry: dict[str, Any] | None = None, reason: str = "") -> str:
        """End the test under way; the one-line status of the finished configuration."""
        c = self.current
        now = self.clock()
        took = now - c.started if c else 0.0
        self.durations.append(took)
        self.finished += 1
        self.current = None
        return finished_line(self.finished, self.total, c.scenario if c else "?", c.config if c else "",
                             outcome, took, entry, reason)


def finished_line(index: int, total: int, scenario: str, config: str, outcome: str, took_s: float,
                  entry: dict[str, Any] | None = None, reason: str = "") -> str:
    """``[ 3/12] PASS   job-to-mysql none: 3 runs, p50 351.0 ms, 3/3 first attempt failed (12s)``:
    the recorded verdict and summary when the test recorded one, pytest's outcome otherwise
    (and next to a verdict when the test itself did not pass)."""
    width = len(str(total))
    word = (entry or {}).get("verdict", "").upper() or {"passed": "PASS", "failed": "FAIL", "skipped": "SKIP",
                                                          "error": "ERROR"}.get(outcome, outcome.upper())
    name = f"{scenario} {config}".strip()
    line = f"[{index:>{width}}/{total}] {word:<5} {name}"
    if entry:
        s = entry.get("summary") or {}
        st = s.get("stats") or {}
        facts = [f"{s.get('runs')} {_unit(s)}"]
        if st.get("p50") is not None:
            facts.append(f"{s.get('metric')} p50 {st['p50']:.1f} ms")
        facts.append(f"{s.get('failures')}/{s.get('runs')} {s.get('failure_label')}")
        line += ": " + ", ".join(facts)
    if entry and outcome != "passed":  # the verdict is the entry's; say the test's own outcome too
        line += f" [test {outcome}]"
    if reason:
        line += f" — {reason}"
    return f"{line} ({duration(took_s)})"


def _unit(summary: dict[str, Any]) -> str:
    # the failure counts' denominator: runs, or probes/connections for the run-once scenarios
    label = summary.get("failure_label", "")
    return "probes" if "probes" in label else "connections" if "connections" in label else "runs"


class RunCounter:
    """What a scenario test reports: ``for i in counter.runs(n)`` (run i+1 of n is under way),
    or ``counter.callback("update")`` for a scenario that loops itself. Without a display (a
    plain pytest run) it does nothing."""

    def __init__(self, sink: Callable[[int, int, str], None] | None = None):
        self.sink = sink

    def __call__(self, done: int, total: int, unit: str = "run") -> None:
        if self.sink is not None:
            self.sink(done, total, unit)

    def runs(self, total: int, unit: str = "run") -> Iterator[int]:
        for i in range(total):
            self(i, total, unit)
            yield i
        self(total, total, unit)

    def callback(self, unit: str) -> Callable[[int, int], None]:
        return lambda done, total: self(done, total, unit)


class PlainDisplay:
    """Plain lines to ``stream``: the finished configurations, and unless ``quiet`` a run
    update at most every ``every_s`` seconds per configuration."""

    def __init__(self, progress: SuiteProgress, stream: TextIO, *, quiet: bool = False, every_s: float = 30.0):
        self.progress, self.stream, self.quiet, self.every_s = progress, stream, quiet, every_s
        self._last: float | None = None

    def start(self) -> None:
        pass

    def stop(self) -> None:
        self.stream.flush()

    def test_started(self) -> None:
        self._last = self.progress.clock()

    def runs_changed(self) -> None:
        now = self.progress.clock()
        if self.quiet or (self._last is not None and now - self._last < self.every_s):
            return
        self._last = now
        self.line(self.progress.status(now))

    def line(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()


class LiveDisplay:
    """A live bar and status line on a terminal (rich), the finished lines printed above it.
    Refreshes twice a second from its own thread: the scenarios time the kernel to the
    millisecond in this process, so the display stays cheap (measured: ~0.2 ms per refresh)
    and never redirects stdout."""

    def __init__(self, progress: SuiteProgress, stream: TextIO):
        from rich.console import Console

        self.progress = progress
        self.console = Console(file=stream, highlight=False)
        self._live: Any = None

    def __rich__(self) -> Any:
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.text import Text

        p = self.progress
        width = max(10, min(40, self.console.width // 3))
        return Group(ProgressBar(total=1.0, completed=p.fraction(), width=width), Text(p.status()))

    def start(self) -> None:
        from rich.live import Live

        self._live = Live(self, console=self.console, refresh_per_second=2, transient=True,
                          redirect_stdout=False, redirect_stderr=False)
        self._live.start()

    def stop(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def test_started(self) -> None:
        pass

    def runs_changed(self) -> None:
        pass  # the refresh thread redraws the status

    def line(self, text: str) -> None:
        # printed above the live lines (rich's Live serializes it with its refresh); soft wrap:
        # one line in the scrollback and in a copied log, whatever the width
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)
