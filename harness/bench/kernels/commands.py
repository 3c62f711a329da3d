"""CLI: ``netpol-harness kernels run|table|compare|fetch|gc`` (issue 15, the kernel matrix).

``kernels run --kernel host --kernel 6.1.0-47 --kernel 6.1.0-50 --suite default --out DIR`` runs
the suite on each kernel (``host`` directly, the others booted with virtme-ng under KVM when
``/dev/kvm`` works, else TCG), brings each guest's baselines and verdicts back into
``DIR/<kernel>/`` and prints (and writes ``DIR/table.md``, ``DIR/ratios.png``) the cross-kernel table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from harness.errors import ConfigError, HarnessError

REPO = Path(__file__).resolve().parents[3]


def _vng() -> Path:
    return Path(sys.executable).with_name("vng")


def _env_path() -> None:

    os.environ["PATH"] = f"{_vng().parent}:{os.environ['PATH']}"  # vng execs virtme-run from its venv


def _boot(kernel: Path, rw: Path, command: str, *, kvm: bool, cpus: int, timeout_s: float) -> str:
    from harness.bench.kernels.runner import run_boot
    from harness.bench.kernels.vm import vng_argv

    timed_out, log = run_boot(vng_argv(str(_vng()), str(kernel), str(rw), command, kvm=kvm, cpus=cpus),
                              rw / "console.log", timeout_s)
    return log if not timed_out else log + "\n<timeout>"


def detect_kvm(kernel: Path, scratch: Path) -> bool:
    """True if /dev/kvm opens and a trivial guest boots under it within 30 s (nested KVM may abort)."""

    try:
        os.close(os.open("/dev/kvm", os.O_RDWR))
    except OSError:
        return False
    probe = scratch / "kvm-probe"
    probe.mkdir()
    _boot(kernel, probe, f"touch {probe}/ok", kvm=True, cpus=1, timeout_s=30)
    return (probe / "ok").exists()


def cmd_run(args: argparse.Namespace) -> int:

    from harness.bench.common import run_id
    from harness.bench.kernels import fetch, matrix, runs
    from harness.bench.kernels.runner import run_boot
    from harness.bench.kernels.vm import boot_outcome, guest_prelude, parse_kernel, vng_argv

    specs = [parse_kernel(k) for k in args.kernel]
    steps = matrix.suite_steps(args.suite)
    if os.geteuid() != 0:
        raise HarnessError("kernels run: needs root (netns, iptables, qemu over the host's root)")
    specs = [fetch.resolve(s) for s in specs]  # trixie:6.12 -> 6.12.117+deb13-amd64: named by its ABI
    out = Path(args.out or f"reports/kernels/{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
    if out.exists() and any(out.iterdir()):
        raise ConfigError(None, "--out", f"{out} exists and is not empty")
    out.mkdir(parents=True, exist_ok=True)
    vm_specs = [s for s in specs if s.kind != "host"]
    if vm_specs:
        fetch.ensure_tools(_vng())
        _env_path()
    images = {s.name: fetch.fetch(s) for s in vm_specs}  # all fetched before any boot: fail early
    scratch = runs.new_run(run_id())
    nph = str(Path(sys.executable).with_name("netpol-harness"))
    try:
        mode = args.mode
        if vm_specs and mode == "auto":
            mode = "kvm" if detect_kvm(images[vm_specs[0].name], scratch) else "tcg"
            print(f"kernels: virtualization mode {mode}", flush=True)
        results = []
        for s in specs:
            kdir = out / s.name
            kdir.mkdir()
            kmode = "host" if s.kind == "host" else mode
            cpus = os.cpu_count() if s.kind == "host" else args.cpus
            meta = {"name": s.name, "release": s.release or (os.uname().release if s.kind == "host" else ""),
                    "mode": kmode, "cpus": cpus, "suite": args.suite}
            print(f"kernels: {s.name} ({kmode}) suite {args.suite}", flush=True)
            t0 = time.monotonic()
            try:
                if s.kind == "host":
                    script = matrix.guest_script(steps, nph, str(REPO), str(kdir), "")
                    timed_out, _ = run_boot(["sh", "-c", script], kdir / "console.log", args.timeout)
                    if timed_out:
                        raise HarnessError(f"kernel host: run timeout after {args.timeout:g} s (killed)")
                else:
                    rw = scratch / s.name
                    rw.mkdir()
                    # the script goes through the shared dir, not the kernel command line (2048 bytes)
                    (rw / "guest.sh").write_text(matrix.guest_script(steps, nph, str(REPO), str(rw),
                                                                     guest_prelude()) + "\n")
                    script = f"sh {rw}/guest.sh"
                    img = images[s.name]
                    mods = img.parents[1] / "lib" / "modules" / img.name.removeprefix("vmlinuz-")
                    timed_out, log = run_boot(vng_argv(str(_vng()), str(img), str(rw), script,
                                                       kvm=kmode == "kvm", cpus=args.cpus,
                                                       modules=str(mods) if mods.is_dir() else ""),
                                              rw / "console.log", args.timeout)
                    for f in rw.iterdir():
                        shutil.copy2(f, kdir / f.name)
                    matrix.label_baselines(kdir, steps, kmode, args.cpus)
                    boot_outcome(s.name, log, timed_out, args.timeout, (rw / "done").exists())
            except HarnessError as e:
                meta["error"] = str(e)
                print(f"kernels: {e}", flush=True)
            meta["wall_s"] = round(time.monotonic() - t0, 1)
            (kdir / "kernel.json").write_text(json.dumps(meta, indent=1) + "\n")
            results.append(matrix.collect(kdir, steps))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    (out / "suite.json").write_text(json.dumps({"suite": args.suite, "kernels": [s.name for s in specs]}) + "\n")
    return _table(out, args.reference)


def _load_run(out: Path) -> list:
    from harness.bench.kernels import matrix

    try:
        meta = json.loads((out / "suite.json").read_text())
    except OSError:
        raise ConfigError(str(out), "suite.json", "missing: not a `kernels run` directory") from None
    return [matrix.collect(out / k, matrix.suite_steps(meta["suite"])) for k in meta["kernels"]]


def _table(out: Path, reference: str | None) -> int:
    from harness.bench.kernels import matrix

    results = _load_run(out)
    table = matrix.cross_table(results, reference)
    (out / "table.md").write_text(table + "\n")
    print(table)
    try:
        from harness.bench.kernels.plot import plot_ratios

        png = plot_ratios(results, matrix.reference_of(results, reference), out / "ratios.png")
        if png:
            print(f"\nplot: {png}")
    except ImportError:
        pass
    bad = [r for r in results if r.error or any(not v.startswith("pass") for v in r.verdicts.values())]
    return 1 if bad else 0


def cmd_table(args: argparse.Namespace) -> int:
    return _table(Path(args.run), args.reference)


def cmd_compare(args: argparse.Namespace) -> int:
    """Compare two kernels of one run with ``harness.bench.compare`` (same thresholds, same verdicts)."""
    from harness.bench.compare import compare, render
    from harness.bench.kernels import matrix

    results = {r.name: r for r in _load_run(Path(args.run))}
    for k in (args.base, args.new):
        if k not in results:
            raise ConfigError(None, "kernel", f"{k!r} is not in {args.run} ({', '.join(results)})")
    a, b = results[args.base], results[args.new]
    if a.mode != b.mode:
        raise ConfigError(None, "kernel", f"{a.label} and {b.label} ran in different modes: not comparable")
    failed = False
    for step, base in a.baselines.items():
        if step in b.baselines:
            c = compare(base, b.baselines[step], args.threshold)
            print(f"## {step}: {a.label} -> {b.label}\n{render(c)}\n")
            failed |= c.failed
    changes = matrix.case_changes(a, b)
    print(f"## conformance cases: {a.label} -> {b.label}")
    print("\n".join(f"REGRESSION {c}" for c in changes) if changes else
          f"no verdict changed ({len(a.cases)} case verdicts)")
    return 1 if failed or changes else 0


def cmd_fetch(args: argparse.Namespace) -> int:
    from harness.bench.kernels import fetch
    from harness.bench.kernels.vm import parse_kernel

    for k in args.kernel:
        print(fetch.fetch(parse_kernel(k)))
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    from harness.bench.kernels.runs import gc

    killed, removed = gc()
    print(f"kernels: killed {killed} qemu process(es), removed {removed} dead run(s)")
    return 0


def register(sub: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None:
    """Add ``kernels run|table|compare|fetch|gc``."""
    from harness.bench.kernels.matrix import SUITES

    p = sub.add_parser("kernels", help="the kernel matrix: bench suites on other kernels booted in qemu",
                       description=__doc__)
    ks = p.add_subparsers(dest="kernels_cmd", required=True)
    r = ks.add_parser("run", help="run a suite on each --kernel and print the cross-kernel table")
    r.add_argument("--kernel", action="append", required=True,
                   help="host, a Debian kernel (6.1.0-47 or linux-image-6.1.0-47-amd64-unsigned), SUITE:VERSION "
                        "from a private apt source (trixie:6.12, sid:latest, trixie-backports:6.18.15+deb13) "
                        "or a vmlinuz path")
    r.add_argument("--suite", default="default", choices=sorted(SUITES), help="suite run on each kernel (default)")
    r.add_argument("--mode", default="auto", choices=("auto", "kvm", "tcg"),
                   help="virtualization (auto: KVM if /dev/kvm boots a guest, else TCG)")
    r.add_argument("--cpus", type=int, default=1, help="vCPUs per guest (default 1: the machine is shared)")
    r.add_argument("--timeout", type=float, default=900, help="boot+run timeout per kernel, s (qemu killed)")
    r.add_argument("--reference", help="kernel the ratios are to (default: the first VM kernel)")
    r.add_argument("--out", help="run directory (default reports/kernels/<UTC time>)")
    r.set_defaults(func=cmd_run)
    t = ks.add_parser("table", help="the cross-kernel table of a finished run directory")
    t.add_argument("run")
    t.add_argument("--reference")
    t.set_defaults(func=cmd_table)
    c = ks.add_parser("compare", help="compare two kernels' baselines of one run (exit 1 on regression)")
    c.add_argument("run")
    c.add_argument("base")
    c.add_argument("new")
    c.add_argument("--threshold", type=float, default=1.5)
    c.set_defaults(func=cmd_compare)
    f = ks.add_parser("fetch", help="download and unpack Debian kernels into the cache")
    f.add_argument("kernel", nargs="+", help="as --kernel of run: 6.1.0-47, trixie:6.12, sid:latest, 6.12.117+deb13 ...")
    f.set_defaults(func=cmd_fetch)
    g = ks.add_parser("gc", help="kill qemu of dead kernel runs and remove their scratch directories")
    g.set_defaults(func=cmd_gc)
