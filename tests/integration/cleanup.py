"""Removing what a test session or a benchmark made, even after a failure.

First through ctbot (`destroy --yes` for every machine it lists), then, for whatever is
left, by hand and only below ``base``: kill the nspawn running each root (by PID),
unmount, delete the directory; finally ctbot's nftables table and bridge of that run.
Never `rm -rf` a root that is still mounted: that would delete through the overlay.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

from services import clones
from services.supervisor import find_nspawn_by_root
from tests.scenario.processes import run_ctbot


def remove_everything(env: Mapping[str, str], *, base: Path, bridge: str | None = None,
                      nft_table: str | None = None) -> None:
    listed = run_ctbot("cmd", "list", "--json", env=env, timeout=120)
    if listed.returncode == 0:
        for machine in json.loads(listed.stdout)["machines"]:
            run_ctbot("cmd", f"destroy {machine['name']}", "--yes", env=env, timeout=120)
    machines_dir = base / "machines"
    if machines_dir.is_dir():
        for root in machines_dir.iterdir():
            nspawn = find_nspawn_by_root(root)
            if nspawn is not None:
                os.kill(nspawn.pid, signal.SIGKILL)
                deadline = time.monotonic() + 10
                while nspawn.alive() and time.monotonic() < deadline:
                    time.sleep(0.05)
            if clones.is_mounted(root):
                subprocess.run(["umount", "--lazy", str(root)], check=False)
    if not any(clones.is_mounted(p) for p in machines_dir.glob("*")) \
            if machines_dir.is_dir() else True:
        shutil.rmtree(base, ignore_errors=True)
    if nft_table:
        subprocess.run(["nft", "delete", "table", "inet", nft_table], check=False,
                       capture_output=True)
    if bridge:
        subprocess.run(["ip", "link", "delete", bridge], check=False, capture_output=True)


def leftovers(*, base: Path, bridge: str | None, nft_table: str | None) -> list[str]:
    """What of a run is still on the host (should be nothing after remove_everything)."""
    found = []
    if base.exists():
        found.append(f"directory {base}")
    mounts = Path("/proc/self/mountinfo").read_text()
    if str(base) in mounts:
        found.append(f"mounts below {base}")
    links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout
    if bridge and any(line.split("@")[0].split()[0] == bridge for line in links.splitlines()):
        found.append(f"bridge {bridge}")
    if nft_table:
        tables = subprocess.run(["nft", "list", "tables"], capture_output=True,
                                text=True).stdout
        if f"inet {nft_table}" in tables:
            found.append(f"nftables table {nft_table}")
    return found
