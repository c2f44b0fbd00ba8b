"""Running machines: one interface, two backends, chosen automatically.

- ``SystemdSupervisor`` where systemd is PID 1 (production): the machine runs as
  ``systemd-nspawn@NAME.service`` with a drop-in that points it at our root and
  settings, in a slice that carries the resource limits; machined knows it
  (`machinectl list`).
- ``DirectSupervisor`` elsewhere (CI, development VMs, WSL, containers): ctbot starts
  ``systemd-nspawn --register=no --keep-unit …`` detached in its own session, so the
  machine outlives ctbot, and finds it again through /proc.

Both identify a machine's nspawn process by PID *and* start time, and both can find it
from scratch by scanning /proc for the nspawn whose ``--directory=`` is the machine's
root (used when ctbot died between spawning nspawn and recording its PID).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from services.core import host
from services.core.errors import InternalError
from services.core.host import ProcessId
from services.machines import cgroups, consolelog, syscall_filter
from services.machines.cgroups import Limits

log = logging.getLogger(__name__)

NSPAWN = "systemd-nspawn"
# cgroup v2 inside the machine: Docker's runc needs it (ARCHITECTURE.md, measured facts).
NSPAWN_ENV = {"SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1"}
POWEROFF = signal.SIGRTMIN + 4  # systemd's "halt and power off" request


@dataclass(frozen=True, slots=True)
class Launch:
    name: str
    root: Path
    console_log: Path
    notify_socket: Path  # where nspawn reports READY=1 (--notify-ready=yes)
    limits: Limits
    boot_timeout: float = 60.0  # seconds from start to READY=1


class BootFailed(Exception):
    """nspawn exited before the machine was ready."""


class BootTimeout(Exception):
    """The machine's systemd did not report ready in time."""


