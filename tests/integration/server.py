"""A real systemd host for ctbot as a service: a booted --nesting machine (systemd is its
PID 1, machined runs in it) with ctbot's venv installed from a wheelhouse built here (the
machine has no package index). Shared by tests/integration/test_systemd_host.py and
bench/service_ready.py."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

from bot.settings import load_settings
from services.machines.images import Images
from tests.integration.wheelhouse import build_wheelhouse
from tests.scenario.processes import run_ctbot

# What a Debian server running ctbot has beyond the test image: what `make` installs
# with apt (Makefile APT_PACKAGES) less the build tools: Python with venv (pip comes with
# it), python3-seccomp (the syscall filter nspawn runs under), nft, the ping ctbot's
# health checks compare with. systemd-container comes with --nesting.
SERVER_PACKAGES = ("python3", "python3-venv", "python3-seccomp", "nftables", "iproute2",
                   "iputils-ping", "util-linux", "mount", "openssh-client")


def sh(leader: int, script: str, *, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """A root shell on the machine, as `machinectl shell` gives one: its namespaces, a
    clean environment (nothing of the host's PATH or venv)."""
    return subprocess.run(
        ["nsenter", f"--target={leader}", "--all", "--", "env", "-i",
         "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root",
         "LANG=C.UTF-8", "/bin/sh", "-c", script],
        capture_output=True, text=True, timeout=timeout, check=False)


def ok(leader: int, script: str, *, timeout: float = 60) -> str:
    """`sh`, asserting success; its stdout."""
    result = sh(leader, script, timeout=timeout)
    assert result.returncode == 0, f"{script}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def make_server(env: Mapping[str, str], name: str, *, base_image: str, work: Path,
                venv: bool = True) -> int:
    """Create `name` (--nesting, on the base image plus SERVER_PACKAGES, derived once and
    cached with the test images) with a wheelhouse at /root/wheels, and (``venv``)
    ctbot's venv at /opt/ctbot installed from it; returns the machine's leader PID.
    ctbot itself is not installed as a service yet: that is what the callers do."""
    settings = load_settings(Path(env["CTBOT_CONFIG"]), env)
    image = asyncio.run(Images(settings.images).derive(base_image, "server",
                                                       SERVER_PACKAGES)).name
    made = run_ctbot("cmd", f"create {name} --nesting --image {image}", env=env, timeout=900)
    assert made.returncode == 0, made.stdout + made.stderr
    shown = run_ctbot("cmd", f"status {name}", "--json", env=env)
    leader = int(json.loads(shown.stdout)["leader_pid"])
    wheels = build_wheelhouse(work / "wheels")
    shutil.copytree(wheels, Path(f"/proc/{leader}/root/root/wheels"))
    if venv:
        ok(leader, "python3 -m venv /opt/ctbot && /opt/ctbot/bin/pip install -q "
                   "--disable-pip-version-check --no-index --find-links /root/wheels ctbot",
           timeout=600)
    return leader


def readme_block(fence: str) -> list[str]:
    """The command lines of the README's ```FENCE blocks, comments cut."""
    import re

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    lines = []
    for block in re.findall(rf"^```{fence}\n(.*?)^```", readme, re.M | re.S):
        for line in block.splitlines():
            command = line.split("  #", 1)[0].strip()
            if command and not command.startswith("#"):
                lines.append(command)
    return lines
