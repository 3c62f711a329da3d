"""One exception family for everything a user can get wrong.

Every message is one line and, where it comes from a file, names the file and the field path,
e.g. ``topologies/x.yaml: nodes[1].pod_cidr: 10.244.0.0/24 overlaps nodes[0].pod_cidr``.
The CLI prints ``str(error)`` without a traceback; pytest skips or fails with it.
"""

from __future__ import annotations

MESSAGE_LIMIT = 300  # characters of a ConfigError's message (after the file and field)


class HarnessError(Exception):
    """Base of every user-facing error; ``str()`` is the one-line message."""


class ConfigError(HarnessError):
    """Invalid topology, manifest or case file: names the file and the field path."""

    def __init__(self, source: str | None, field: str | None, message: str):
        self.source = source
        self.field = field
        # A message quotes user values: never let one make a line of megabytes.
        if len(message) > MESSAGE_LIMIT:
            message = message[: MESSAGE_LIMIT - 3] + "..."
        self.message = message
        parts = [p for p in (source, field) if p]
        super().__init__(": ".join([*parts, message]))


class EnvironmentProblem(HarnessError):
    """The machine cannot run the kernel part: not root, missing binary, missing kernel feature.

    ``hint`` says how to fix it (an install command, a modprobe)."""

    def __init__(self, message: str, hint: str | None = None):
        self.hint = hint
        super().__init__(f"{message} ({hint})" if hint else message)


class KernelError(HarnessError):
    """A kernel-side operation failed (netlink, ipset, iptables) with the tool's own message."""
