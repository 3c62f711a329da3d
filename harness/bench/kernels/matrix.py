"""Pure part of the kernel matrix: the named suites run inside a guest, the guest's script, what a
run directory holds afterwards, and the cross-kernel table with ratios to a reference kernel.

A run directory (``--out``) has one subdirectory per kernel; each holds what the guest wrote:
``release`` (``uname -r``), ``<step>.json`` bench baselines, ``<step>.verdicts.json`` (conformance:
each case's verdict, from ``conformance --json``), ``<step>.out`` / ``<step>.rc`` per step, and ``kernel.json`` (kernel, mode, vCPUs) written by the host before the boot.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from harness.bench.baseline import Baseline, fmt, from_dict
from harness.errors import ConfigError


@dataclass(frozen=True)
class Step:
    """One command of a suite: ``bench`` steps leave a baseline JSON, ``conformance`` steps a verdict."""

    name: str
    kind: str  # bench | conformance
    args: tuple[str, ...]


# Small on purpose: TCG is ~10-50x slower than the host and the machine is shared.
SUITES: dict[str, tuple[Step, ...]] = {
    "smoke": (Step("canaries", "bench", ("bench", "canaries", "--smoke", "--repeat", "2", "--canary", "ipset_swap")),),
    "canaries": (Step("canaries", "bench", ("bench", "canaries", "--smoke", "--repeat", "3",
                                            "--canary", "ipset_swap", "--canary", "iptables_calls")),),
    "conformance": tuple(
        Step(f"conformance-{b}", "conformance",
             ("conformance", "--backend", b, "--quiet", "cases/conformance/01-default-deny-ingress.yaml",
              "cases/conformance/07-allow-from-namespace.yaml")) for b in ("nft", "legacy")),
}
# kube-network-policies' NATIVE datapath (nft queue statement, verdicts with NFQA_CT labels):
# the host lacks nft_queue, Debian's 6.1 kernels have it
SUITES["knp"] = (Step("conformance-knp", "conformance",
                      ("conformance", "--engine", "kube-network-policies", "--quiet",
                       "cases/conformance/01-default-deny-ingress.yaml",
                       "cases/conformance/17-named-port-ingress.yaml")),
                  Step("queue", "bench", ("bench", "queue", "--smoke")))
SUITES["datapath"] = (Step("datapath", "bench", ("bench", "datapath", "--smoke", "--repeat", "2")),)
SUITES["default"] = SUITES["canaries"] + SUITES["conformance"]
# kube-router's IPVS service proxy (harness/cluster/ipvs_proxy): needs CONFIG_IP_VS, which the host may lack
SUITES["ipvs"] = (Step("ipvs", "bench", ("bench", "ipvs", "--smoke", "--repeat", "2")),)

PASSED_RE = re.compile(r"^(\d+)/(\d+) cases passed", re.M)


def suite_steps(name: str) -> tuple[Step, ...]:
    """The steps of a named suite; ConfigError naming ``--suite`` if unknown."""
    if name not in SUITES:
        raise ConfigError(None, "--suite", f"{name!r} is not one of {', '.join(sorted(SUITES))}")
    return SUITES[name]


def step_command(step: Step, nph: str, outdir: str) -> str:
    """Shell for one step, run from the repository: output, exit code and (bench) baseline land in ``outdir``."""
    args = list(step.args)
    if step.kind == "bench":
        args += ["--quiet", "--out", f"{outdir}/{step.name}.json"]
    else:
        args[1:1] = ["--json", f"{outdir}/{step.name}.verdicts.json"]
    cmd = " ".join(shlex.quote(a) for a in [nph, *args])
    o = shlex.quote(f"{outdir}/{step.name}")
    return f"{cmd} > {o}.out 2>&1; echo $? > {o}.rc;"


def guest_script(steps: tuple[Step, ...], nph: str, repo: str, outdir: str, prelude: str) -> str:
    """The whole guest command: load modules, record ``uname -r``, run each step, then ``done``."""
    od = shlex.quote(outdir)
    body = " ".join(step_command(s, nph, outdir) for s in steps)
    return (f"{prelude} export PYTHONDONTWRITEBYTECODE=1; cd {shlex.quote(repo)} || exit 1; "
            f"uname -r > {od}/release; {body} touch {od}/done")


@dataclass
class KernelResult:
    """What one kernel's directory says: identity, baselines per bench step, verdicts per conformance step."""

    name: str
    release: str
    mode: str  # host | kvm | tcg
    cpus: int
    baselines: dict[str, Baseline] = field(default_factory=dict)
    verdicts: dict[str, str] = field(default_factory=dict)
    # conformance verdict per case: "<step>/<case id>" -> pass | FAIL | ERROR (from <step>.verdicts.json)
    cases: dict[str, str] = field(default_factory=dict)
    error: str = ""

    @property
    def label(self) -> str:
        return f"{self.release or self.name} ({self.mode}, {self.cpus} {'CPU' if self.mode == 'host' else 'vCPU'})"


def verdict(rc_text: str | None, out_text: str) -> str:
    """``pass 2/2``, ``FAIL 1/2``, or ``ERROR rc=N`` for a conformance step."""
    m = PASSED_RE.search(out_text)
    rc = (rc_text or "").strip()
    if m:
        return f"{'pass' if rc == '0' and m.group(1) == m.group(2) else 'FAIL'} {m.group(1)}/{m.group(2)}"
    return f"ERROR rc={rc or 'none'}"


