"""A copy of what the wheel is built from: setuptools writes build/ and *.egg-info next
to the sources, and the checkout must stay as it was."""

from __future__ import annotations

import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "bot", "handlers", "services", "templates")


def copy_sources(into: Path) -> Path:
    """`into`/ (made here) with the package's sources, no __pycache__; returns `into`."""
    into.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, into / name,
                            ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, into / name)
    return into
