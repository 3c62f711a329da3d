"""The CLI's input checks, in process and without root: numeric option types, one-line parser
errors, the catch-all for unexpected exceptions, run ids, empty case sets, ``--docker``
selectors, and the signal module's one-teardown rule."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal

import pytest

from harness import cli, signals
from harness.argtypes import float_in, int_in, non_negative_int, positive_float, positive_int
from harness.errors import HarnessError
from harness.lab import state

# -- numeric option types ---------------------------------------------------------------------


@pytest.mark.parametrize("parse, text", [
    (positive_int, "0"), (positive_int, "-5"), (positive_int, "1.5"), (positive_int, "x"),
    (positive_int, "10000000000"), (non_negative_int, "-1"), (positive_float, "0"), (positive_float, "-1"),
    (positive_float, "nan"), (positive_float, "inf"), (positive_float, "1e400"), (float_in(0.0), "-0.1"),
])
def test_numeric_types_refuse(parse, text):
    with pytest.raises(argparse.ArgumentTypeError):
        parse(text)


def test_numeric_types_accept():
    assert positive_int("3") == 3 and non_negative_int("0") == 0
    assert positive_float("0.5") == 0.5 and float_in(0.0)("0") == 0.0
    assert int_in(0, 2**63 - 1)("1700000000000000000") == 1700000000000000000


@pytest.mark.parametrize("argv, needle", [
    (["bench", "lab", "--full", "-5"], "argument --full: -5 is not between 0 and 1000000"),
    (["bench", "lab", "--nodes", "0"], "argument --nodes: 0 is not between 1 and 1000000"),
    (["bench", "lab", "--light", "-1"], "argument --light: -1 is not between 0 and 1000000"),
    (["conformance", "--timeout", "-1", "x.yaml"], "argument --timeout: -1 is not a number > 0"),
    (["controller", "--interval", "-1"], "argument --interval: -1 is not a number >= 0"),
    (["bench", "sweep", "--budget", "inf"], "argument --budget: inf is not a number > 0"),
    (["bench", "docker", "--pods", "0"], "argument --pods: 0 is not between 1"),
    (["bench", "probe", "--duration", "0"], "argument --duration: 0 is not a number > 0"),
    (["nosuch"], "invalid choice: 'nosuch'"),
])
def test_bad_arguments_are_one_line(capsys, argv, needle):
    with pytest.raises(SystemExit) as excinfo:
        cli.main(argv)
    assert excinfo.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err, err


# -- the catch-all ----------------------------------------------------------------------------


def test_unexpected_exception_is_one_line_exit_1(capsys, monkeypatch):
    import harness.lab.commands as lab_commands

    def boom(args):
        raise ZeroDivisionError("division by zero\nsecond line")

    monkeypatch.setattr(lab_commands, "cmd_check", boom)
    assert cli.main(["check"]) == 1
    err = capsys.readouterr().err
    assert err == ("netpol-harness: error: ZeroDivisionError: division by zero second line "
                   "(run with --debug for the traceback)\n")


def test_debug_shows_the_traceback(monkeypatch):
    import harness.lab.commands as lab_commands

    monkeypatch.setattr(lab_commands, "cmd_check", lambda args: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        cli.main(["--debug", "check"])


def test_permission_error_is_exit_4_with_a_hint(capsys, monkeypatch):
    import harness.lab.state as st

    def denied(**kw):
        raise PermissionError(13, "Permission denied", "/run/netpol-harness/abc123")

    monkeypatch.setattr(st, "gc", denied)
    assert cli.main(["gc"]) == 4
    err = capsys.readouterr().err
    assert err.startswith("netpol-harness: error: Permission denied: /run/netpol-harness/abc123 (run as root")
    assert err.count("\n") == 1


def test_long_error_is_cut(capsys, monkeypatch):
    import harness.lab.commands as lab_commands

    def boom(args):
        raise HarnessError("x" * 10_000_000)

    monkeypatch.setattr(lab_commands, "cmd_check", boom)
    assert cli.main(["check"]) == 2
    err = capsys.readouterr().err
    assert len(err) <= 600 and err.endswith("...\n")


# -- run ids ----------------------------------------------------------------------------------


@pytest.mark.parametrize("rid", ["../../x", "/etc", "", "ABCDEF", "abc12", "abc1234", "abc12/", None, 123])
def test_check_run_id_refuses(rid):
    with pytest.raises(HarnessError, match="is not a run id"):
        state.check_run_id(rid)


@pytest.mark.parametrize("argv", [["down", "../../victim"], ["exec", "--run", "../../victim", "a/b", "--", "true"]])
def test_down_and_exec_refuse_a_path_as_run(capsys, argv):
    assert cli.main(argv) == 2
    assert "is not a run id" in capsys.readouterr().err


def test_crafted_record_cannot_steer_down_outside_the_state_root(tmp_path, monkeypatch, capsys):
    """A state.json whose run_id is a path must not make ``down`` (or ``gc``) rmtree that path."""
    root = tmp_path / "state"
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious").write_text("keep me")
    (root / "abc123").mkdir(parents=True)
    record = {"run_id": "../victim", "owner_pid": None, "owner_start": None, "kept": True}
    (root / "abc123" / "state.json").write_text(json.dumps(record))
    monkeypatch.setattr(state, "STATE_ROOT", str(root))
    assert os.path.join(str(root), "../victim") and os.path.isdir(os.path.join(str(root), "../victim"))
    assert cli.main(["down", "abc123"]) == 2
    assert "not the record of run abc123" in capsys.readouterr().err
    state.gc(include_kept=True)  # an unreadable record is skipped, never followed
    assert (victim / "precious").read_text() == "keep me"


# -- empty sets -------------------------------------------------------------------------------


def test_conformance_on_an_empty_directory_is_an_error(tmp_path, capsys):
    assert cli.main(["conformance", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (f"netpol-harness: error: {tmp_path}: directory holds no case files "
                                       f"(*.yaml)\n")


def test_docker_selector_is_checked_against_the_topology():
    from harness.lab.docker_commands import check_docker_selector
    from harness.model.topology import load_topology

    cluster = load_topology("default")
    with pytest.raises(HarnessError, match="matches no full pod of topology default"):
        check_docker_selector(cluster, "nosuch=label")
    with pytest.raises(HarnessError, match="no full pod of that name"):
        check_docker_selector(cluster, "nosuch/pod")
    with pytest.raises(HarnessError, match="expected all, ns/name or label=value"):
        check_docker_selector(cluster, "garbage")
    assert check_docker_selector(cluster, "all")


def test_up_checks_the_selector_before_building(capsys, monkeypatch):
    import harness.lab.lab as lab_module

    def must_not_build(*a, **kw):
        raise AssertionError("a lab was built for a selector that matches nothing")

    monkeypatch.setattr(lab_module.Lab, "up", must_not_build)
    assert cli.main(["up", "default", "--docker", "nosuch=label"]) == 2
    assert "matches no full pod" in capsys.readouterr().err


# -- signals ----------------------------------------------------------------------------------


def test_first_signal_raises_terminated_later_ones_are_dropped():
    saved = {s: signal.getsignal(s) for s in signals.SIGNALS}
    try:
        signals.reset()
        signals.install()
        with pytest.raises(signals.Terminated) as excinfo:
            signal.raise_signal(signal.SIGTERM)
        assert isinstance(excinfo.value, KeyboardInterrupt) and excinfo.value.signum == signal.SIGTERM
        signal.raise_signal(signal.SIGINT)  # during the teardown: must not raise
        signal.raise_signal(signal.SIGHUP)
        assert signals.received() == signal.SIGTERM and signals.exit_code() == 143
        assert signals.exit_code(signal.SIGINT) == 130 and signals.exit_code(signal.SIGHUP) == 129
    finally:
        signals.reset()  # the plugin's session status reads it
        for s, h in saved.items():
            signal.signal(s, h)


def test_suite_stops_when_its_pytest_run_ended_on_a_signal(monkeypatch, tmp_path):
    """pytest turns SIGTERM into an orderly end and returns; the suite must not go on."""
    from harness import suite

    def interrupted_session(args, plugins):
        with contextlib.suppress(signals.Terminated):  # what pytest does with it
            signal.raise_signal(signal.SIGTERM)
        return 143

    saved = {s: signal.getsignal(s) for s in signals.SIGNALS}
    monkeypatch.setattr(pytest, "main", interrupted_session)
    try:
        signals.reset()
        signals.install()
        with pytest.raises(signals.Terminated):
            suite.run_scenarios("smoke", tmp_path)
    finally:
        signals.reset()
        for s, h in saved.items():
            signal.signal(s, h)
