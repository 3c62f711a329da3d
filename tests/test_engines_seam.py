"""The seam holds: outside its own package, only the registry and the CLI's command list import
the kube-router engine (a module that needs it gets it handed in). Pure (reads the source)."""

from __future__ import annotations

import ast
from pathlib import Path

HARNESS = Path(__file__).resolve().parent.parent / "harness"
ENGINE_PACKAGE = "harness.engines.kube_router"
ALLOWED = {
    "harness/engines/registry.py",  # maps the name to the engine
    "harness/cli.py",  # names the engine's own command modules (render, bench render, bench apply)
}


def importers() -> set[str]:
    out = set()
    for path in HARNESS.rglob("*.py"):
        rel = path.relative_to(HARNESS.parent).as_posix()
        if rel.startswith("harness/engines/kube_router/"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):  # also imports inside functions
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom)
                     else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            if any(n == ENGINE_PACKAGE or n.startswith(ENGINE_PACKAGE + ".") for n in names):
                out.add(rel)
    return out


def test_only_the_registry_and_the_cli_import_the_kube_router_engine():
    found = importers()
    assert "harness/engines/registry.py" in found  # the scan sees imports inside functions too
    assert found <= ALLOWED, sorted(found - ALLOWED)
