"""The one way the harness makes and writes a matplotlib figure (report, bench, kernel matrix, sim).

``pyplot()`` gives ``matplotlib.pyplot`` on the Agg backend (a CI runner has no display), imported
on first use so that a command which draws nothing does not pay matplotlib's import time.
``save_figure`` is the end of every plot: lay out, create the folder, write the PNG, and close the
figure (pyplot keeps every open figure alive; a long run drawing many plots would otherwise grow).
Pure: no harness imports, so every layer may use it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

DPI = 110  # every plot of a run or a bench; the kernel matrix's ratio bars use 100


def pyplot() -> Any:
    """``matplotlib.pyplot`` with the non-interactive Agg backend selected."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path, *, dpi: int = DPI) -> Path:
    """Write ``fig`` as a PNG to ``path`` (its folder created if missing) after ``tight_layout``,
    close it, and return the path."""
    out = Path(path)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    pyplot().close(fig)
    return out
