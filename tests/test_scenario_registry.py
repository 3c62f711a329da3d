"""Scenario declarations (harness.scenarios.declaration): found once, by name, in report order;
rendering a report imports nothing of the kernel. Pure: no root."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from harness.errors import HarnessError
from harness.scenarios import declaration
from harness.scenarios.declaration import declared, get

SHIPPED = ["job-to-mysql", "fail-open", "ipset-update-window", "established-survives-sync",
           "policy-creation-latency", "client-path", "service-nat"]


def test_the_shipped_scenarios_are_declared_in_report_order():
    scenarios = declared()
    assert [s.name for s in scenarios] == SHIPPED
    assert [s.name for s in scenarios if s.cdf] == ["job-to-mysql", "fail-open", "policy-creation-latency"]
    for s in scenarios:
        assert s.what and s.metric and s.failure_label and callable(s.summarize) and callable(s.section)
    assert get("fail-open").metric == "fail_open_window"


def test_an_undeclared_name_is_one_line_naming_the_declared_ones():
    with pytest.raises(HarnessError, match=r"scenario 'nope' is not declared \(declared: job-to-mysql, fail-open"):
        get("nope")
    assert declaration.find("nope") is None


@pytest.fixture
def timed_package(tmp_path, monkeypatch):
    """An empty package of timed scenarios on sys.path in place of harness.scenarios.timed."""
    pkg = tmp_path / "nph_test_timed"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(declaration, "TIMED_PACKAGE", "nph_test_timed")
    declaration.declared.cache_clear()
    yield pkg
    declaration.declared.cache_clear()
    for name in [m for m in sys.modules if m.startswith("nph_test_timed")]:
        del sys.modules[name]


NEW_SCENARIO = '''
from harness.scenarios.declaration import Scenario


def summarize(observations):
    return SCENARIO.head([o["ms"] for o in observations], sum(1 for o in observations if o["bad"]),
                         len(observations))


def section(entries):
    return [f"- {e['config']}: {e['summary']['failures']} bad" for e in entries]


SCENARIO = Scenario(name="{name}", order={order}, what="What {name} shows.", metric="x_latency",
                    failure_label="bad runs", summarize=summarize, section=section, cdf=True)
'''


def test_a_new_scenario_module_is_all_the_recorder_and_the_report_need(timed_package, tmp_path):
    from harness.report.recorder import ScenarioRecorder
    from harness.report.scenario_report import overall, render_markdown, summary_rows, write_run

    (timed_package / "late.py").write_text(NEW_SCENARIO.replace("{name}", "late").replace("{order}", "20"))
    (timed_package / "early.py").write_text(NEW_SCENARIO.replace("{name}", "early").replace("{order}", "10"))
    (timed_package / "helpers.py").write_text("X = 1\n")  # a module without SCENARIO is no scenario
    rec = ScenarioRecorder("smoke")
    rec.record("late", "a", {}, [{"ms": 3.0, "bad": True}, {"ms": 5.0, "bad": False}], expectation="none bad",
               check=lambda s: s["failures"] == 0, runtime_s=1.0)
    rec.record("early", "b", {}, [{"ms": 1.0, "bad": False}], expectation="none bad",
               check=lambda s: s["failures"] == 0, runtime_s=1.0)
    results = {"run_id": "r", "scenarios": rec.entries, "machine": {}}
    results["summary"] = overall(results)
    assert [r[:4] for r in summary_rows(results)] == [["early", "b", "PASS", "x_latency"],
                                                      ["late", "a", "FAIL", "x_latency"]]
    md = render_markdown(results)
    assert md.index("## early") < md.index("## late")
    assert "What late shows." in md and "- a: 1 bad" in md and "1/2 bad runs" in md
    write_run(results, tmp_path / "run")
    assert (tmp_path / "run" / "cdf-late.png").read_bytes()[:4] == b"\x89PNG"


def test_two_modules_declaring_one_name_are_refused(timed_package):
    for module in ("one", "two"):
        (timed_package / f"{module}.py").write_text(NEW_SCENARIO.replace("{name}", "same").replace("{order}", "1"))
    with pytest.raises(HarnessError, match="nph_test_timed.two: scenario name 'same' is already declared by "
                                           "nph_test_timed.one"):
        declared()


def test_rendering_a_report_imports_nothing_of_the_kernel():
    """The report imports every declaration; neither they nor the report may pull in the lab,
    the kernel, an engine implementation, the controller, probes or the scenarios' run code."""
    code = textwrap.dedent("""
        import gzip, json, sys
        from pathlib import Path
        from harness.report.scenario_report import render_markdown
        from harness.report.recorder import ScenarioRecorder
        doc = json.load(gzip.open(Path("tests/golden/report/smoke-results.json.gz"), "rt"))
        render_markdown(doc)
        from harness.scenarios.declaration import get
        for e in doc["scenarios"]:
            get(e["scenario"]).summarize(e["observations"])
        # harness.engines.config/registry are pure data (defaults, lazy factories): allowed
        banned = ("harness.kernel", "harness.lab", "harness.engines.kube_router", "harness.engines.external",
                  "harness.engines.base", "harness.controller", "harness.probe",
                  "harness.scenarios.job", "harness.scenarios.windows", "harness.scenarios.mysql", "pyroute2",
                  "scapy", "pymysql", "docker")
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("harness", "pyroute2", "scapy", "pymysql", "docker")
                     and any(m == b or m.startswith(b + ".") for b in banned)))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=declaration.__file__.rsplit("/harness/", 1)[0])
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
