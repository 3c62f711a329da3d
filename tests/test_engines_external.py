"""The external engine's reader (issue 17 item 6) and its child environment.

Pure: every kind of malformed stdout line is a ``BadLine`` naming what was wrong. Kernel: a real
program in a node namespace prints bad lines first and a valid sync after them; the valid one
counts, the bad ones are counted and reported once, a start that only saw bad lines says so,
and the program sees only the minimal environment.
"""

from __future__ import annotations

import json
import sys
import textwrap

import pytest

from harness.controller.timeline import Timeline
from harness.engines.base import NotProgrammed
from harness.engines.config import EnforcementConfig
from harness.engines.external.engine import ExternalEngine, child_environment
from harness.engines.external.protocol import MAX_LINE, BadLine, parse_line
from harness.errors import ConfigError, EnvironmentProblem

GOOD = {"type": "sync", "start_ns": 10, "end_ns": 20, "through_seq": 3}

BAD_LINES = [
    ({**GOOD, "sync_version": "abc"}, "sync_version 'abc' is not an integer"),
    ({**GOOD, "sets_ns": 1.5}, "sets_ns 1.5 is not an integer"),
    ({**GOOD, "rules_ns": [1]}, "rules_ns [1] is not an integer"),
    ({**GOOD, "render_ns": True}, "render_ns True is not an integer"),
    ({**GOOD, "render_ns": -4}, "render_ns -4 is negative"),
    ({**GOOD, "through_seq": None}, "sync line without through_seq"),
    ({**GOOD, "start_ns": "1"}, "start_ns '1' is not an integer"),
    ({**GOOD, "timings": {"ipset_restore_time": "fast"}}, "timings.ipset_restore_time 'fast' is not a finite number"),
    ({**GOOD, "timings": [1, 2]}, "timings is not an object"),
    ({**GOOD, "end_ns": 5}, "end_ns 5 is before start_ns 10"),
    ({**GOOD, "error": 7}, "error is not a string"),
]
RAW_BAD = [
    ('{"type": "sync", "start_ns": 1, "end_ns": 2, "through_seq": 0, "timings": {"x": Infinity}}',
     "non-finite number Infinity"),
    ('{"type": "sync", "start_ns": 1, "end_ns": 2, "through_seq": 0, "timings": {"x": NaN}}', "non-finite number NaN"),
    ('{"type": "sync", "start_ns": 1, "end_ns": 2, "through_seq": 0, "sets_ns": -Infinity}',
     "non-finite number -Infinity"),
    ("[1, 2, 3]", "a JSON list, not an object"),
    ('"sync"', "a JSON str, not an object"),
    ("42", "a JSON int, not an object"),
    ("null", "a JSON NoneType, not an object"),
    ("synced everything", "not JSON"),
    ("[" * 100_000, "nested too deeply"),
    ("x" * (MAX_LINE + 1), f"line longer than {MAX_LINE} bytes"),
]


@pytest.mark.parametrize(("msg", "why"), BAD_LINES, ids=[w for _, w in BAD_LINES])
def test_bad_sync_field_is_a_bad_line_naming_it(msg, why):
    with pytest.raises(BadLine) as e:
        parse_line(json.dumps(msg))
    assert str(e.value) == why


@pytest.mark.parametrize(("line", "why"), RAW_BAD, ids=[w for _, w in RAW_BAD])
def test_malformed_line_is_a_bad_line(line, why):
    with pytest.raises(BadLine) as e:
        parse_line(line)
    assert str(e.value).startswith(why)
    assert len(str(e.value)) < 300  # bounded: never the whole line


def test_valid_lines():
    s = parse_line(json.dumps({**GOOD, "sync_version": 7, "sets_ns": 12, "rules_ns": 15.0, "render_ns": 2,
                               "timings": {"ipset_restore_time": 3.0}, "reason": "events"}))
    assert (s.start_ns, s.end_ns, s.through_seq, s.sync_version, s.sets_ns, s.rules_ns) == (10, 20, 3, 7, 12, 15)
    assert s.timings == {"ipset_restore_time": 3} and s.reason == "events" and s.error is None
    assert parse_line('{"type": "log", "text": "hello"}') is None  # another object: only logged


