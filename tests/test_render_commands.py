"""The render CLI module, driven through its own register() as the lead's cli.py will."""

from __future__ import annotations

import argparse
import json

import pytest

from harness.engines.kube_router.render import commands
from harness.errors import ConfigError


def _run(argv):
    p = argparse.ArgumentParser(prog="netpol-harness")
    sub = p.add_subparsers(dest="command")
    bench = sub.add_parser("bench").add_subparsers(dest="bench")
    commands.register(sub, bench)
    args = p.parse_args(argv)
    return args.func(args)


def test_render_example_prints_the_dump(capsys):
    assert _run(["render", "example", "--node", "node-a", "--profile", "v1.3", "--sync-version", "5"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# kube-router v1.3.1 ruleset for node node-a, sync version 5\n")
    assert out.rstrip().endswith("COMMIT") and "-A KUBE-POD-FW-" in out


def test_render_synthetic_spec_and_bad_spec(capsys):
    assert _run(["render", "synthetic:3x4x5", "--node", "node-001", "--sync-version", "1"]) == 0
    assert capsys.readouterr().out.count(":KUBE-POD-FW-") == 4
    with pytest.raises(ConfigError):
        _run(["render", "synthetic:999x1x1"])


def test_bench_render_quick_json(capsys):
    assert _run(["bench", "render", "--quick", "--repeat", "1", "--json", "--profile", "v2.6"]) == 0
    data = json.loads(capsys.readouterr().out)
    (row,) = data["rows"]
    assert row["profile"] == "v2.6" and row["pods"] == 500 and row["rules"] > 0 and row["set_entries"] > 0
