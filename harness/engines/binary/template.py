"""The ``binary`` engine's command template — pure.

A template is a shell-like command line (``--binary-cmd``) whose words may hold placeholders
filled per node: ``{master}`` (the lab's API server URL), ``{node}`` (the node's name, what
kube-router's ``--hostname-override`` takes), ``{node_ip}``, ``{pod_cidr}`` and
``{metrics_port}`` (``--metrics-port``; only when one is set) and ``{kubeconfig}`` (a kubeconfig
file naming ``{master}``, written into the run directory: kube-router builds its client from
``--kubeconfig``, see the recipe in docs/binary-engine.md). ``{{`` and ``}}`` are literal
braces. Anything else in braces is refused with one line naming the flag::

    argv = parse_template("kube-router --run-firewall --master {master} --hostname-override {node}")
    render(argv, master="http://172.18.0.1:8080", node="node-a", node_ip="172.18.0.2",
           pod_cidr="10.244.0.0/24")
"""

from __future__ import annotations

import os
import shutil
import string

from harness.engines.config import parse_command
from harness.errors import ConfigError

PLACEHOLDERS = ("master", "node", "node_ip", "pod_cidr", "metrics_port", "kubeconfig")
FLAG = "--binary-cmd"
PORT_FLAG = "--metrics-port"


def _fields(word: str, source: str | None, field: str) -> list[str]:
    """The placeholder names in ``word``; ConfigError for an unknown one or a bad format."""
    try:
        parsed = list(string.Formatter().parse(word))
    except ValueError as e:
        raise ConfigError(source, field, f"{word[:100]!r}: {e}") from None
    names = []
    for _, name, spec, conv in parsed:
        if name is None:
            continue
        if name not in PLACEHOLDERS or spec or conv:
            raise ConfigError(source, field, f"unknown placeholder {{{name}{'!' + conv if conv else ''}"
                              f"{':' + spec if spec else ''}}} in {word[:100]!r} (one of "
                              f"{', '.join('{' + p + '}' for p in PLACEHOLDERS)})")
        names.append(name)
    return names


def parse_template(text: str | list[str] | tuple[str, ...] | None, source: str | None = None,
                   field: str = FLAG) -> tuple[str, ...] | None:
    """The template's words (None for None); ConfigError naming ``field`` when it is empty,
    cannot be split or holds an unknown placeholder."""
    argv = parse_command(text, source, field)  # the external engine's command parser: split, non-empty
    if argv is None:
        return None
    for word in argv:
        _fields(word, source, field)
    if "{" in argv[0] or "}" in argv[0]:
        raise ConfigError(source, field, f"the program {argv[0][:100]!r} cannot be a placeholder")
    return argv


def placeholders(argv: tuple[str, ...], source: str | None = None, field: str = FLAG) -> set[str]:
    """Every placeholder ``argv`` uses."""
    return {n for w in argv for n in _fields(w, source, field)}


def check_program(argv: tuple[str, ...], path: str, source: str | None = None, field: str = FLAG) -> str:
    """The program's absolute path as ``PATH`` (``path``) finds it; ConfigError when it is not
    there or not executable."""
    prog = argv[0]
    found = shutil.which(prog, path=path)
    if found is None:
        where = "" if os.sep in prog else f" on PATH ({path[:200]})"
        raise ConfigError(source, field, f"{prog!r} is not an executable{where}")
    return found


def render(argv: tuple[str, ...], *, master: str, node: str, node_ip: str, pod_cidr: str,
           metrics_port: int | None = None, kubeconfig: str = "", source: str | None = None,
           field: str = FLAG) -> list[str]:
    """The node's argv: every placeholder replaced. ``{metrics_port}`` without a port is a
    ConfigError naming ``--metrics-port``."""
    values = {"master": master, "node": node, "node_ip": node_ip, "pod_cidr": pod_cidr, "kubeconfig": kubeconfig}
    if "metrics_port" in placeholders(argv, source, field):
        if metrics_port is None:
            raise ConfigError(source, PORT_FLAG, f"the command uses {{metrics_port}}: give {PORT_FLAG}")
        values["metrics_port"] = str(metrics_port)
    return [w.format(**values) for w in argv]


def kubeconfig_text(master: str) -> str:
    """A kubeconfig whose one cluster is ``master`` over plain HTTP, no credentials (the lab's
    server asks for none): what client-go's ``clientcmd.BuildConfigFromFlags`` reads."""
    return ("apiVersion: v1\nkind: Config\n"
            f"clusters:\n- name: lab\n  cluster:\n    server: {master}\n"
            "users:\n- name: lab\n  user: {}\n"
            "contexts:\n- name: lab\n  context:\n    cluster: lab\n    user: lab\n"
            "current-context: lab\n")
