"""The one outcome type: every member's attributes, words, and the errno / EAI / MySQL-code tables.

Pure: no root, no kernel. The last tests keep the vocabulary in one place: a module outside
harness/outcome.py that spells out its own table of outcome words fails here.
"""

from __future__ import annotations

import ast
import errno
import json
import socket
from pathlib import Path

import pytest
from matplotlib.colors import is_color_like

from harness.analysis.truthtable import TruthTable, parse_cell
from harness.outcome import (
    ERRNO_OUTCOMES,
    PROBE_DENIED,
    Outcome,
    errno_name,
    errno_number,
    exception_errno,
    from_errno,
    from_exception,
    from_gai,
    from_mysql,
)

HARNESS = Path(__file__).resolve().parent.parent / "harness"

# The words results.json files already hold: renaming one breaks `netpol-harness report` on old runs.
STORED_WORDS = {
    "connected", "rejected_icmp", "refused_rst", "refused", "unreachable", "dropped", "timeout", "reset",
    "reset_after_established", "error", "n/a-same-light-host", "n/a-port-not-served",
}


@pytest.mark.parametrize("outcome", list(Outcome), ids=lambda o: o.name)
def test_every_member_has_allowed_mark_colour_and_word(outcome: Outcome) -> None:
    assert outcome.allowed in (True, False, None)
    assert outcome.mark == {True: ".", False: "X", None: "?"}[outcome.allowed]
    assert is_color_like(outcome.colour), outcome.colour
    assert outcome.word == outcome.value == str(outcome) == f"{outcome}"
    assert outcome.judged is (outcome.allowed is not None)
    assert outcome.client_view in Outcome


def test_only_connected_is_allowed_and_only_n_a_is_not_judged() -> None:
    assert [o for o in Outcome if o.allowed] == [Outcome.CONNECTED]
    assert {o for o in Outcome if not o.judged} == {Outcome.SAME_LIGHT_HOST, Outcome.NOT_SERVED}
    assert all(o.word.startswith("n/a-") for o in Outcome if not o.judged)
    assert Outcome.REFUSED_ICMP is Outcome.REJECTED_ICMP  # the name is an alias
    assert PROBE_DENIED == {Outcome.REJECTED_ICMP, Outcome.REFUSED_RST, Outcome.UNREACHABLE, Outcome.DROPPED}
    assert {o for o in Outcome if o.silent} == {Outcome.DROPPED, Outcome.TIMEOUT}


def test_words_are_stable_and_round_trip() -> None:
    assert STORED_WORDS <= set(Outcome.words())
    assert len(set(Outcome.words())) == len(Outcome.words())
    for o in Outcome:
        assert Outcome.parse(o.word) is o
        assert Outcome.parse(o.word.upper()) is o
        assert Outcome.parse(o) is o
        assert json.loads(json.dumps({o: [1, o]})) == {o.word: [1, o.word]}
    with pytest.raises(ValueError, match="unknown outcome 'maybe'"):
        Outcome.parse("maybe")


def test_truth_table_cells_take_the_outcomes_mark() -> None:
    pods = ["x/a", "x/b"]
    for o in Outcome:
        t = TruthTable(pods)
        t.set("x/a", "x/b", o)
        assert t.cell("x/a", "x/b").mark == o.mark
        assert parse_cell(o.word) == (o.allowed, o.word)
    assert parse_cell("allow") == (True, None) and parse_cell("deny") == (False, None)


def test_errno_table() -> None:
    cases = {
        errno.ECONNREFUSED: Outcome.REFUSED, errno.ECONNRESET: Outcome.RESET, errno.EPIPE: Outcome.RESET,
        errno.ECONNABORTED: Outcome.RESET, errno.ETIMEDOUT: Outcome.TIMEOUT, errno.EAGAIN: Outcome.TIMEOUT,
        errno.EHOSTUNREACH: Outcome.UNREACHABLE, errno.ENETUNREACH: Outcome.UNREACHABLE,
        errno.EPERM: Outcome.UNREACHABLE, errno.EACCES: Outcome.UNREACHABLE,
        errno.EINPROGRESS: Outcome.ERROR, errno.EMSGSIZE: Outcome.ERROR,
    }
    for code, want in cases.items():
        assert from_errno(code) is want, errno.errorcode[code]
    assert from_errno(None) is Outcome.ERROR
    assert set(ERRNO_OUTCOMES.values()) <= set(Outcome)
    assert all(o.judged and not o.allowed for o in ERRNO_OUTCOMES.values())


def test_getaddrinfo_codes() -> None:
    assert from_gai(socket.EAI_NONAME) is Outcome.NAME_UNRESOLVED
    assert from_gai(socket.EAI_AGAIN) is Outcome.NAME_UNRESOLVED
    assert from_gai(socket.EAI_FAIL) is Outcome.NAME_UNRESOLVED
    assert from_gai(socket.EAI_FAMILY) is Outcome.ERROR  # a caller error, not an answer about the name
    assert from_gai(None) is Outcome.ERROR
    e = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    assert exception_errno(e) == socket.EAI_NONAME and from_exception(e) is Outcome.NAME_UNRESOLVED
    assert from_errno(socket.EAI_NONAME) is Outcome.NAME_UNRESOLVED  # negative: getaddrinfo's
    assert errno_name(socket.EAI_NONAME) == "EAI_NONAME" and errno_number("EAI_NONAME") == socket.EAI_NONAME


