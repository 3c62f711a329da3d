"""The probe engine's CLI commands, run through their own parser (``register``)."""

from __future__ import annotations

import argparse
import json
import os

import pytest

from harness.probe import commands


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="netpol-harness")
    top = parser.add_subparsers(dest="command", required=True)
    bench = top.add_parser("bench").add_subparsers(dest="bench", required=True)
    commands.register(top, bench)
    return parser


def test_bad_arguments_are_one_line_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["calibrate", "--pairs", "full,nope"], ["calibrate", "--rate", "0"],
                 ["bench", "probe", "--rates", "1000,abc"], ["calibrate", "--transitions", "-1"]):
        with pytest.raises(SystemExit) as e:
            _parser().parse_args(argv)
        assert e.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("netpol-harness ") and "error:" in err[-1], err
        assert "Traceback" not in "".join(err)


@pytest.mark.kernel
def test_calibrate_and_bench_commands(tmp_path: os.PathLike, capsys: pytest.CaptureFixture[str]) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, raw sockets)")
    out = tmp_path / "cal.json"  # type: ignore[operator]
    args = _parser().parse_args(["calibrate", "--transitions", "5", "--pairs", "full", "--json", str(out)])
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert "allow->deny" in text and "deny->allow" in text and "kernel " in text
    data = json.loads(out.read_text())
    assert len(data[0]["transitions"]) == 10
    assert all(t["observed_ns"] is not None for t in data[0]["transitions"])

    args = _parser().parse_args(["bench", "probe", "--rates", "500", "--duration", "0.5"])
    assert args.func(args) == 0
    rows = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("TCP")]
    assert len(rows) == 1 and "100.00" in rows[0]  # answered and classified: all 250 probes
