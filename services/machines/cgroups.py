"""CPU and memory limits for machines run by the direct backend (no systemd PID 1).

Under systemd the unit carries CPUQuota=/MemoryMax=. Without it, ctbot makes one cgroup
per machine itself — ``ctbot/NAME`` in the v2 hierarchy, or in the v1 ``cpu`` and
``memory`` hierarchies on hybrid hosts — and nspawn is started inside it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from services.core.errors import InternalError

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
CFS_PERIOD_US = 100_000


@dataclass(frozen=True, slots=True)
class Limits:
    cpu: float | None = None  # CPUs' worth of time, e.g. 1.5
    memory_bytes: int | None = None

    @property
    def any(self) -> bool:
        return self.cpu is not None or self.memory_bytes is not None


def _unified() -> bool:
    return (CGROUP_ROOT / "cgroup.controllers").is_file()


def group_name(name: str, root: Path) -> str:
    """One cgroup per machine *root*: two ctbot instances (say, production and a test
    run with its own machines_dir) may both have a `web1`, never the same root."""
    return f"{name}-{hashlib.sha256(str(root).encode()).hexdigest()[:8]}"


def cgroup_dirs(group: str) -> list[Path]:
    if _unified():
        return [CGROUP_ROOT / "ctbot" / group]
    return [CGROUP_ROOT / "cpu" / "ctbot" / group, CGROUP_ROOT / "memory" / "ctbot" / group]


def prepare(group: str, limits: Limits) -> list[Path]:
    """Create the machine's cgroup(s) with its limits; returns the dirs to join."""
    if not limits.any:
        return []
    dirs = cgroup_dirs(group)
    try:
        if _unified():
            (CGROUP_ROOT / "ctbot").mkdir(exist_ok=True)
            with contextlib.suppress(OSError):  # enable controllers for children
                (CGROUP_ROOT / "ctbot" / "cgroup.subtree_control").write_text("+cpu +memory")
            dirs[0].mkdir(exist_ok=True)
            if limits.cpu is not None:
                quota = int(limits.cpu * CFS_PERIOD_US)
                (dirs[0] / "cpu.max").write_text(f"{quota} {CFS_PERIOD_US}")
            if limits.memory_bytes is not None:
                (dirs[0] / "memory.max").write_text(str(limits.memory_bytes))
        else:
            cpu_dir, memory_dir = dirs
            for d in dirs:
                d.mkdir(parents=True, exist_ok=True)
            if limits.cpu is not None:
                (cpu_dir / "cpu.cfs_period_us").write_text(str(CFS_PERIOD_US))
                (cpu_dir / "cpu.cfs_quota_us").write_text(str(int(limits.cpu * CFS_PERIOD_US)))
            if limits.memory_bytes is not None:
                (memory_dir / "memory.limit_in_bytes").write_text(str(limits.memory_bytes))
    except OSError as exc:
        raise InternalError(f"cannot set resource limits for {group}: {exc}") from exc
    return dirs


def join_function(dirs: list[Path]) -> Callable[[], None]:
    """A preexec function that moves the child into ``dirs`` before it execs nspawn.

    Joining before exec (not after spawn) means nspawn and everything it forks are
    inside the limits from their first instruction.
    """
    paths = [str(d / "cgroup.procs") for d in dirs]

    def join() -> None:
        for path in paths:
            fd = os.open(path, os.O_WRONLY)
            try:
                os.write(fd, b"0")  # "0": the writing process itself
            finally:
                os.close(fd)

    return join


def remove(group: str) -> None:
    """Remove the machine's cgroups once nothing runs in them."""
    for d in cgroup_dirs(group):
        try:
            d.rmdir()
        except FileNotFoundError:
            continue  # the machine had no limits
        except OSError as exc:
            log.warning("cannot remove cgroup path=%s error=%s", d, exc.strerror)
