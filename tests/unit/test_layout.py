"""The house rules of the source tree (issue 7): small modules, capabilities in their own
packages, and the machine lifecycle reaching features only through parts."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MAX_LINES = 350


def _modules(*roots: str) -> list[Path]:
    return sorted(p for root in roots for p in (REPO / root).rglob("*.py")
                  if "__pycache__" not in p.parts)


def test_no_module_is_over_350_lines():
    long = {str(p.relative_to(REPO)): n for p in _modules("bot", "handlers", "services")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}, f"split these by concern: {long}"


def test_services_are_packages_by_capability():
    packages = {p.name for p in (REPO / "services").iterdir()
                if (p / "__init__.py").is_file()}
    assert {"core", "machines", "network", "ssh", "docker", "nesting", "health",
            "webhooks"} <= packages
    loose = [p.name for p in (REPO / "services").glob("*.py") if p.name != "__init__.py"]
    assert loose == [], f"modules outside a capability package: {loose}"


def test_the_lifecycle_reaches_features_only_through_parts():
    for module in ("lifecycle", "power", "reconfigure", "teardown"):
        path = REPO / "services" / "machines" / f"{module}.py"
        if not path.exists():
            continue
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
        features = sorted(m for m in imported if m.split(".")[:2] in (
            ["services", "network"], ["services", "ssh"], ["services", "docker"],
            ["services", "nesting"], ["services", "health"]))
        assert features == [], f"{module}.py imports {features}: call a MachinePart instead"
