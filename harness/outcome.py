"""The one outcome vocabulary: what happened to one connection attempt or probe.

Every observer reports an ``Outcome``: the packet prober (``harness.probe.classify``), the
real-socket clients (``harness.lab.reach``, ``harness.probe.sockets``), the SCTP probe, the
MySQL clients of the scenarios. Each member carries everything its users need, so there is no
second table anywhere (a test fails CI if one appears):

- ``word``: the serialized form (results.json, logs); equal to the member's value, and the
  member *is* that string (``StrEnum``), so ``json.dumps`` and old comparisons keep working;
- ``allowed``: True if it counts as an allowed connection in a truth table, False if denied,
  None if the cell cannot be judged (``n/a-...``: not probeable);
- ``mark``: its truth-table / matrix mark (``.`` allowed, ``X`` denied, ``?`` not judged);
- ``colour``: its matplotlib colour in plots.

Some pairs name the same event as seen by two observers, kept apart because their words are
already in stored runs and because they say what was actually observed: the packet prober sees
the RST or the ICMP error itself (``refused_rst`` / ``rejected_icmp``) and calls silence
``dropped``; an application's socket only gets ECONNREFUSED for both (``refused``) and its own
timeout (``timeout``).

Classification is from numbers only, never from message text: ``from_errno`` (socket errno),
``from_gai`` (``getaddrinfo`` EAI_* codes), ``from_exception`` (an exception and its cause
chain), ``from_mysql`` (a MySQL client error code plus the errno under it).
"""

from __future__ import annotations

import errno
import socket
from enum import StrEnum


class Outcome(StrEnum):
    """What happened to one probe or connection attempt (value = serialized word)."""

    CONNECTED = "connected"  # handshake completed (SYN-ACK, UDP echo, ICMP echo reply, SCTP delivered)
    REJECTED_ICMP = "rejected_icmp"  # prober saw ICMP port-unreachable (kube-router's plain REJECT)
    REFUSED_RST = "refused_rst"  # prober saw a TCP RST answer the SYN
    REFUSED = "refused"  # a client's ECONNREFUSED: RST or ICMP port-unreachable, it cannot tell which
    UNREACHABLE = "unreachable"  # any other ICMP unreachable/prohibited/time-exceeded; no route; EPERM
    DROPPED = "dropped"  # prober: no answer within the timeout
    TIMEOUT = "timeout"  # a client's own timeout (ETIMEDOUT): no answer in time
    RESET = "reset"  # a client's connection reset (ECONNRESET, EPIPE) or closed without answering
    RESET_AFTER_ESTABLISHED = "reset_after_established"  # a long-lived flow, in use, was reset
    NAME_UNRESOLVED = "name_unresolved"  # the destination name did not resolve (EAI_*, MySQL 2005)
    ERROR = "error"  # anything else: not a network verdict, counted as not connected
    SAME_LIGHT_HOST = "n/a-same-light-host"  # two light pods share one namespace: not probeable
    NOT_SERVED = "n/a-port-not-served"  # no listener on the port: says nothing about policy

    # Aliases in the words (same members, same serialized words).
    REFUSED_ICMP = "rejected_icmp"

    @property
    def word(self) -> str:
        """The serialized form (results.json, logs)."""
        return self.value

    @property
    def allowed(self) -> bool | None:
        """True: counts as allowed; False: denied; None: not judged (the cell cannot be probed)."""
        return _ALLOWED.get(self, False)

    @property
    def judged(self) -> bool:
        """Whether a truth table judges this cell at all (``n/a-...`` outcomes are not)."""
        return self.allowed is not None

    @property
    def mark(self) -> str:
        """Truth-table / matrix mark: ``.`` allowed, ``X`` denied, ``?`` not judged."""
        return "?" if self.allowed is None else "." if self.allowed else "X"

    @property
    def colour(self) -> str:
        """Matplotlib colour of this outcome in plots."""
        return _COLOURS[self]

    @property
    def client_view(self) -> Outcome:
        """What an application's socket reports for this event: a RST and an ICMP
        port-unreachable are both ECONNREFUSED (``refused``), the prober's silence is the
        client's ``timeout``; every other outcome is already in the client's terms."""
        return _CLIENT_VIEW.get(self, self)

    @property
    def silent(self) -> bool:
        """No answer at all (``dropped`` / ``timeout``): a lost probe or a real drop."""
        return self in (Outcome.DROPPED, Outcome.TIMEOUT)

    @classmethod
    def parse(cls, word: str | Outcome) -> Outcome:
        """The member for a serialized word (as written in results.json); ValueError otherwise."""
        try:
            return cls(str(word).strip().lower())
        except ValueError:
            raise ValueError(f"unknown outcome {word!r} (one of {', '.join(cls.words())})") from None

    @classmethod
    def words(cls) -> tuple[str, ...]:
        """Every serialized word, in declaration order."""
        return tuple(m.value for m in cls)


