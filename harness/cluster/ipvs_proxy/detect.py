"""Can this kernel run the IPVS proxy? Detected from the running kernel, never assumed.

IPVS (CONFIG_IP_VS) is present when ``/proc/net/ip_vs`` exists (loaded or built in) or the
running kernel's ``modules.dep``/``modules.builtin`` lists ``ip_vs.ko``; only if neither says so
is ``/proc/config.gz`` consulted for the definite ``# CONFIG_IP_VS is not set``. The dummy link
(CONFIG_DUMMY) the proxy puts ClusterIPs on is detected the same way.
"""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

MODULES = Path("/lib/modules")


def _in_module_lists(module: str, release: str, root: Path = MODULES) -> bool:
    for name in ("modules.builtin", "modules.dep"):
        try:
            text = (root / release / name).read_text(errors="replace")
        except OSError:
            continue
        if f"/{module}.ko" in text:
            return True
    return False


def _config_says_missing(option: str, config: Path = Path("/proc/config.gz")) -> bool:
    try:
        text = gzip.decompress(config.read_bytes()).decode(errors="replace")
    except OSError:
        return False
    return f"# {option} is not set" in text.splitlines() or f"{option}=" not in text


def kernel_has(option: str, module: str, proc_marker: str | None = None, release: str | None = None) -> bool:
    """True if the running kernel has ``option`` built in or as loadable ``module``."""
    if proc_marker and os.path.exists(proc_marker):
        return True
    if _in_module_lists(module, release or os.uname().release):
        return True
    # no marker, no module list: only a readable kernel config can say it is missing; if there is
    # none, the first ipvsadm call reports the kernel's own answer
    return not _config_says_missing(option)


def missing() -> str:
    """'' if the IPVS proxy can run here, else the reason (``kernel lacks CONFIG_IP_VS``, ...)."""
    if not kernel_has("CONFIG_IP_VS", "ip_vs", "/proc/net/ip_vs"):
        return "kernel lacks CONFIG_IP_VS"
    if not kernel_has("CONFIG_DUMMY", "dummy", "/sys/module/dummy"):
        return "kernel lacks CONFIG_DUMMY"
    if not shutil.which("ipvsadm"):
        return "ipvsadm not found (apt-get install ipvsadm)"
    return ""
