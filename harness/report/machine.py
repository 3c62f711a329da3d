"""Where numbers come from: kernel, distribution, CPU, tool and library versions.

Every report carries this, because a timing without its machine is not a measurement.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from importlib import metadata

_TOOLS = {
    "iptables-nft": ["iptables-nft", "--version"],
    "iptables-legacy": ["iptables-legacy", "--version"],
    "ipset": ["ipset", "--version"],
    "conntrack": ["conntrack", "--version"],
    "iproute2": ["ip", "-V"],
    "mariadb": ["/usr/sbin/mariadbd", "--version"],  # the server of the job-to-mysql scenario
}
_LIBRARIES = ("netpol-harness", "pyroute2", "scapy", "PyYAML", "tabulate", "pytest")


def _first_line(argv: list[str]) -> str:
    if shutil.which(argv[0]) is None:
        return "not installed"
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unavailable ({e})"
    text = (proc.stdout or "") + (proc.stderr or "")
    return next((ln.strip() for ln in text.splitlines() if ln.strip()), "?")


def tool_version(name: str) -> str:
    """The first line of tool ``name``'s version output (a key of the tool table, e.g.
    ``mariadb``, ``ipset``), ``not installed``, or ``unavailable (...)``."""
    if name not in _TOOLS:
        raise KeyError(f"no tool {name!r} in the machine report (known: {', '.join(_TOOLS)})")
    return _first_line(_TOOLS[name])


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _distribution() -> str:
    try:
        with open("/etc/os-release", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return "unknown"


def _memory_gib() -> float:
    try:
        with open("/proc/meminfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return 0.0


def machine_info() -> dict:
    """Kernel, distribution, CPU model and count, memory, tool versions (ipset asks the kernel
    for its protocol; read-only everywhere) and Python library versions."""
    libs = {}
    for name in _LIBRARIES:
        try:
            libs[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            libs[name] = "not installed"
    return {
        "kernel": platform.release(),
        "kernel_version": platform.version(),
        "distribution": _distribution(),
        "machine": platform.machine(),
        "cpu_model": _cpu_model(),
        "cpus": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "python": platform.python_version(),
        "tools": {name: _first_line(argv) for name, argv in _TOOLS.items()},
        "libraries": libs,
    }


def machine_lines(info: dict) -> list[str]:
    """The machine as a few human lines for the head of a report."""
    tools = info.get("tools", {})
    return [
        f"kernel {info.get('kernel')} ({info.get('machine')}), {info.get('distribution')}",
        f"CPU {info.get('cpu_model')} x {info.get('cpus')}, {info.get('memory_gib')} GiB",
        "tools: " + "; ".join(f"{k}: {v}" for k, v in tools.items()),
        "python " + str(info.get("python")) + "; "
        + ", ".join(f"{k} {v}" for k, v in info.get("libraries", {}).items()),
    ]
