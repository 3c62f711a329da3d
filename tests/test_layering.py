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
    for path in sorted((root / package.replace(".", "/")).rglob("*.py")):
        module = module_name(path, root)
        for line, name in imported_modules(path.read_text(), module, path.name == "__init__.py"):
            if not ok(name):
                found.append(f"{path.relative_to(root)}:{line} imports {name}")
    return found


@pytest.mark.parametrize(("package", "allowed"), LAYERS, ids=[p for p, _ in LAYERS])
def test_layer_imports_only_what_its_rule_allows(package, allowed):
    assert (ROOT / package.replace(".", "/")).is_dir()
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