_ALLOWED: dict[Outcome, bool | None] = {
    Outcome.CONNECTED: True,
    Outcome.SAME_LIGHT_HOST: None,
    Outcome.NOT_SERVED: None,
}  # everything else: False (not a working connection counts as denied, as in the e2e suite)

_COLOURS: dict[Outcome, str] = {
    Outcome.CONNECTED: "tab:green",
    Outcome.REJECTED_ICMP: "tab:red",
    Outcome.REFUSED_RST: "tab:purple",
    Outcome.REFUSED: "tab:red",
    Outcome.UNREACHABLE: "tab:orange",
    Outcome.DROPPED: "tab:gray",
    Outcome.TIMEOUT: "tab:gray",
    Outcome.RESET: "tab:purple",
    Outcome.RESET_AFTER_ESTABLISHED: "tab:pink",
    Outcome.NAME_UNRESOLVED: "tab:brown",
    Outcome.ERROR: "black",
    Outcome.SAME_LIGHT_HOST: "lightgray",
    Outcome.NOT_SERVED: "lightgray",
}

_CLIENT_VIEW: dict[Outcome, Outcome] = {
    Outcome.REJECTED_ICMP: Outcome.REFUSED,
    Outcome.REFUSED_RST: Outcome.REFUSED,
    Outcome.DROPPED: Outcome.TIMEOUT,
}

#: Outcomes of the packet prober that mean "denied" (a window of these is a refusal window).
PROBE_DENIED = frozenset({Outcome.REJECTED_ICMP, Outcome.REFUSED_RST, Outcome.UNREACHABLE, Outcome.DROPPED})

# -- classification from numbers ------------------------------------------------------------------
#: socket errno -> outcome. EPERM/EACCES come from a local netfilter DROP/REJECT on the sender's
#: own OUTPUT path. EINPROGRESS is deliberately absent: the mariadb CLI prints it ("ERROR 2002 ...
#: (115)", the state of its non-blocking connect) for a refused *and* a timed-out connect alike, so
#: it says nothing about which; such an attempt is ERROR (failed, cause unknown).
ERRNO_OUTCOMES: dict[int, Outcome] = {
    errno.ECONNREFUSED: Outcome.REFUSED,
    errno.ECONNRESET: Outcome.RESET,
    errno.EPIPE: Outcome.RESET,
    errno.ECONNABORTED: Outcome.RESET,
    errno.ETIMEDOUT: Outcome.TIMEOUT,
    errno.EAGAIN: Outcome.TIMEOUT,  # a receive timeout (SO_RCVTIMEO) on a blocking socket
    errno.EHOSTUNREACH: Outcome.UNREACHABLE,
    errno.ENETUNREACH: Outcome.UNREACHABLE,
    errno.EHOSTDOWN: Outcome.UNREACHABLE,
    errno.ENONET: Outcome.UNREACHABLE,
    errno.EACCES: Outcome.UNREACHABLE,
    errno.EPERM: Outcome.UNREACHABLE,
}

#: getaddrinfo() codes that mean "the name did not resolve" (glibc's EAI_*, negative numbers);
#: the others (EAI_FAMILY, EAI_SOCKTYPE, EAI_BADFLAGS, EAI_SERVICE, EAI_MEMORY, EAI_SYSTEM ...)
#: are caller or system errors, not an answer about the name.
GAI_UNRESOLVED: frozenset[int] = frozenset(
    getattr(socket, n) for n in ("EAI_NONAME", "EAI_AGAIN", "EAI_FAIL", "EAI_NODATA", "EAI_ADDRFAMILY")
    if hasattr(socket, n))

#: EAI_* number -> name (the socket module has the constants but no reverse table).
GAI_NAMES: dict[int, str] = {getattr(socket, n): n for n in dir(socket) if n.startswith("EAI_")}

