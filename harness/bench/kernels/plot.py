"""PNG of the cross-kernel ratios (matplotlib): one bar group per metric, one bar per kernel."""

from __future__ import annotations

from pathlib import Path


def plot_ratios(results: list, ref, path: Path) -> Path | None:
    """Bars of median/reference-median per metric for kernels in the reference's mode; None if
    nothing is comparable."""
    from harness.figures import pyplot, save_figure

    plt = pyplot()
    if ref is None:
        return None
    same = [r for r in results if r.mode == ref.mode]
    keys = sorted({(s, m) for s, b in ref.baselines.items() for m in b.metrics})
    if len(same) < 2 or not keys:
        return None
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(keys)), 4))
    width = 0.8 / len(same)
    for i, r in enumerate(same):
        ys = []
        for s, m in keys:
            base = ref.baselines[s].metrics[m].median
            met = r.baselines.get(s).metrics.get(m) if s in r.baselines else None
            ys.append(met.median / base if met and base else 0)
        ax.bar([k + i * width for k in range(len(keys))], ys, width, label=r.label)
    ax.axhline(1, color="grey", lw=0.8)
    ax.set_xticks([k + 0.4 - width / 2 for k in range(len(keys))], [m for _, m in keys], rotation=30, ha="right",
                  fontsize=7)
    ax.set_ylabel(f"median / {ref.label}")
    ax.legend(fontsize=7)
    return save_figure(fig, path, dpi=100)
