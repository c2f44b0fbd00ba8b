"""A claimed machine powered on and off, with each part told at its points.

Every boot writes the .nspawn settings (systemd.nspawn(5)) again with each part's lines,
runs the parts' ``before_start``, starts nspawn through the supervisor, waits for the
machine's READY=1 and runs the parts' ``after_start``; a poweroff tells the parts
(``before_stop``, in reverse order) first and grants the longest ``stop_grace`` any of
them asks for. The caller (services/machines/lifecycle.py) holds the machine's claim.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from services.core.files import replace_file
from services.core.progress import Progress
from services.core.tasks import finish_despite_cancel
from services.core.templating import render
from services.machines import clones, messages
from services.machines.cgroups import DEFAULT_PIDS, Limits
from services.machines.clones import MachinePaths
from services.machines.console import wait_until_booted
from services.machines.images import Images
from services.machines.parts import MachinePart, NspawnSettings
from services.machines.records import Desired, MachineRecord, MachineStore
from services.machines.supervisor import Launch, Supervisor, leader_of
from services.machines.teardown import ROLLBACK_STOP_TIMEOUT

log = logging.getLogger(__name__)


class Power:
    def __init__(self, *, records: MachineStore, images: Images, supervisor: Supervisor,
                 parts: Sequence[MachinePart], paths: Callable[[str], MachinePaths],
                 boot_timeout: float, stop_timeout: float) -> None:
        self.records = records
        self.images = images
        self.supervisor = supervisor
        self.parts = parts
        self.paths = paths
        self.boot_timeout = boot_timeout
        self.stop_timeout = stop_timeout

    def write_part_files(self, record: MachineRecord, paths: MachinePaths) -> None:
        """Each part's files inside the root, then the .nspawn settings with its lines."""
        for part in self.parts:
            part.write_files(record, paths.root)
        self.write_settings(record, paths)

    def write_settings(self, record: MachineRecord, paths: MachinePaths) -> None:
        """The .nspawn file (systemd.nspawn(5)) with each part's lines; written again at
        every boot, so that what parts offer (images to a --nesting machine) is current."""
        settings = NspawnSettings()
        for part in self.parts:
            settings += part.settings(record)
        replace_file(paths.settings, render("machine/container.nspawn.j2", name=record.name,
                                            settings=settings).encode())

    async def boot(self, record: MachineRecord, paths: MachinePaths,
                   progress: Progress) -> None:
        name = record.name
        self.records.step(name, "host")
        self.write_settings(record, paths)
        for part in self.parts:
            await part.before_start(record, progress)
        self.records.step(name, "start")
        started = time.monotonic()
        nspawn, readiness = await self.supervisor.start(Launch(
            name=name, root=paths.root, console_log=paths.console_log,
            notify_socket=paths.notify_socket,
            limits=Limits(cpu=record.cpu, memory_bytes=record.memory_bytes,
                          pids=record.pids or DEFAULT_PIDS),
            boot_timeout=self.boot_timeout))
        self.records.update(name, nspawn=nspawn)
        await progress(messages.nspawn_started(nspawn.pid, self.supervisor.kind))
        self.records.step(name, "boot")
        if readiness is not None:
            await wait_until_booted(name, nspawn, readiness, paths,
                                    timeout=self.boot_timeout, progress=progress)
        self.records.update(name, desired=Desired.RUNNING)
        await progress(messages.booted(time.monotonic() - started))
        leader = leader_of(nspawn)
        if leader is None:  # nspawn already gone again: the next reconcile sees it
            log.warning("booted but has no leader machine=%s nspawn_pid=%d", name, nspawn.pid)
            return
        self.records.step(name, "ready")
        for part in self.parts:
            await part.after_start(record, leader, progress)

    async def start(self, record: MachineRecord, progress: Progress) -> None:
        paths = self.paths(record.name)
        if record.clone_method is not None:
            await clones.ensure_mounted(self.images.get(record.image).path, paths,
                                        record.clone_method)
        try:
            await self.boot(record, paths, progress)
        except BaseException:
            await finish_despite_cancel(self.supervisor.stop(
                record.name, paths.root, None, timeout=ROLLBACK_STOP_TIMEOUT))
            self.records.update(record.name, desired=Desired.FAILED, nspawn=None)
            raise

    async def stop(self, record: MachineRecord, progress: Progress) -> None:
        for part in reversed(self.parts):
            await part.before_stop(record, progress)
        started = time.monotonic()
        timeout = max(self.stop_timeout, *(p.stop_grace(record) for p in self.parts))
        await self.supervisor.stop(record.name, self.paths(record.name).root, record.nspawn,
                                   timeout=timeout)
        self.records.update(record.name, desired=Desired.STOPPED, nspawn=None)
        await progress(messages.powered_off(time.monotonic() - started))