#: MySQL client error codes (libmysql/libmariadb ``errmsg.h``, PyMySQL ``constants/CR.py``) that
#: decide the outcome when no errno is known under them.
CR_CONNECTION_ERROR = 2002  # the mariadb CLI: can't connect (TCP too; its errno 115 tells no cause)
CR_CONN_HOST_ERROR = 2003  # can't connect to server on host (PyMySQL: any OSError while connecting)
CR_UNKNOWN_HOST = 2005  # unknown server host: name resolution failed
CR_SERVER_GONE_ERROR = 2006  # server has gone away (send failed)
CR_SERVER_LOST = 2013  # lost connection (during handshake or query; EOF without errno)
MYSQL_CODE_OUTCOMES: dict[int, Outcome] = {
    CR_UNKNOWN_HOST: Outcome.NAME_UNRESOLVED,
    CR_SERVER_GONE_ERROR: Outcome.RESET,
    CR_SERVER_LOST: Outcome.RESET,
}


def errno_name(code: int | None) -> str | None:
    """``ECONNREFUSED`` for 111, ``EAI_NONAME`` for -2 (negative: getaddrinfo codes); None for None."""
    if code is None:
        return None
    if code < 0:
        return GAI_NAMES.get(code, str(code))
    return errno.errorcode.get(code, str(code))


def errno_number(name: str | None) -> int | None:
    """The inverse of ``errno_name`` (``"ECONNREFUSED"`` -> 111, ``"EAI_NONAME"`` -> -2, ``"111"``
    -> 111); None when unknown. For results that stored the errno by name."""
    if not name:
        return None
    if name.lstrip("-").isdigit():
        return int(name)
    value = getattr(socket if name.startswith("EAI_") else errno, name, None)
    return value if isinstance(value, int) else None


def from_errno(code: int | None) -> Outcome:
    """The outcome a socket errno means (negative codes are getaddrinfo's EAI_*); ERROR if unknown."""
    if code is None:
        return Outcome.ERROR
    if code < 0:
        return from_gai(code)
    return ERRNO_OUTCOMES.get(code, Outcome.ERROR)


def from_gai(code: int | None) -> Outcome:
    """The outcome of a ``socket.gaierror`` code: NAME_UNRESOLVED for a resolution failure."""
    return Outcome.NAME_UNRESOLVED if code in GAI_UNRESOLVED else Outcome.ERROR


def exception_errno(exc: BaseException | None) -> int | None:
    """The errno of the first OSError in ``exc``'s cause/context chain (PyMySQL keeps the socket
    error as ``original_exception`` and as context): ETIMEDOUT for a timeout without errno, the
    (negative) EAI code for a ``gaierror``; None if there is none."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, TimeoutError) and not exc.errno:
            return errno.ETIMEDOUT
        if isinstance(exc, OSError) and exc.errno:
            return exc.errno  # a gaierror's errno is its EAI_* code
        exc = getattr(exc, "original_exception", None) or exc.__cause__ or exc.__context__
    return None


def from_exception(exc: BaseException) -> Outcome:
    """The outcome an exception from a client means, by its errno (cause chain included)."""
    return from_errno(exception_errno(exc))


def from_mysql(code: int | None, errno_code: int | None = None) -> Outcome:
    """The outcome of a failed MySQL client attempt from its numeric error ``code`` (2003, 2002,
    2013 ...) and the socket errno under it when known (PyMySQL: the OSError it wraps; the
    mariadb CLI: the number it prints, e.g. ``(111)``, ``(115)``, ``system error: 104``).

    The errno decides when it classifies (2003 + 111 -> refused, 2003 + 110 -> timeout,
    2013 + 104 -> reset); else the code (2013/2006 lost connection -> reset, 2005 -> name
    unresolved); anything else is ERROR: 2002 + 115 (the CLI's failed connect, refused or timed
    out), a server error such as 1045 access denied."""
    by_errno = from_errno(errno_code)
    if by_errno is not Outcome.ERROR:
        return by_errno
    return MYSQL_CODE_OUTCOMES.get(code, Outcome.ERROR) if code is not None else Outcome.ERROR


__all__ = [
    "ERRNO_OUTCOMES", "GAI_UNRESOLVED", "MYSQL_CODE_OUTCOMES", "Outcome", "PROBE_DENIED", "errno_name",
    "errno_number", "exception_errno", "from_errno", "from_exception", "from_gai", "from_mysql",
]
