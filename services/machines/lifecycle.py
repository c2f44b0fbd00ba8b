"""Machines: create, start, stop, restart, reconfigure, destroy, and crash recovery.

Every operation claims the machine first (services/machines/records.py) and records its
current step, so that a ctbot killed at any point leaves something ``recover()`` can
finish or undo: an interrupted ``create`` is rolled back (nothing half-made stays), an
interrupted ``destroy`` is finished, any other operation is released and the machine's
real state observed. Features plug in as parts (services/machines/parts.py); a claimed
machine is powered on and off by services/machines/power.py, changed all or nothing by
services/machines/reconfigure.py; the one teardown (services/machines/teardown.py) serves
destroy, the rollback of a failed create and recovery.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.core.errors import Conflict, NotFound
from services.core.host import ProcessId
from services.core.jobs import JobStore
from services.core.progress import Progress
from services.core.tasks import finish_despite_cancel
from services.core.templating import render
from services.grammar.names import machine_name
from services.machines import capacity, clones, messages, rootfs
from services.machines.clones import MachinePaths
from services.machines.images import Images
from services.machines.parts import MachinePart
from services.machines.power import Power
from services.machines.reconfigure import Reconfigurer, Undo
from services.machines.records import Desired, MachineRecord, MachineStore, Op
from services.machines.specs import CreateSpec, FeatureChange
from services.machines.status import MachineStatus, observe
from services.machines.supervisor import Supervisor
from services.machines.teardown import Teardown

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class MachinesConfig:
    machines_dir: Path
    state_dir: Path
    boot_timeout: float  # seconds from nspawn's start to the machine's READY=1
    stop_timeout: float  # seconds a clean poweroff may take before the machine is killed
    min_free_disk: int = 0  # bytes: a create is refused below this ([machines])


class Machines:
    def __init__(self, *, records: MachineStore, images: Images, supervisor: Supervisor,
                 jobs: JobStore, parts: Sequence[MachinePart], config: MachinesConfig) -> None:
        self.records = records
        self.images = images
        self.supervisor = supervisor
        self.jobs = jobs
        self.parts = tuple(parts)
        self.config = config
        self.teardown = Teardown(records=records, supervisor=supervisor, jobs=jobs,
                                 parts=self.parts, paths=self.paths, find=self._nspawn,
                                 stop_timeout=config.stop_timeout)
        self.power = Power(records=records, images=images, supervisor=supervisor,
                           parts=self.parts, paths=self.paths,
                           boot_timeout=config.boot_timeout, stop_timeout=config.stop_timeout)
        self.reconfigurer = Reconfigurer(records=records, jobs=jobs, power=self.power,
                                         teardown=self.teardown, find=self._nspawn,
                                         image_for=self._image_for)

    def paths(self, name: str) -> MachinePaths:
        return MachinePaths.of(name, machines_dir=self.config.machines_dir,
                               state_dir=self.config.state_dir)

    # ------------------------------------------------------------------ inspect

    def require(self, name: str) -> MachineRecord:
        """The record of an existing machine (no process lookup); NotFound otherwise."""
        return self.records.get(machine_name(name))

    def status(self, name: str) -> MachineStatus:
        return self._observe(self.require(name))

    def all(self) -> list[MachineStatus]:
        return [self._observe(r) for r in self.records.all()]

    def _observe(self, record: MachineRecord) -> MachineStatus:
        details: dict[str, Any] = {}
        for part in self.parts:
            details.update(part.describe(record))
        return observe(record, self._nspawn(record), details)  # raises on clashing keys

    def _nspawn(self, record: MachineRecord) -> ProcessId | None:
        return self.supervisor.find(record.name, self.paths(record.name).root, record.nspawn)

    def check_can_create(self, name: str, *, memory_bytes: int | None = None) -> None:
        """Fail fast, before a job is queued; create() checks again, atomically.
        Conflict if the name is taken or the host has no room (capacity.check_room)."""
        record = self.records.find(machine_name(name))
        if record is not None:
            if record.op_alive:
                raise Conflict(messages.being_created(name, record.op_job))
            raise Conflict(messages.exists(name))
        self.check_room(memory_bytes=memory_bytes)

    def check_room(self, *, memory_bytes: int | None) -> None:
        capacity.check_room((self.config.machines_dir, self.config.state_dir),
                            min_free_disk=self.config.min_free_disk,
                            memory_bytes=memory_bytes)

    # ------------------------------------------------------------------ create

    async def create(self, spec: CreateSpec, *, progress: Progress,
                     job_id: int | None = None) -> MachineStatus:
        name = machine_name(spec.name)
        if not self.images.exists(spec.image) and spec.image != self.images.config.default:
            self.images.get(spec.image)  # raises NotFound with the list of images
        self.check_room(memory_bytes=spec.memory_bytes)
        paths = self.paths(name)
        self.check_can_create(name)
        if paths.exists():
            # Not ours by record, so not ours to delete (checked before claiming the name,
            # so that no rollback ever touches it).
            raise Conflict(messages.not_ours(paths.root, paths.settings, name))
        self.records.begin_create(name=name, image=spec.image, features=spec.features,
                                  cpu=spec.cpu, memory_bytes=spec.memory_bytes, pids=spec.pids,
                                  job_id=job_id)
        try:
            await self._create_steps(self.records.get(name), spec, paths, progress)
        except BaseException:
            log.warning("create failed, rolling back machine=%s", name)
            await finish_despite_cancel(self.teardown.rollback(name))
            raise
        return self.status(name)

    async def _create_steps(self, record: MachineRecord, spec: CreateSpec,
                            paths: MachinePaths, progress: Progress) -> None:
        name = record.name
        self.records.step(name, "allocate")
        for part in self.parts:
            await part.allocate(record, spec.options.get(part.name), progress)
        if not self.images.exists(spec.image):
            self.records.step(name, "image")
            await progress(messages.building_image(spec.image))
            await self.images.build(spec.image, progress=progress, if_missing=True)
        image = await self._image_for(self.records.get(name), spec.image, progress)
        started = time.monotonic()
        self.records.step(name, "clone")
        method = await clones.clone(self.images.get(image).path, paths)
        self.records.update(name, clone_method=method)
        await progress(messages.cloned(image, str(method), time.monotonic() - started))

        started = time.monotonic()
        self.records.step(name, "configure")
        rootfs.write_file(paths.root, "etc/machine-id", (secrets.token_hex(16) + "\n").encode())
        rootfs.write_file(paths.root, "etc/hostname", f"{name}\n".encode())
        rootfs.write_file(paths.root, "etc/hosts", render("machine/hosts.j2", name=name).encode())
        self.power.write_part_files(record, paths)
        await progress(messages.configured(time.monotonic() - started))
        if spec.start:
            await self.power.boot(self.records.get(name), paths, progress)
        else:
            self.records.update(name, desired=Desired.STOPPED)
        self.records.release(name)

    async def _image_for(self, record: MachineRecord, image: str, progress: Progress) -> str:
        """The image the machine clones: ``image``, or one derived from it with the
        packages its parts need (built once, cached); recorded with the machine."""
        have = set(self.images.get(image).packages)
        wanted = [p for part in self.parts for p in part.packages(record) if p not in have]
        if wanted:
            label = "-".join(part.name for part in self.parts if part.packages(record))
            image = (await self.images.derive(image, label, sorted(set(wanted)),
                                              progress=progress)).name
        if image != record.image:
            self.records.update(record.name, image=image)
        return image

    # ------------------------------------------------------------------ lifecycle

    async def start(self, name: str, *, progress: Progress) -> MachineStatus:
        record = await self._claim(name, Op.START)
        try:
            if self._nspawn(record) is not None:
                raise Conflict(messages.running_already(name))
            await self.power.start(record, progress)
        finally:
            self.records.release(name)
        return self.status(name)

    async def stop(self, name: str, *, progress: Progress) -> MachineStatus:
        record = await self._claim(name, Op.STOP)
        try:
            if self._nspawn(record) is None:
                self.records.update(name, desired=Desired.STOPPED, nspawn=None)
                raise Conflict(messages.not_running(name))
            await self.power.stop(record, progress)
        finally:
            self.records.release(name)
        return self.status(name)

    async def restart(self, name: str, *, progress: Progress) -> MachineStatus:
        record = await self._claim(name, Op.RESTART)
        try:
            if self._nspawn(record) is not None:
                await self.power.stop(record, progress)
            await self.power.start(self.records.get(name), progress)
        finally:
            self.records.release(name)
        return self.status(name)

    def on_undo(self, op: Op, undo: Undo) -> None:
        """How to put back what ``op`` changed, from the data its claim recorded: used
        when the operation fails, and by recovery when its process was killed."""
        self.reconfigurer.on_undo(op, undo)

    @contextlib.asynccontextmanager
    async def operation(self, name: str, op: Op) -> AsyncIterator[MachineRecord]:
        """The machine claimed for a change outside the lifecycle (a port forward): no
        other operation runs on it meanwhile; released after, even on failure."""
        record = await self._claim(name, op)
        try:
            yield record
        finally:
            self.records.release(record.name)

    async def reconfigure(self, name: str, op: Op,
                          change: Callable[[MachineRecord], Awaitable[None]], *,
                          undo_data: dict[str, Any], progress: Progress,
                          restart_note: str, job_id: int | None = None,
                          restart: bool = True) -> MachineStatus:
        """Apply ``change`` (a part's own update, e.g. new addresses) under a claim,
        rewrite every part's files and the settings, and restart a running machine so
        it takes them: ctbot never runs the machine's own programs to reload them (root
        in the machine can replace them, and they would run with the host's rights).

        All or nothing: ``undo_data`` (with whether the machine ran) is recorded with
        the claim first; if anything fails, or the process is killed, the op's undo
        (``on_undo``) puts the previous state back, files and run state included."""
        record = await self._claim(name, op, job_id=job_id)
        await self.reconfigurer.run(record, op, change, undo_data=undo_data, progress=progress,
                                    restart_note=restart_note, restart=restart)
        return self.status(record.name)

    async def set_feature(self, change: FeatureChange, *, progress: Progress,
                          job_id: int | None = None) -> MachineStatus:
        """Turn a feature on or off: the parts' files and settings are rewritten (and the
        image derived with the feature's packages, if it lacks them); a running machine
        takes it at its next start, or now with ``restart``. All or nothing, as
        ``reconfigure``."""
        record = self.require(change.name)
        features = [f for f in record.features if f != change.feature]
        if change.on:
            features.append(change.feature)

        async def apply(claimed: MachineRecord) -> None:
            self.records.update(claimed.name, features=sorted(features))

        return await self.reconfigure(
            change.name, Op.FEATURE, apply, progress=progress, job_id=job_id,
            undo_data={"features": list(record.features)}, restart=change.restart,
            restart_note=messages.restart_for_feature(change.feature))

    async def destroy(self, name: str, *, progress: Progress,
                      job_id: int | None = None) -> None:
        record = await self._claim(name, Op.DESTROY, job_id=job_id)
        try:
            await self.teardown.run(record, progress=progress)
        except Exception:
            # Every step is idempotent: a second `destroy` picks up where this one failed.
            if self.records.find(record.name) is not None:
                self.records.release(record.name)
            raise

    async def _claim(self, name: str, op: Op, *, job_id: int | None = None) -> MachineRecord:
        name = machine_name(name)
        record = self.records.find(name)
        if record is not None and record.op_stale and self.records.take_over(record):
            if op is Op.DESTROY and record.op is not Op.CREATE:
                # Destroy removes whatever state the dead operation left: nothing to
                # put back first (and putting back may be what cannot work).
                log.warning("destroy takes over the interrupted %s of %s", record.op, name)
                self.records.release(name)
            else:
                # An operation died half-way (its process was killed): finish or undo it.
                note = await self.recover(record)
                if self.records.find(name) is None:
                    raise NotFound(messages.gone_meanwhile(name, note))
        return self.records.claim(name, op, job_id=job_id)

    async def recover(self, record: MachineRecord) -> str:
        """Finish or undo a stale operation this process has taken over; says what it did."""
        return await self.reconfigurer.recover(record)

    async def remove_image(self, image: str) -> None:
        """Delete an image unless a machine uses it (the tree is deleted off the loop)."""
        await asyncio.to_thread(self.images.remove, image,
                                used_by=self.records.using_image(image))
