"""The wheel ships the templates package, and templates load through importlib.resources."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from services.core.templating import environment

REPO = Path(__file__).resolve().parents[2]


def test_wheel_contains_every_template(tmp_path):
    had_build_dir = (REPO / "build").exists()
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "-q", "-w", str(tmp_path), str(REPO)],
        check=True, capture_output=True, timeout=120,
    )
    if not had_build_dir:  # setuptools builds in-tree; leave the checkout as it was
        shutil.rmtree(REPO / "build", ignore_errors=True)
    (wheel,) = tmp_path.glob("ctbot-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {f"templates/{p.relative_to(REPO / 'templates')}"
               for p in (REPO / "templates").rglob("*.j2")}
    assert shipped and shipped <= names
    assert {"bot/cli.py", "handlers/dispatch.py", "services/core/store.py"} <= names
    assert not any(n.startswith("tests/") for n in names)


def test_every_template_compiles():
    env = environment()
    for name in env.list_templates(extensions=["j2"]):
        env.get_template(name)
