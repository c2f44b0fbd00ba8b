"""Each machine's own cgroup, in every hierarchy, made and joined before nspawn starts
(the direct supervisor; under systemd the unit gets its own cgroup and these limits as
unit properties).

    HIERARCHY/ctbot/GROUP            the machine's limits: cpu, memory, pids, devices
    HIERARCHY/ctbot/GROUP/machine    where nspawn and the machine run (v1 controllers)

nspawn gives the machine a cgroup namespace rooted where it starts, so the limits sit
one level *above* what the machine can see or write: its root cannot lift them by
mounting a controller itself. Every hierarchy gets the machine's own group — on a hybrid
host started from the cgroup2 root, nspawn would otherwise put every machine into one
shared ``/payload`` (seen on these hosts). Devices follow systemd-nspawn@.service's
``DevicePolicy=closed`` (the pseudo devices, ptys, /dev/net/tun) without the loop and
device-mapper entries, which serve only ``--image`` — ctbot never uses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from services.core.errors import InternalError

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
CFS_PERIOD_US = 100_000
DEFAULT_PIDS = 16384  # TasksMax= of systemd-nspawn@.service
LEAF = "machine"
# devices.allow lines (Documentation/admin-guide/cgroup-v1/devices.rst): type major:minor
# access. systemd-nspawn@.service: DevicePolicy=closed ("/dev/null, /dev/zero, /dev/full,
# /dev/random, /dev/urandom, /dev/tty, /dev/ptmx"), DeviceAllow=/dev/net/tun rwm,
# char-pts rw. "m" lets nspawn create these nodes in the machine's /dev.
ALLOWED_DEVICES = (
    "c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm", "c 1:9 rwm",  # null … urandom
    "c 5:0 rwm", "c 5:2 rwm",  # tty, ptmx
    "c 136:* rwm",  # pts (char-pts)
    "c 10:200 rwm",  # net/tun
)


@dataclass(frozen=True, slots=True)
class Limits:
    cpu: float | None = None  # CPUs' worth of time, e.g. 1.5
    memory_bytes: int | None = None
    pids: int = DEFAULT_PIDS


def unified_only() -> bool:
    return (CGROUP_ROOT / "cgroup.controllers").is_file()


def group_name(name: str, root: Path) -> str:
    """One cgroup per machine *root*: two ctbot instances (say, production and a test
    run with its own machines_dir) may both have a `web1`, never the same root."""
    return f"{name}-{hashlib.sha256(str(root).encode()).hexdigest()[:8]}"


def hierarchies() -> list[Path]:
    """Every mounted hierarchy: the cgroup2 root on a unified host; on a hybrid or legacy
    host each v1 controller, name=systemd, and cgroup2 at unified/ when present."""
    if unified_only():
        return [CGROUP_ROOT]
    return sorted(p for p in CGROUP_ROOT.iterdir()
                  if p.is_dir() and not p.is_symlink() and (p / "cgroup.procs").exists())


def _is_v1_controller(hierarchy: Path) -> bool:
    return not unified_only() and hierarchy.name not in ("systemd", "unified")


def _controllers(hierarchy: Path) -> set[str]:
    """The v1 controllers a hierarchy's directory holds: ``cpu,cpuacct`` is both (the
    usual Debian layout, with ``cpu`` and ``cpuacct`` symlinks beside it)."""
    return set(hierarchy.name.split(","))


def prepare(group: str, limits: Limits) -> list[Path]:
    """Create the machine's group in every hierarchy, with its limits; returns the
    directories nspawn joins. InternalError if the kernel refuses.

    Groups left by an earlier run (a machine that powered itself off never reaches
    ``remove``) are removed first: a v1 devices group with children refuses a new
    ``devices.deny`` (EINVAL), and stale limits must not outlive a change."""
    remove(group)
    joined = []
    try:
        for hierarchy in hierarchies():
            top = hierarchy / "ctbot"
            top.mkdir(exist_ok=True)
            own = top / group
            if hierarchy == CGROUP_ROOT and unified_only():
                with contextlib.suppress(OSError):  # controllers for the children
                    (top / "cgroup.subtree_control").write_text("+cpu +memory +pids")
                own.mkdir(exist_ok=True)
                _set_v2(own, limits)
                joined.append(own)
                continue
            own.mkdir(exist_ok=True)
            if not _is_v1_controller(hierarchy):
                joined.append(own)  # nspawn makes its payload/supervisor groups below
                continue
            controllers = _controllers(hierarchy)
            if "cpuset" in controllers:
                _inherit_cpuset(hierarchy, top)
                _inherit_cpuset(top, own)
            for controller in sorted(controllers):
                _set_v1(controller, own, limits)
            leaf = own / LEAF
            leaf.mkdir(exist_ok=True)
            if "cpuset" in controllers:
                _inherit_cpuset(own, leaf)
            joined.append(leaf)
    except OSError as exc:
        raise InternalError(f"cannot set up the cgroups of {group}: {exc}") from exc
    return joined


def _set_v2(own: Path, limits: Limits) -> None:
    if limits.cpu is not None:
        (own / "cpu.max").write_text(f"{int(limits.cpu * CFS_PERIOD_US)} {CFS_PERIOD_US}")
    if limits.memory_bytes is not None:
        (own / "memory.max").write_text(str(limits.memory_bytes))
    (own / "pids.max").write_text(str(limits.pids))


def _set_v1(controller: str, own: Path, limits: Limits) -> None:
    # One controller of the hierarchy's (cpu of cpu,cpuacct); the others need nothing.
    if controller == "cpu" and limits.cpu is not None:
        (own / "cpu.cfs_period_us").write_text(str(CFS_PERIOD_US))
        (own / "cpu.cfs_quota_us").write_text(str(int(limits.cpu * CFS_PERIOD_US)))
    elif controller == "memory" and limits.memory_bytes is not None:
        (own / "memory.limit_in_bytes").write_text(str(limits.memory_bytes))
    elif controller == "pids":
        (own / "pids.max").write_text(str(limits.pids))
    elif controller == "devices":
        (own / "devices.deny").write_text("a")  # children inherit the list at creation
        for rule in ALLOWED_DEVICES:
            (own / "devices.allow").write_text(rule)


def _inherit_cpuset(parent: Path, child: Path) -> None:
    """A v1 cpuset group takes no process until it has CPUs and memory nodes."""
    for name in ("cpuset.cpus", "cpuset.mems"):
        if not (child / name).read_text().strip():
            (child / name).write_text((parent / name).read_text().strip())


def join_function(dirs: list[Path]) -> Callable[[], None]:
    """A preexec function that moves the child into ``dirs`` before it execs nspawn:
    nspawn and everything it forks are inside the limits from their first instruction."""
    paths = [str(d / "cgroup.procs") for d in dirs]

    def join() -> None:
        for path in paths:
            fd = os.open(path, os.O_WRONLY)
            try:
                os.write(fd, b"0")  # "0": the writing process itself
            finally:
                os.close(fd)

    return join


def remove(group: str, *, quiet: bool = False) -> bool:
    """Remove the machine's groups (deepest first) once nothing runs in them; whether
    all are gone. A group whose last process is still exiting answers EBUSY for a moment
    (``remove_when_empty`` waits that out)."""
    gone = True
    for hierarchy in hierarchies():
        own = hierarchy / "ctbot" / group
        if not own.is_dir():
            continue
        for directory, _, _ in sorted(os.walk(own), key=lambda w: -len(w[0])):
            try:
                os.rmdir(directory)
            except FileNotFoundError:
                pass
            except OSError as exc:
                gone = False
                if not quiet:
                    log.warning("cannot remove cgroup path=%s error=%s", directory,
                                exc.strerror)
    return gone


async def remove_when_empty(group: str, *, timeout: float = 5.0) -> None:
    """`remove`, tried again for up to `timeout` seconds while a group is busy (the
    machine's last processes are being reaped): a machine leaves no cgroup behind."""
    deadline = time.monotonic() + timeout
    while not remove(group, quiet=True):
        if time.monotonic() > deadline:
            remove(group)  # once more, saying what stays
            return
        await asyncio.sleep(0.05)


def usage(group: str) -> dict[str, int]:
    """What the machine uses now: ``pids`` (tasks), ``memory_bytes``, where readable."""
    found: dict[str, int] = {}
    for hierarchy in hierarchies():
        own = hierarchy / "ctbot" / group
        for key, name in (("pids", "pids.current"), ("memory_bytes", "memory.current"),
                          ("memory_bytes", "memory.usage_in_bytes")):
            with contextlib.suppress(OSError, ValueError):
                found.setdefault(key, int((own / name).read_text()))
    return found