def collect(kdir: Path, steps: tuple[Step, ...]) -> KernelResult:
    """Read one kernel's directory back into a KernelResult (missing files become an error/verdict)."""
    meta = json.loads((kdir / "kernel.json").read_text())
    r = KernelResult(meta["name"], meta.get("release", ""), meta["mode"], int(meta["cpus"]),
                     error=meta.get("error", ""))
    rel = kdir / "release"
    if rel.exists():
        r.release = rel.read_text().strip()
    for s in steps:
        rc = kdir / f"{s.name}.rc"
        out = kdir / f"{s.name}.out"
        out_text = out.read_text(errors="replace") if out.exists() else ""
        if s.kind == "bench":
            j = kdir / f"{s.name}.json"
            if j.exists():
                r.baselines[s.name] = from_dict(json.loads(j.read_text()), str(j))
            elif not r.error:
                last = next((ln for ln in reversed(out_text.splitlines()) if ln.strip()), "no output")
                r.error = f"{s.name}: no baseline (rc={rc.read_text().strip() if rc.exists() else 'none'}): {last}"
        else:
            r.verdicts[s.name] = verdict(rc.read_text() if rc.exists() else None, out_text)
            r.cases.update(case_verdicts(kdir / f"{s.name}.verdicts.json", s.name))
    return r


def case_verdicts(path: Path, step: str) -> dict[str, str]:
    """``{"<step>/<case id>": verdict}`` from a ``conformance --json`` file; {} if the step wrote
    none (its summary verdict says why); ConfigError naming the file if it is not that JSON."""
    if not path.exists():
        return {}
    try:
        cases = json.loads(path.read_text())["cases"]
        return {f"{step}/{c['case']}": c["verdict"] for c in cases}
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(str(path), "cases", f"not a conformance --json file: {e}") from None


def case_changes(base: KernelResult, new: KernelResult) -> list[str]:
    """One line per conformance case whose verdict differs between two kernels (a case present on
    one only counts as ``missing`` on the other): each one is a behaviour change, a regression."""
    out = []
    for key in sorted(set(base.cases) | set(new.cases)):
        a, b = base.cases.get(key, "missing"), new.cases.get(key, "missing")
        if a != b:
            out.append(f"{key}: {a} -> {b}")
    return out


def label_baselines(kdir: Path, steps: tuple[Step, ...], mode: str, cpus: int) -> int:
    """Stamp each bench baseline a guest brought back with ``machine.virtualization`` (kvm | tcg)
    and ``machine.vcpus``, so the figure carries its mode wherever it goes (``compare``, plots);
    return how many were stamped."""
    n = 0
    for s in steps:
        j = kdir / f"{s.name}.json"
        if s.kind == "bench" and j.exists():
            data = json.loads(j.read_text())
            data.setdefault("machine", {}).update(virtualization=mode, vcpus=cpus)
            j.write_text(json.dumps(data, indent=1) + "\n")
            n += 1
    return n


def reference_of(results: list[KernelResult], name: str | None) -> KernelResult | None:
    """The reference kernel: the named one, else the first VM kernel (a host run is never the
    reference of VM runs: different mode)."""
    if name:
        for r in results:
            if name in (r.name, r.release):
                return r
        raise ConfigError(None, "--reference", f"{name!r} is not a kernel of this run")
    return next((r for r in results if r.mode != "host"), results[0] if results else None)


def cross_table(results: list[KernelResult], reference: str | None = None) -> str:
    """Markdown: one row per metric, one column per kernel (median, and ×ratio to the reference
    when both ran in the same mode); then conformance verdicts per kernel."""
    ref = reference_of(results, reference)
    metrics = sorted({f"{step}/{m}" for r in results for step, b in r.baselines.items() for m in b.metrics})
    head = ["metric"] + [r.label + (" ref" if r is ref else "") for r in results]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key in metrics:
        step, m = key.split("/", 1)
        base = ref.baselines.get(step).metrics.get(m) if ref and step in ref.baselines else None
        cells = [key]
        for r in results:
            met = r.baselines[step].metrics.get(m) if step in r.baselines else None
            if met is None:
                cells.append("—")
                continue
            cell = f"{fmt(met.median)} {met.unit}"
            # a ratio of slopes near or below zero (ns per rule inside TCG noise) means nothing
            if base is not None and r is not ref and r.mode == ref.mode and base.median > 0 and met.median > 0:
                cell += f" ×{met.median / base.median:.2f}"
            cells.append(cell)
        lines.append("| " + " | ".join(cells) + " |")
    verdict_steps = sorted({s for r in results for s in r.verdicts})
    for s in verdict_steps:
        lines.append("| " + " | ".join([s] + [r.verdicts.get(s, "—") for r in results]) + " |")
    # per case: a verdict that differs from the reference kernel's is marked, whatever the mode
    # (a verdict is behaviour, not a timing: comparable across host, KVM and TCG)
    for key in sorted({k for r in results for k in r.cases}):
        cells = [key]
        for r in results:
            v = r.cases.get(key, "—")
            if ref and r is not ref and v != ref.cases.get(key, "—"):
                v += " ≠ref"
            cells.append(v)
        lines.append("| " + " | ".join(cells) + " |")
    errors = [f"- {r.label}: {r.error}" for r in results if r.error]
    if errors:
        lines += ["", "errors:", *errors]
    if ref:
        lines += ["", f"ratios (×) to {ref.label}, only between kernels booted in the same mode; "
                      "TCG figures are emulated-CPU times, never comparable to host or KVM ones."]
    return "\n".join(lines)
