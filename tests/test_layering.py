"""Which package may import which: every module's imports (also those inside functions) read
with ``ast`` and checked against a small table of layer rules. Pure, no root."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# (package, the harness modules it may import: each entry allows itself and its submodules).
# Anything outside ``harness`` (stdlib, third-party) is always allowed. One row per layer rule.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("harness.kernel", ("harness.errors", "harness.kernel")),  # the ground floor: the door to the kernel
    ("harness.model", ("harness.errors", "harness.model")),  # pure data
    ("harness.outcome", ("harness.errors",)),  # the one outcome vocabulary
    ("harness.oracle", ("harness.errors", "harness.model")),  # the independent reference: no engine
    ("harness.analysis", ("harness.errors", "harness.model", "harness.oracle", "harness.outcome",
                          "harness.analysis")),  # pure
    # the lab realizes the model in the kernel; it knows no scenario, engine or controller
    # (the API server is the lab's control plane: `up --api` starts it; `gc` also sweeps dead
    # kernel-matrix VM runs through their own gc function; `bench lab --services` times the
    # Service path: harness.bench.service_path)
    ("harness.lab", ("harness.argtypes", "harness.errors", "harness.kernel", "harness.model", "harness.outcome",
                     "harness.lab", "harness.cluster.apiserver", "harness.bench.kernels.runs",
                     "harness.bench.service_path")),
    # the report is pure: the scenarios' declarations and the engines' default configuration only
    ("harness.report", ("harness.analysis", "harness.engines.config", "harness.errors", "harness.figures",
                        "harness.outcome", "harness.scenarios.declaration", "harness.report")),
    # the simulation is pure: the churn workload (model), its own cost fit and event loop
    ("harness.sim", ("harness.argtypes", "harness.errors", "harness.figures", "harness.model", "harness.sim")),
    ("harness.figures", ()),  # matplotlib's Agg setup and the figure save, for every plotting layer
    # the kernel matrix's private apt source: argv as data and the resolution, pure
    ("harness.bench.kernels.apt", ("harness.errors", "harness.bench.kernels.vm")),
    ("harness.engines.config", ("harness.errors", "harness.engines.registry")),  # pure data
    # the cluster DNS server and the per-run TLS material: a lab component, no engine or scenario
    ("harness.cluster.dns", ("harness.errors", "harness.kernel", "harness.model", "harness.lab.state",
                             "harness.cluster.child")),
    ("harness.cluster.child", ()),
    ("harness.cluster.tls", ()),
    ("harness.probe.dnswatch", ("harness.analysis.dns_queries", "harness.kernel")),
    ("harness.engines.registry", ("harness.errors", "harness.engines")),
    # kube-router's IPVS proxy: planner, sync and ipvsadm text pure; the applier uses only the kernel door;
    # the experiment builds a lab and writes a bench baseline
    ("harness.cluster.ipvs_proxy.plan", ("harness.errors",)),
    ("harness.cluster.ipvs_proxy.sync", ("harness.errors", "harness.cluster.ipvs_proxy.plan")),
    ("harness.cluster.ipvs_proxy.ipvsadm", ("harness.errors", "harness.cluster.ipvs_proxy.plan",
                                            "harness.cluster.ipvs_proxy.sync")),
    ("harness.cluster.ipvs_proxy.apply", ("harness.errors", "harness.kernel", "harness.cluster.ipvs_proxy")),
    ("harness.cluster.ipvs_proxy", ("harness.errors", "harness.kernel", "harness.lab", "harness.model",
                                    "harness.bench.baseline", "harness.bench.common", "harness.bench.commands",
                                    "harness.cluster.ipvs_proxy")),
    # kube-network-policies: its evaluation, packet parsing and ruleset are pure (the model only);
    # the engine reaches the kernel through harness.kernel (nft, iptables-nft, NFQUEUE)
    ("harness.engines.kube_network_policies.policy", ("harness.model", "harness.controller.events",
                                                      "harness.engines.kube_network_policies.packet")),
    ("harness.engines.kube_network_policies.packet", ()),
    ("harness.engines.kube_network_policies.ruleset", ()),
    ("harness.engines.kube_network_policies", ("harness.controller", "harness.engines.base", "harness.engines.config",
                                               "harness.engines.kube_network_policies", "harness.errors",
                                               "harness.kernel", "harness.model")),
    # kube-router's known departures from the spec per tag: the model, the oracle and the profiles only
    ("harness.engines.kube_router.deviations", ("harness.model", "harness.oracle",
                                                "harness.engines.kube_router.render.profiles")),
    # kube-router's nftables datapath (v2.11 --use-nftables-for-netpol): the render is pure (the
    # iptables renderer's policy semantics, no kernel); the applier reaches the kernel only through
    # harness.kernel; the node engine joins them
    ("harness.engines.kube_router.render.nftables", ("harness.errors", "harness.model",
                                                     "harness.engines.kube_router.render")),
    ("harness.engines.kube_router.apply.nftables", ("harness.errors", "harness.kernel", "harness.model",
                                                    "harness.engines.kube_router.render.nftables")),
    ("harness.engines.kube_router.nftables_node", ("harness.engines.base", "harness.engines.config",
                                                   "harness.engines.kube_router", "harness.model")),
    # service proxies: the model's Services in, the node's kernel out; no engine, lab or scenario
    ("harness.cluster.service_proxy", ("harness.model",)),
    ("harness.cluster.kube_proxy", ("harness.errors", "harness.kernel", "harness.model", "harness.cluster.kube_proxy",
                                    "harness.controller.delivery")),
    # kube-router's sync cost under kube-proxy's rules: the engine through the registry only
    ("harness.bench.proxy_load", ("harness.bench.baseline", "harness.bench.common", "harness.cluster.kube_proxy",
                                  "harness.engines.registry", "harness.engines.config", "harness.model")),
    # a real controller binary per node: the served API is its control plane, the run record
    # keeps its pids; it names no other engine and no scenario
    ("harness.engines.binary", ("harness.errors", "harness.kernel", "harness.model", "harness.engines.base",
                                "harness.engines.config", "harness.engines.binary", "harness.controller.timeline",
                                "harness.cluster.apiserver", "harness.lab.state")),
]


def module_name(path: Path, root: Path = ROOT) -> str:
    """``harness/kernel/rtnl.py`` -> ``harness.kernel.rtnl`` (a package's ``__init__`` is the package)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """``(line, absolute module name)`` of every import in ``source``; ``from a import b`` counts
    as ``a.b`` (b may be a submodule), relative imports are resolved against ``module``."""
    out: list[tuple[int, str]] = []
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            out.extend((node.lineno, f"{base}.{alias.name}") for alias in node.names)
    return out


def violations(package: str, allowed: tuple[str, ...], root: Path = ROOT) -> list[str]:
    """``file:line imports X`` for every import of a harness module outside ``allowed`` made by a
    module of ``package``."""
    def ok(name: str) -> bool:
        if name != "harness" and not name.startswith("harness."):
            return True
        return any(name == a or name.startswith(a + ".") for a in allowed)

    found = []
    base = root / package.replace(".", "/")
    files = [base.with_suffix(".py")] if base.with_suffix(".py").is_file() else sorted(base.rglob("*.py"))
    for path in files:
        module = module_name(path, root)
        for line, name in imported_modules(path.read_text(), module, path.name == "__init__.py"):
            if not ok(name):
                found.append(f"{path.relative_to(root)}:{line} imports {name}")
    return found


@pytest.mark.parametrize(("package", "allowed"), LAYERS, ids=[p for p, _ in LAYERS])
def test_layer_imports_only_what_its_rule_allows(package, allowed):
    base = ROOT / package.replace(".", "/")
    assert base.is_dir() or base.with_suffix(".py").is_file()
    assert violations(package, allowed) == []


def test_the_import_reader_sees_every_form(tmp_path):
    src = ("import os, harness.lab.lab\nfrom harness import errors, model\nfrom . import netns\n"
           "from ..engines.kube_router.apply import restore_text\n"
           "def f():\n    from harness.scenarios import mysql\n")
    assert sorted(n for _, n in imported_modules(src, "harness.kernel.rtnl")) == [
        "harness.engines.kube_router.apply.restore_text", "harness.errors", "harness.kernel.netns",
        "harness.lab.lab", "harness.model", "harness.scenarios.mysql", "os"]
    assert [n for _, n in imported_modules("from . import x\n", "harness.kernel", is_package=True)] == \
        ["harness.kernel.x"]
    pkg = tmp_path / "harness" / "kernel"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("from harness.errors import KernelError\nimport struct\n")
    (pkg / "bad.py").write_text("from harness.kernel import netns\n\ndef f():\n"
                                "    from harness.engines.kube_router.apply.restore_text import IPSetOp\n")
    assert violations("harness.kernel", LAYERS[0][1], tmp_path) == [
        "harness/kernel/bad.py:4 imports harness.engines.kube_router.apply.restore_text.IPSetOp"]


def module_level_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """harness module -> the harness modules it imports when it is imported (imports inside
    functions run later and cannot make an import cycle)."""
    paths = {module_name(p, root): p for p in (root / "harness").rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for module, path in paths.items():
        tree = ast.parse(path.read_text())
        top = ast.Module(body=[n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))], type_ignores=[])
        names = {n for _, n in imported_modules(ast.unparse(top), module, path.name == "__init__.py")}
        # ``from pkg import name`` names a module or an attribute: keep whichever module exists
        graph[module] = {n if n in paths else n.rpartition(".")[0] for n in names} & set(paths) - {module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import cycle found by a depth-first walk, each as the path that closes it. A package
    importing its own submodules (re-exports in ``__init__``) is not a cycle: a submodule's import
    of its parent package is dropped."""
    found: list[list[str]] = []
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            if m.startswith(n + "."):
                continue
            if state.get(n) == 1:
                found.append(path[path.index(n):] + [n])
            elif n not in state:
                visit(n, [*path, n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    return found


def test_no_import_cycles():
    assert cycles(module_level_graph()) == []


def test_the_cycle_finder_finds_one():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"p": {"p.x"}, "p.x": {"p"}}) == []

