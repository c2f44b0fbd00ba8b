"""A wheelhouse of this checkout: ctbot's wheel and every dependency's, for installing
ctbot where there is no package index (a machine: tests never give machines outbound
network). The dependencies' wheels are cached under /var/cache/ctbot/wheels/HASH (HASH of
pyproject's dependency list and this Python's version); ctbot's own wheel is built fresh,
from a copy of the sources, so that the checkout gets no build/ or *.egg-info."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from tests.sources import copy_sources

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("CTBOT_TEST_WHEELS_DIR", "/var/cache/ctbot/wheels"))


def build_wheelhouse(into: Path) -> Path:
    """`into`/ with ctbot-*.whl and its dependencies' wheels; returns `into`."""
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "dependencies"]
    key = hashlib.sha256(repr((sorted(dependencies), sys.version_info[:2])).encode())
    cached = CACHE / key.hexdigest()[:12]
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    if not cached.is_dir():
        partial = cached.with_name(cached.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        subprocess.run([*pip, "wheel", "--wheel-dir", str(partial), *dependencies],
                       check=True, timeout=900)
        partial.rename(cached)
    into.mkdir(parents=True, exist_ok=True)
    for wheel in cached.glob("*.whl"):
        shutil.copy2(wheel, into / wheel.name)
    source = into.parent / f"{into.name}-src"
    shutil.rmtree(source, ignore_errors=True)
    copy_sources(source)
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--wheel-dir",
                    str(into), str(source)], check=True, timeout=300, cwd=source)
    shutil.rmtree(source)
    return into
