"""harness.figures and the bench plots that use it, drawn from synthetic results: pure, no root."""

from __future__ import annotations

import struct

from harness.bench.baseline import Baseline
from harness.figures import pyplot, save_figure


def _png_size(path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


def test_save_figure_makes_the_folder_writes_the_png_at_its_dpi_and_closes_the_figure(tmp_path):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4, 2))
    ax.plot([0, 1], [1, 0])
    out = save_figure(fig, tmp_path / "a" / "b" / "f.png", dpi=50)
    assert out == tmp_path / "a" / "b" / "f.png"
    assert _png_size(out) == (200, 100)
    assert fig.number not in plt.get_fignums()  # closed: pyplot keeps no reference
    assert _png_size(save_figure(plt.subplots(figsize=(4, 2))[0], tmp_path / "g.png")) == (440, 220)  # DPI 110


def test_bench_plots_draw_synthetic_results(tmp_path):
    from harness.bench.plots import plot_datapath, plot_sweep

    cells = [{"backend": be, "strategy": "restore", "pods": p, "point": f"{p // 10}/{p}", "median_ms": p / 10,
              "extrapolated": p > 100} for be in ("legacy", "nft") for p in (10, 100, 1000)]
    sweep = plot_sweep(Baseline("sweep", extra={"cells": cells}), tmp_path / "s" / "sweep.png")
    assert _png_size(sweep) == (1210, 605)
    rows = [{"backend": be, "mode": m, "rules": n, "rtt_us": [10.0 + n], "rtt_p10_us": [9.0], "pps": [1e5 / (1 + n)]}
            for be in ("legacy", "nft") for m in ("rules", "ipset") for n in (0, 300)]
    assert _png_size(plot_datapath(Baseline("datapath", extra={"rows": rows}), tmp_path / "d.png")) == (1210, 528)


def test_kernel_ratio_bars_are_drawn_at_100_dpi(tmp_path):
    from types import SimpleNamespace

    from harness.bench.baseline import Metric
    from harness.bench.kernels.plot import plot_ratios

    def result(label: str, median: float) -> SimpleNamespace:
        b = Baseline("canaries", metrics={"ipset_swap.per_op_us": Metric("us", [median])})
        return SimpleNamespace(label=label, mode="tcg", baselines={"canaries": b})

    ref = result("6.1.0-47", 1.0)
    out = plot_ratios([ref, result("6.1.0-57", 2.0)], ref, tmp_path / "k" / "ratios.png")
    assert out is not None and _png_size(out) == (600, 400)
    assert plot_ratios([ref], ref, tmp_path / "none.png") is None  # nothing to compare with