def test_child_environment_is_minimal():
    cfg = EnforcementConfig(engine="external", backend="legacy", external_cmd=("prog",))
    env = child_environment("node-a", "nph-x-node-a", cfg, {"PATH": "/usr/bin", "SECRET_TOKEN": "s", "HOME": "/root"})
    assert set(env) == {"PATH", "PYTHONPATH", "LANG", "NPH_NODE", "NPH_NETNS", "NPH_ENGINE", "NPH_BACKEND",
                        "NPH_PROFILE", "NPH_STRATEGY"}
    assert env["PATH"].split(":")[-1] == "/usr/bin" and env["LANG"] == "C.UTF-8"
    assert env["NPH_BACKEND"] == "legacy" and env["NPH_NODE"] == "node-a"
    assert env["PATH"].split(":")[0] == sys.prefix + "/bin" or env["PATH"].startswith(sys.executable.rsplit("/", 1)[0])


def test_external_engine_needs_a_command():
    with pytest.raises(ConfigError, match="external_cmd: the external engine needs a command"):
        ExternalEngine().validate(EnforcementConfig(engine="external"))


# -- a real program in a node namespace -------------------------------------------------------------
PROGRAM = textwrap.dedent("""
    import json, os, sys, time
    bad = json.load(open(sys.argv[1]))
    snapshot = json.loads(sys.stdin.readline())
    for line in bad:
        print(line, flush=True)
    if sys.argv[2] == "sync":
        t = time.time_ns()
        print(json.dumps({"type": "sync", "start_ns": t, "end_ns": t + 1000, "through_seq": snapshot["seq"],
                          "reason": ",".join(sorted(os.environ))}), flush=True)
    sys.stdin.read()
""")


@pytest.fixture
def node_netns():
    from harness.kernel.backends import require_tools

    try:
        require_tools("nft")
    except EnvironmentProblem as e:
        pytest.skip(str(e))
    from harness.lab import Lab
    from harness.model.topology import load_topology

    with Lab(load_topology("default"), servers=False) as lab:
        yield lab, lab.node_netns("node-a")


def external_node(lab, netns_name: str, bad: list[str], then: str, tmp_path):
    lines = tmp_path / "bad-lines.json"
    lines.write_text(json.dumps(bad))
    cfg = EnforcementConfig(engine="external", external_cmd=(sys.executable, "-c", PROGRAM, str(lines), then))
    timeline = Timeline()
    ne = ExternalEngine().node("node-a", netns_name, cfg, timeline)
    ne.start(lab.cluster)
    return ne, timeline


@pytest.mark.kernel
def test_bad_lines_are_counted_and_the_next_valid_sync_counts(node_netns, tmp_path):
    lab, ns = node_netns
    bad = [json.dumps(m) for m, _ in BAD_LINES] + [line for line, _ in RAW_BAD] + ["y" * (3 * MAX_LINE)]
    ne, timeline = external_node(lab, ns, bad, "sync", tmp_path)
    try:
        rec = ne.wait_initial(20)
    finally:
        ne.stop()
    assert rec.ok and rec.through_seq == 0
    assert ne.bad_lines == len(bad)
    assert ne.errors[0].startswith("external controller node-a: malformed stdout line 1: "
                                   "sync_version 'abc' is not an integer: ")
    assert ne.errors[-1] == f"external controller node-a: {len(bad)} malformed stdout lines in all"
    assert all(len(e) < 600 for e in ne.errors)  # excerpts, not the lines
    # the program saw only the minimal environment
    assert rec.reasons[0].split(",") == sorted(["LANG", "NPH_BACKEND", "NPH_ENGINE", "NPH_NETNS", "NPH_NODE",
                                                "NPH_PROFILE", "NPH_STRATEGY", "PATH", "PYTHONPATH"])


@pytest.mark.kernel
def test_start_with_only_a_bad_line_says_what_was_wrong(node_netns, tmp_path):
    lab, ns = node_netns
    ne, _ = external_node(lab, ns, [json.dumps({**GOOD, "through_seq": 0, "rules_ns": "late"})], "none", tmp_path)
    try:
        with pytest.raises(NotProgrammed) as e:
            ne.wait_initial(2)
    finally:
        ne.stop()
    msg = str(e.value)
    assert "no valid sync line (its first sync) within 2 s; 1 malformed stdout line(s)" in msg
    assert "rules_ns 'late' is not an integer" in msg