def test_exceptions_by_errno_along_the_cause_chain() -> None:
    assert from_exception(ConnectionRefusedError(errno.ECONNREFUSED, "x")) is Outcome.REFUSED
    assert from_exception(TimeoutError("timed out")) is Outcome.TIMEOUT  # socket.timeout has no errno
    assert from_exception(ValueError("Connection refused")) is Outcome.ERROR  # text never counts

    class Wrapper(Exception):
        pass

    try:
        try:
            raise ConnectionResetError(errno.ECONNRESET, "reset")
        except OSError as inner:
            raise Wrapper("timed out") from inner
    except Wrapper as outer:
        assert exception_errno(outer) == errno.ECONNRESET
    w = Wrapper("x")
    w.original_exception = OSError(errno.EHOSTUNREACH, "No route")  # type: ignore[attr-defined]
    assert from_exception(w) is Outcome.UNREACHABLE


def test_mysql_client_codes() -> None:
    cases = [
        ((2003, errno.ECONNREFUSED), Outcome.REFUSED),  # PyMySQL: can't connect, errno 111 inside
        ((2003, errno.ETIMEDOUT), Outcome.TIMEOUT),
        ((2003, socket.EAI_NONAME), Outcome.NAME_UNRESOLVED),  # PyMySQL wraps the gaierror in 2003
        ((2002, errno.EINPROGRESS), Outcome.ERROR),  # the mariadb CLI: "(115)" for refused and timeout alike
        ((2002, errno.ECONNREFUSED), Outcome.REFUSED),
        ((2013, errno.ECONNRESET), Outcome.RESET),  # the CLI's "system error: 104"
        ((2013, errno.ETIMEDOUT), Outcome.TIMEOUT),
        ((2013, None), Outcome.RESET),  # lost connection at EOF: the server side closed it
        ((2006, None), Outcome.RESET),
        ((2005, None), Outcome.NAME_UNRESOLVED),
        ((1045, None), Outcome.ERROR),  # a server answer (access denied): not a network outcome
        ((None, None), Outcome.ERROR),
    ]
    for (code, err), want in cases:
        assert from_mysql(code, err) is want, (code, err)


def test_errno_names_round_trip() -> None:
    for code in (*ERRNO_OUTCOMES, socket.EAI_NONAME, socket.EAI_AGAIN):
        assert errno_number(errno_name(code)) == code
    assert errno_name(None) is None and errno_number(None) is None and errno_number("") is None
    assert errno_number("111") == 111 and errno_number("ENOSUCHTHING") is None


# -- one vocabulary, in one place -----------------------------------------------------------------
def outcome_word_tables(source: str) -> list[tuple[int, list[str]]]:
    """Places in ``source`` that spell out the vocabulary, which belongs in harness/outcome.py:
    a literal collection (dict keys or values, set/list/tuple elements) naming two or more
    outcome words; a function returning two or more outcome word literals (an if-chain table);
    a class binding two or more (a second enum); a module-level constant bound to an outcome
    word (a second name for a member)."""
    words = set(Outcome.words())

    def named(nodes: list) -> list[str]:
        return sorted({e.value for e in nodes if isinstance(e, ast.Constant) and e.value in words})

    tree = ast.parse(source)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            hits = named([*node.keys, *node.values])
        elif isinstance(node, ast.Set | ast.List | ast.Tuple):
            hits = named(list(node.elts))
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            hits = named([n.value for n in ast.walk(node) if isinstance(n, ast.Return) and n.value is not None])
        elif isinstance(node, ast.ClassDef):  # a second enum of outcome words
            hits = named([n.value for n in node.body if isinstance(n, ast.Assign | ast.AnnAssign) and n.value])
        else:
            continue
        if len(hits) >= 2:
            found.append((node.lineno, hits))
    for node in tree.body:
        if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None and named([node.value]):
            found.append((node.lineno, named([node.value])))
    return sorted(found)


def test_the_table_detector_finds_a_table() -> None:
    assert outcome_word_tables('T = {"ECONNREFUSED": "refused", "ETIMEDOUT": "timeout"}') == [
        (1, ["refused", "timeout"])]
    assert outcome_word_tables('BAD = frozenset({"rejected_icmp", "dropped"})') == [(1, ["dropped", "rejected_icmp"])]
    assert outcome_word_tables('def f(ok):\n    if ok:\n        return "connected"\n    return "refused"\n') == [
        (1, ["connected", "refused"])]
    assert outcome_word_tables('TIMEOUT = "timeout"') == [(1, ["timeout"])]
    assert outcome_word_tables('class O:\n    A = "connected"\n    B = "dropped"\n') == [(1, ["connected", "dropped"])]
    assert outcome_word_tables('x = {"refused": 3, "windows": []}; y = ("timeout", 0)\n'
                               'def g():\n    return "error"\n') == []


def test_no_module_outside_outcome_py_defines_an_outcome_word_table() -> None:
    offenders = []
    for path in sorted(HARNESS.rglob("*.py")):
        if path.name == "outcome.py" and path.parent == HARNESS:
            continue
        for line, named in outcome_word_tables(path.read_text()):
            offenders.append(f"{path.relative_to(HARNESS.parent)}:{line}: {', '.join(named)}")
    assert not offenders, ("outcome words belong to harness/outcome.py (use Outcome members and their "
                           "attributes):\n" + "\n".join(offenders))
