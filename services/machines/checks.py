"""What machines need from the host: nspawn, cgroups, overlayfs, inotify, disk, programs."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from services.core import host
from services.core.doctor import Check, free_bytes, read_number
from services.machines import capacity
from services.machines.images import ImageConfig
from services.machines.lifecycle import MachinesConfig
from services.machines.syscall_filter import SYSTEM_PYTHON

MIN_SYSTEMD = 245  # --notify-ready, --settings=trusted, Bridge= in .nspawn files
INOTIFY_PER_MACHINE = 7  # seen here: 128 instances ran out at ~17 booted machines
MIN_FREE_BYTES = 2 * 2**30
PROGRAMS = ("systemd-nspawn", "debootstrap", "mount", "umount", "tar", "cp", "nft", "ip",
            "ping")


async def machine_checks(machines: MachinesConfig, images: ImageConfig) -> list[Check]:
    return [await _nspawn(), await _syscall_filter(), _cgroups(), _overlayfs(),
            _user_namespaces(), _inotify(), *_programs(), *_disk(machines, images),
            _capacity(machines)]


def _capacity(machines: MachinesConfig) -> Check:
    """What the host has for machines (and machines inside them): CPUs, memory the
    kernel can hand out now, free disk against [machines] min_free_disk."""
    free = min(free_bytes(d)[1] for d in (machines.machines_dir, machines.state_dir))
    available = capacity.memory_available()
    return Check("capacity", free >= machines.min_free_disk,
                 f"{capacity.cpus()} CPUs, "
                 f"{(available or 0) / 2**30:.1f} GiB memory available, "
                 f"{free / 2**30:.1f} GiB free for machines "
                 f"(creates are refused below {machines.min_free_disk / 2**30:.1f} GiB)",
                 "free disk space, or lower [machines] min_free_disk")


async def _syscall_filter() -> Check:
    """Every machine starts under syscall_filter.py, which needs libseccomp's bindings
    in the system python."""
    result = await host.run([SYSTEM_PYTHON, "-I", "-c", "import seccomp"], check=False,
                            timeout=10)
    return Check("syscall filter", result.returncode == 0,
                 "libseccomp's Python bindings are installed" if result.returncode == 0
                 else f"{SYSTEM_PYTHON} cannot import seccomp: no machine can start",
                 "apt-get install python3-seccomp (or `make run`)")


async def _nspawn() -> Check:
    if shutil.which("systemd-nspawn", path=host.BASE_ENV["PATH"]) is None:
        return Check("systemd-nspawn", False, "not installed",
                     "apt-get install systemd-container")
    result = await host.run(["systemd-nspawn", "--version"], check=False, timeout=10)
    match = re.match(r"systemd (\d+)", result.stdout)
    version = int(match.group(1)) if match else 0
    return Check("systemd-nspawn", version >= MIN_SYSTEMD, f"systemd {version or '?'}",
                 f"systemd {MIN_SYSTEMD} or newer is needed (Debian 11 or later)")


def _cgroups() -> Check:
    root = Path("/sys/fs/cgroup")
    if (root / "cgroup.controllers").exists():
        controllers = (root / "cgroup.controllers").read_text().split()
        layout, limits = "unified (cgroup v2)", {"cpu", "memory"} <= set(controllers)
    else:
        layout = "hybrid (v1 controllers, v2 for systemd)" if (root / "unified").exists() \
            else "legacy (cgroup v1)"
        limits = (root / "cpu").is_dir() and (root / "memory").is_dir()
    return Check("cgroups", limits, f"{layout}; cpu and memory controllers "
                 f"{'available' if limits else 'missing'} (for --cpu and --memory)",
                 "boot with the cpu and memory controllers enabled "
                 "(cgroup_enable=memory on the kernel command line)")


def _overlayfs() -> Check:
    filesystems = Path("/proc/filesystems").read_text()
    ok = any(line.split()[-1] == "overlay" for line in filesystems.splitlines() if line)
    return Check("overlayfs", ok, "available" if ok else "not in /proc/filesystems",
                 "modprobe overlay (without it, every create copies the whole image)")


def _user_namespaces() -> Check:
    allowed = read_number("/proc/sys/user/max_user_namespaces") or 0
    return Check("user namespaces", allowed > 0, f"user.max_user_namespaces = {allowed}",
                 "sysctl -w user.max_user_namespaces=10000")


def _inotify() -> Check:
    instances = read_number("/proc/sys/fs/inotify/max_user_instances") or 0
    room = instances // INOTIFY_PER_MACHINE
    return Check("inotify", room >= 64,
                 f"fs.inotify.max_user_instances = {instances}: room for about {room} "
                 "booted machines (each machine's systemd holds some, all as root)",
                 "sysctl -w fs.inotify.max_user_instances=1024, and persist it in "
                 "/etc/sysctl.d/")


def _programs() -> list[Check]:
    missing = [p for p in PROGRAMS if shutil.which(p, path=host.BASE_ENV["PATH"]) is None]
    packages = sorted({host.PACKAGES.get(p, p) for p in missing})
    return [Check("programs", not missing,
                  f"missing: {', '.join(missing)}" if missing else "all installed",
                  f"apt-get install {' '.join(packages)} (or `make run`)")]


def _disk(machines: MachinesConfig, images: ImageConfig) -> list[Check]:
    checks = []
    seen = set()
    for what, path in (("images", images.images_dir), ("machines", machines.machines_dir),
                       ("state", machines.state_dir)):
        where, free = free_bytes(path)
        if where in seen:
            continue
        seen.add(where)
        checks.append(Check(f"disk ({what})", free >= MIN_FREE_BYTES,
                            f"{free / 2**30:.1f} GiB free at {where}",
                            f"free space under {where}: at least 2 GiB (an image is "
                            "~250 MB, a machine's changes grow with its use)"))
    return checks