class Readiness:
    """nspawn's sd_notify channel: READY=1 arrives once the machine's own systemd has
    finished booting. Nothing inside the machine is executed to find out, so a machine
    cannot trick ctbot into running its binaries with the host's privileges."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._sock.bind(str(path))
        self._sock.setblocking(False)

    async def wait(self, nspawn: ProcessId, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + timeout
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise BootTimeout
                try:
                    message = await asyncio.wait_for(loop.sock_recv(self._sock, 4096),
                                                     min(remaining, 0.25))
                except TimeoutError:
                    if not nspawn.alive():
                        raise BootFailed from None
                    continue
                if b"READY=1" in message.split(b"\n"):
                    return
        finally:
            self.close()

    def close(self) -> None:
        self._sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()




def nspawn_argv(launch: Launch, *, register: bool = False) -> list[str]:
    """Everything else comes from NAME.nspawn next to the root (``--settings=trusted``).

    ``register``: announce the machine to systemd-machined (so `machinectl list` shows
    it); only possible where systemd runs, and required off elsewhere. nspawn runs under
    ctbot's narrower filter for bpf(2) and keyctl(2), which a machine's .nspawn may
    allow (Docker, nesting): syscall_filter.py execs it, so the PID stays nspawn's.
    """
    return [
        *syscall_filter.prefix(),
        NSPAWN,
        "--quiet",
        "--keep-unit",
        f"--register={'yes' if register else 'no'}",
        "--settings=trusted",
        "--console=read-only",
        "--notify-ready=yes",
        f"--directory={launch.root}",
        f"--machine={launch.name}",
    ]


class Supervisor(Protocol):
    kind: str

    async def start(self, launch: Launch) -> tuple[ProcessId, Readiness | None]:
        """Start nspawn; the Readiness (None: already ready) tells when it has booted."""
        ...

    async def stop(self, name: str, root: Path, recorded: ProcessId | None, *,
                   timeout: float) -> None: ...

    def find(self, name: str, root: Path, recorded: ProcessId | None) -> ProcessId | None: ...

    async def forget(self, name: str, root: Path) -> None:
        """After the machine's last stop, before its root goes: what the backend keeps
        of a machine between starts (unit files, cgroups) is removed."""
        ...

    def ended(self, name: str, root: Path) -> str | None:
        """How the machine's last run ended, when the backend knows: systemd's
        $SERVICE_RESULT ("success": powered off on purpose, from inside or by
        `machinectl poweroff`/`systemctl stop`; anything else: it failed); None if unknown."""
        ...


def choose_supervisor() -> Supervisor:
    """systemd units where systemd is PID 1 (sd_booted(3)), else nspawn started directly."""
    if Path("/run/systemd/system").is_dir() and _pid1_is_systemd():
        from services.machines.systemd_units import SystemdSupervisor  # imports this module

        return SystemdSupervisor()
    return DirectSupervisor()


def _pid1_is_systemd() -> bool:
    try:
        return Path("/proc/1/comm").read_text().strip() == "systemd"
    except OSError:
        return False


def leader_of(nspawn: ProcessId) -> int | None:
    """The machine's PID 1 (its systemd), seen from the host: nspawn's child."""
    children = host.process_children(nspawn.pid)
    return children[0] if children else None


def find_nspawn_by_root(root: Path) -> ProcessId | None:
    """Scan /proc for the nspawn running ``root``: exact, since roots are unique.

    Only the host's own nspawn binary in the host's PID namespace counts: a process in a
    machine (a nested nspawn, or one named to look like it) cannot pass for a machine.
    """
    wanted = f"--directory={root}"
    host_nspawn = _host_nspawn_identity()
    own_pidns = _pidns("self")
    matches = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        argv = host.process_cmdline(int(entry.name))
        if not (argv and os.path.basename(argv[0]) == NSPAWN and wanted in argv):
            continue
        if _exe_identity(entry.name) != host_nspawn or _pidns(entry.name) != own_pidns:
            log.warning("ignoring a look-alike nspawn pid=%s root=%s", entry.name, root)
            continue
        matches.add(int(entry.name))
    # nspawn forks the machine's PID 1, which carries nspawn's argv until it execs
    # systemd: the nspawn we want is the match whose parent is not a match.
    for pid in sorted(matches):
        if host.process_parent(pid) not in matches:
            found = ProcessId(pid, host.process_start_time(pid))
            if found.alive():
                return found
    return None


def _host_nspawn_identity() -> tuple[int, int] | None:
    path = shutil.which(NSPAWN, path=host.BASE_ENV["PATH"])
    if path is None:
        return None
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _exe_identity(pid: str) -> tuple[int, int] | None:
    try:
        st = os.stat(f"/proc/{pid}/exe")
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _pidns(pid: str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


class FindsNspawn:
    """How both backends find a machine's nspawn: the recorded process while it lives
    (cheap), else a /proc scan by root (after a crash, a reboot, or a restart by hand)."""

    def find(self, name: str, root: Path, recorded: ProcessId | None) -> ProcessId | None:
        if recorded is not None and recorded.alive():
            return recorded
        return find_nspawn_by_root(root)


class DirectSupervisor(FindsNspawn):
    kind = "direct"

    async def start(self, launch: Launch) -> tuple[ProcessId, Readiness | None]:
        group = cgroups.group_name(launch.name, launch.root)
        dirs = cgroups.prepare(group, launch.limits)
        join = cgroups.join_function(dirs) if dirs else None
        readiness = Readiness(launch.notify_socket)
        launch.console_log.parent.mkdir(parents=True, exist_ok=True)
        # nspawn's output (the machine's console) → a pipe → the size-bounded log writer,
        # which ends when nspawn does.
        read_end, write_end = os.pipe()
        try:
            host.spawn_detached(consolelog.argv(launch.console_log), stdin=read_end)
            pid = host.spawn_detached(
                nspawn_argv(launch), stdout=write_end, preexec=join,
                env={**NSPAWN_ENV, "NOTIFY_SOCKET": str(launch.notify_socket)})
        except BaseException:
            readiness.close()
            cgroups.remove(group)
            raise
        finally:
            os.close(read_end)
            os.close(write_end)
        return ProcessId(pid, host.process_start_time(pid)), readiness

    async def stop(self, name: str, root: Path, recorded: ProcessId | None, *,
                   timeout: float) -> None:
        nspawn = self.find(name, root, recorded)
        if nspawn is not None:
            await poweroff(nspawn, timeout=timeout)
        await cgroups.remove_when_empty(cgroups.group_name(name, root))

    async def forget(self, name: str, root: Path) -> None:
        await cgroups.remove_when_empty(cgroups.group_name(name, root))

    def ended(self, name: str, root: Path) -> str | None:
        return None  # nspawn's exit status went to its parent, gone since


async def poweroff(nspawn: ProcessId, *, timeout: float) -> None:
    """Ask the machine's systemd to power off; kill it if it does not in time."""
    leader = leader_of(nspawn)
    if leader is not None:
        host.send_signal(leader, POWEROFF)
    if await _wait_gone(nspawn, timeout):
        return
    log.warning("machine did not power off in %.0f s; killing nspawn_pid=%d", timeout,
                nspawn.pid)
    # Kill the machine's PID 1 first: that ends its whole PID namespace; then nspawn.
    leader = leader_of(nspawn)
    if leader is not None:
        host.send_signal(leader, signal.SIGKILL)
    if not await _wait_gone(nspawn, 5):
        host.send_signal(nspawn.pid, signal.SIGKILL)
        if not await _wait_gone(nspawn, 5):
            raise InternalError(f"nspawn process {nspawn.pid} does not die")


async def _wait_gone(process: ProcessId, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while process.alive():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True
