"""Machines as units of the host's systemd: the stock systemd-nspawn@NAME.service with
ctbot's drop-in (services/machines/supervisor.py chooses it where systemd is PID 1)."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from services.core import host
from services.core.errors import Conflict, HostCommandFailed, InternalError
from services.core.files import replace_file
from services.core.host import ProcessId
from services.machines import cgroups
from services.machines.supervisor import (
    NSPAWN_ENV,
    FindsNspawn,
    Launch,
    Readiness,
    nspawn_argv,
    poweroff,
)

log = logging.getLogger(__name__)


def unit_word(word: str) -> str:
    """One word of an Exec line as systemd reads it (systemd.service(5), "COMMAND
    LINES"; systemd.unit(5), "SPECIFIERS"): % and $ doubled, quoted if it has a space,
    a quote, a backslash or a semicolon."""
    word = word.replace("%", "%%").replace("$", "$$")
    if any(c in word for c in " \t\"'\\;"):
        return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return word

ROOT_MARK = "# ctbot machine root: "  # the drop-in's first line: whose machine this is
SETTINGS_MARK = b"# ctbot:"  # the first bytes of a NAME.nspawn ctbot copied to /etc


class SystemdSupervisor(FindsNspawn):
    """The stock unit, systemd-nspawn@NAME.service, so that `machinectl start|stop|status|
    shell NAME` and `systemctl … systemd-nspawn@NAME` act on ctbot's machine, with:

    - ctbot's drop-in, /etc/systemd/system/systemd-nspawn@NAME.service.d/ctbot.conf: our
      root and argv, the stock unit's confinement restated, and an ExecStopPost that
      writes how the unit ended (RESULTS_DIR/NAME, $SERVICE_RESULT: systemd.exec(5)), so
      that a machine powered off outside ctbot is told from one that crashed. In /etc,
      not /run: a `machinectl start NAME` after a ctbot restart runs the same machine.
    - its settings, /etc/systemd/nspawn/NAME.nspawn (systemd.nspawn(5): searched there
      first): the file ctbot writes beside the root, copied at each start;
    - its limits on a slice of its own, one level above the unit's cgroup, which on a
      hybrid host is the root of what the machine's cgroup namespace shows (and may
      write) in the v1 hierarchies. The slice is named after the machine's root
      (services/machines/cgroups.py's group name).

    The drop-in names the root it runs; a second ctbot on this host with its own
    machines_dir is refused a name the first one has, instead of taking its unit."""

    kind = "systemd"
    unit_root = Path("/etc/systemd/system")
    settings_root = Path("/etc/systemd/nspawn")
    results_dir = Path("/run/ctbot/machines")

    def _names(self, name: str, root: Path) -> tuple[str, str]:
        return f"systemd-nspawn@{name}.service", f"ctbot-{cgroups.group_name(name, root)}.slice"

    def _dropin(self, name: str) -> Path:
        return self.unit_root / f"systemd-nspawn@{name}.service.d" / "ctbot.conf"

    def _owner(self, name: str) -> str | None:
        """The root named by the unit's ctbot drop-in; None without one."""
        try:
            first = self._dropin(name).read_text().splitlines()[0]
        except (FileNotFoundError, IndexError):
            return None
        return first.removeprefix(ROOT_MARK) if first.startswith(ROOT_MARK) else ""

    async def _claim(self, name: str, root: Path) -> None:
        """Refuse a unit that is not this ctbot's: another ctbot's drop-in (another root),
        or, without ours, a running unit or an operator's own NAME.nspawn."""
        unit, _ = self._names(name, root)
        owner = self._owner(name)
        if owner is not None and owner != str(root):
            raise Conflict(f"{unit} belongs to another ctbot on this host (root "
                           f"{owner or '?'}): choose another name")
        if owner is not None:
            return
        settings = self.settings_root / f"{name}.nspawn"
        if settings.exists() and not settings.read_bytes().startswith(SETTINGS_MARK):
            raise Conflict(f"{settings} is not ctbot's: a machine `{name}` of this host's "
                           "own; choose another name")
        state = await host.run(["systemctl", "is-active", "--", unit], timeout=30,
                               check=False)
        if state.stdout.strip() in ("active", "activating", "reloading", "deactivating"):
            raise Conflict(f"{unit} runs, and not for ctbot: choose another name")

    async def start(self, launch: Launch) -> tuple[ProcessId, Readiness | None]:
        name = launch.name
        await self._claim(name, launch.root)
        unit, slice_ = self._names(name, launch.root)
        limits = ["[Slice]", f"TasksMax={launch.limits.pids}"]
        if launch.limits.cpu is not None:
            limits.append(f"CPUQuota={int(launch.limits.cpu * 100)}%")
        if launch.limits.memory_bytes is not None:
            limits.append(f"MemoryMax={launch.limits.memory_bytes}")
        replace_file(self.unit_root / slice_, ("\n".join(limits) + "\n").encode())
        settings = launch.root.with_name(f"{launch.root.name}.nspawn")
        self.settings_root.mkdir(parents=True, exist_ok=True)
        replace_file(self.settings_root / f"{name}.nspawn",
                     SETTINGS_MARK + f" a copy of {settings}, made at each start\n".encode()
                     + settings.read_bytes())
        result = self.results_dir / name
        lines = [f"{ROOT_MARK}{launch.root}",
                 "[Unit]", f"Description=ctbot machine {name}",
                 "[Service]", "ExecStart=",
                 "ExecStart=" + " ".join(unit_word(w) for w in nspawn_argv(launch,
                                                                        register=True)),
                 *(f"Environment={k}={v}" for k, v in NSPAWN_ENV.items()),
                 f"Slice={slice_}", f"TimeoutStartSec={int(launch.boot_timeout)}",
                 # systemd-nspawn@.service has these already; stated so that they hold
                 # whatever the stock unit says on this host, without the loop and
                 # device-mapper entries that only --image needs.
                 f"TasksMax={launch.limits.pids}", "Delegate=yes", "DevicePolicy=closed",
                 "DeviceAllow=", "DeviceAllow=/dev/net/tun rwm", "DeviceAllow=char-pts rw",
                 f"ExecStopPost=/bin/sh -c 'mkdir -p {self.results_dir} && echo "
                 f"\"$$SERVICE_RESULT\" > {result}'"]
        dropin = self._dropin(name)
        dropin.parent.mkdir(parents=True, exist_ok=True)
        replace_file(dropin, ("\n".join(lines) + "\n").encode())
        with contextlib.suppress(FileNotFoundError):
            result.unlink()
        await host.run(["systemctl", "daemon-reload"], timeout=30)
        await host.run(["systemctl", "start", "--", unit], timeout=launch.boot_timeout + 15)
        # The unit is Type=notify and nspawn runs with --notify-ready=yes: `systemctl
        # start` returned once the machine had booted.
        found = self.find(name, launch.root, None)
        if found is None:
            raise InternalError(f"{unit} started but has no main process")
        return found, None

    async def stop(self, name: str, root: Path, recorded: ProcessId | None, *,
                   timeout: float) -> None:
        unit, _ = self._names(name, root)
        if self._owner(name) != str(root):
            # Not our unit (another ctbot's, the operator's, or ours with its drop-in
            # gone): never `systemctl stop` it; our own nspawn, found by our root, only.
            nspawn = self.find(name, root, recorded)
            if nspawn is not None:
                await poweroff(nspawn, timeout=timeout)
            return
        try:
            await host.run(["systemctl", "stop", "--", unit], timeout=timeout + 10)
        except HostCommandFailed as exc:
            log.warning("systemctl stop failed machine=%s error=%s", name, exc)
            nspawn = self.find(name, root, recorded)
            if nspawn is not None:
                await poweroff(nspawn, timeout=timeout)

    async def forget(self, name: str, root: Path) -> None:
        unit, slice_ = self._names(name, root)
        dropin = self._dropin(name)
        if self._owner(name) != str(root):
            return  # not ours (another ctbot's, the operator's): nothing to remove
        # Ours only: an operator's own drop-ins (`systemctl edit`) beside it stay.
        dropin.unlink()
        with contextlib.suppress(OSError):
            dropin.parent.rmdir()
        settings = self.settings_root / f"{name}.nspawn"
        with contextlib.suppress(FileNotFoundError):
            if settings.read_bytes().startswith(SETTINGS_MARK):
                settings.unlink()
        for path in (self.unit_root / slice_, self.results_dir / name):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        await host.run(["systemctl", "daemon-reload"], timeout=30)
        with contextlib.suppress(HostCommandFailed):  # a failed unit stays listed otherwise
            await host.run(["systemctl", "reset-failed", "--", unit], timeout=30)

    def ended(self, name: str, root: Path) -> str | None:
        result = self.results_dir / name
        try:
            return result.read_text().strip() or None
        except FileNotFoundError:
            return None
