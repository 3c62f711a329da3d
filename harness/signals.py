"""One signal-handling path for every entry point: SIGINT, SIGTERM and SIGHUP tear down like Ctrl-C.

``install()`` (called by the CLI's ``main`` before any command runs and by the pytest plugin
in ``pytest_configure``) makes each of the three signals raise ``Terminated`` — a
``KeyboardInterrupt`` — in the main thread. Everything that already cleans up after Ctrl-C
(``with Lab(...)``, ``try/finally``, fixture finalizers, pytest's orderly end of an
interrupted session) therefore also runs after ``timeout``, a CI cancel or ``kill``; Python's
default SIGTERM/SIGHUP action would end the process on the spot and leave namespaces, run
records and helper processes behind.

Only the first signal raises. A second one arriving while that teardown runs is logged and
dropped, so an impatient second Ctrl-C or a CI runner's repeated SIGTERM cannot abort the
teardown half way (SIGKILL still can; ``netpol-harness gc`` cleans up after it).

``exit_code()`` is the shell convention 128 + signal number: 130 (SIGINT), 143 (SIGTERM),
129 (SIGHUP); the CLI returns it and the pytest plugin sets it as the session's exit status.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

_received: int | None = None


class Terminated(KeyboardInterrupt):
    """Raised in the main thread by the first SIGINT/SIGTERM/SIGHUP; ``signum`` says which."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"terminated by {signal.Signals(signum).name}")


def _handler(signum: int, frame: FrameType | None) -> None:
    global _received
    if _received is not None:
        # Raising here would abort the teardown the first signal started.
        log.warning("%s during teardown: ignored, teardown continues", signal.Signals(signum).name)
        return
    _received = signum
    raise Terminated(signum)


def install() -> None:
    """Route SIGINT, SIGTERM and SIGHUP to ``Terminated`` (main thread only; a no-op elsewhere).

    SIGINT is installed even when inherited as ignored: a shell starts background jobs with
    SIGINT ignored, and ``kill -INT`` must still tear them down. An ignored SIGHUP is kept
    ignored: that is what ``nohup`` asked for."""
    if threading.current_thread() is not threading.main_thread():
        return
    # A signal already received stays received: ``suite`` runs pytest in process, and the
    # plugin installing again must not forget a SIGTERM that ended the CLI's first part.
    for sig in SIGNALS:
        if sig == signal.SIGHUP and signal.getsignal(sig) == signal.SIG_IGN:
            continue
        signal.signal(sig, _handler)


def teardown_done() -> None:
    """After the teardown a signal started: ignore the three signals until the process exits.
    (At interpreter shutdown Python puts back the default action for handlers it installed, so
    a repeated SIGTERM arriving then would kill the process and replace its exit code.)"""
    if _received is None or threading.current_thread() is not threading.main_thread():
        return
    for sig in SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def reset() -> None:
    """Forget a received signal (for tests that raise one in process)."""
    global _received
    _received = None


def raise_if_received() -> None:
    """Raise ``Terminated`` again for a signal that something in between caught (pytest ends
    an interrupted session and returns): the caller's own teardown must run too."""
    if _received is not None:
        raise Terminated(_received)


def received() -> int | None:
    """The signal number that started the teardown, or None."""
    return _received


def exit_code(signum: int | None = None) -> int:
    """128 + the signal number (of ``signum``, default the received signal; SIGINT if none)."""
    return 128 + int(signum or _received or signal.SIGINT)
