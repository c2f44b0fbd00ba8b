"""Machines: create, start, stop, restart, reconfigure, destroy, and crash recovery.

Every operation claims the machine first (services/machines/records.py) and records its
current step, so that a ctbot killed at any point leaves something ``recover()`` can
finish or undo: an interrupted ``create`` is rolled back (nothing half-made stays), an
interrupted ``destroy`` is finished, any other operation is released and the machine's
real state observed. Features plug in as parts (services/machines/parts.py); the one
teardown (services/machines/teardown.py) serves destroy, the rollback of a failed create
and recovery.
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
from services.core.files import replace_file
from services.core.host import ProcessId
from services.core.jobs import JobStore
from services.core.progress import NoProgress, Progress
from services.core.tasks import finish_despite_cancel
from services.core.templating import render
from services.grammar import machine_name
from services.machines import capacity, clones, messages, rootfs
from services.machines.cgroups import DEFAULT_PIDS, Limits
from services.machines.clones import MachinePaths
from services.machines.console import wait_until_booted
from services.machines.images import Images
from services.machines.parts import MachinePart, NspawnSettings
from services.machines.records import Desired, MachineRecord, MachineStore, Op
from services.machines.specs import CreateSpec, FeatureChange
from services.machines.status import MachineStatus, observe
from services.machines.supervisor import Launch, Supervisor, leader_of
from services.machines.teardown import ROLLBACK_STOP_TIMEOUT, Teardown

log = logging.getLogger(__name__)

Undo = Callable[[MachineRecord, dict[str, Any]], Awaitable[None]]



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
        self._undo: dict[Op, Undo] = {}
        self.teardown = Teardown(records=records, supervisor=supervisor, jobs=jobs,
                                 parts=self.parts, paths=self.paths, find=self._nspawn,
                                 stop_timeout=config.stop_timeout)

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
        self._write_part_files(record, paths)
        await progress(messages.configured(time.monotonic() - started))
        if spec.start:
            await self._boot(self.records.get(name), paths, progress)
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

    def _write_part_files(self, record: MachineRecord, paths: MachinePaths) -> None:
        """Each part's files inside the root, then the .nspawn settings with its lines."""
        for part in self.parts:
            part.write_files(record, paths.root)
        self._write_settings(record, paths)

    def _write_settings(self, record: MachineRecord, paths: MachinePaths) -> None:
        """The .nspawn file (systemd.nspawn(5)) with each part's lines; written again at
        every boot, so that what parts offer (images to a --nesting machine) is current."""
        settings = NspawnSettings()
        for part in self.parts:
            settings += part.settings(record)
        replace_file(paths.settings, render("machine/container.nspawn.j2", name=record.name,
                                            settings=settings).encode())

    async def _boot(self, record: MachineRecord, paths: MachinePaths,
                    progress: Progress) -> None:
        name = record.name
        self.records.step(name, "host")
        self._write_settings(record, paths)
        for part in self.parts:
            await part.before_start(record, progress)
        self.records.step(name, "start")
        started = time.monotonic()
        nspawn, readiness = await self.supervisor.start(Launch(
            name=name, root=paths.root, console_log=paths.console_log,
            notify_socket=paths.notify_socket,
            limits=Limits(cpu=record.cpu, memory_bytes=record.memory_bytes,
                          pids=record.pids or DEFAULT_PIDS),
            boot_timeout=self.config.boot_timeout))
        self.records.update(name, nspawn=nspawn)
        await progress(messages.nspawn_started(nspawn.pid, self.supervisor.kind))
        self.records.step(name, "boot")
        if readiness is not None:
            await wait_until_booted(name, nspawn, readiness, paths,
                                    timeout=self.config.boot_timeout, progress=progress)
        self.records.update(name, desired=Desired.RUNNING)
        await progress(messages.booted(time.monotonic() - started))
        leader = leader_of(nspawn)
        if leader is None:  # nspawn already gone again: the next reconcile sees it
            log.warning("booted but has no leader machine=%s nspawn_pid=%d", name, nspawn.pid)
            return
        self.records.step(name, "ready")
        for part in self.parts:
            await part.after_start(record, leader, progress)

    # ------------------------------------------------------------------ lifecycle

    async def start(self, name: str, *, progress: Progress) -> MachineStatus:
        record = await self._claim(name, Op.START)
        try:
            if self._nspawn(record) is not None:
                raise Conflict(messages.running_already(name))
            await self._start_claimed(record, progress)
        finally:
            self.records.release(name)
        return self.status(name)

    async def _start_claimed(self, record: MachineRecord, progress: Progress) -> None:
        paths = self.paths(record.name)
        if record.clone_method is not None:
            await clones.ensure_mounted(self.images.get(record.image).path, paths,
                                        record.clone_method)
        try:
            await self._boot(record, paths, progress)
        except BaseException:
            await finish_despite_cancel(self.supervisor.stop(
                record.name, paths.root, None, timeout=ROLLBACK_STOP_TIMEOUT))
            self.records.update(record.name, desired=Desired.FAILED, nspawn=None)
            raise

    async def stop(self, name: str, *, progress: Progress) -> MachineStatus:
        record = await self._claim(name, Op.STOP)
        try:
            if self._nspawn(record) is None:
                self.records.update(name, desired=Desired.STOPPED, nspawn=None)
                raise Conflict(messages.not_running(name))
            await self._stop_claimed(record, progress)
        finally:
            self.records.release(name)
        return self.status(name)

    async def _stop_claimed(self, record: MachineRecord, progress: Progress) -> None:
        for part in reversed(self.parts):
            await part.before_stop(record, progress)
        started = time.monotonic()
        timeout = max(self.config.stop_timeout, *(p.stop_grace(record) for p in self.parts))
        await self.supervisor.stop(record.name, self.paths(record.name).root, record.nspawn,
                                   timeout=timeout)
        self.records.update(record.name, desired=Desired.STOPPED, nspawn=None)
        await progress(messages.powered_off(time.monotonic() - started))

    async def restart(self, name: str, *, progress: Progress) -> MachineStatus:
        record = await self._claim(name, Op.RESTART)
        try:
            if self._nspawn(record) is not None:
                await self._stop_claimed(record, progress)
            await self._start_claimed(self.records.get(name), progress)
        finally:
            self.records.release(name)
        return self.status(name)

    def on_undo(self, op: Op, undo: Undo) -> None:
        """How to put back what ``op`` changed, from the data its claim recorded: used
        when the operation fails, and by recovery when its process was killed."""
        self._undo[op] = undo

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
        running = self._nspawn(record) is not None
        self.records.set_op_data(record.name, {**undo_data, "was_running": running,
                                               "image": record.image})
        try:
            self.records.step(record.name, "change")
            await change(record)
            record = self.records.get(record.name)
            await self._image_for(record, record.image, progress)
            await self._apply(self.records.get(record.name), progress, restart_note,
                              restart=restart)
        except BaseException:
            log.warning("%s of %s failed; putting back the state before", op, record.name)
            try:
                await finish_despite_cancel(self._restore(self.records.get(record.name),
                                                          progress))
            except Exception:
                # The user hears why the change failed; the log has why the undo did too.
                log.exception("putting back %s after a failed %s failed too", record.name, op)
                self.records.update(record.name, desired=Desired.FAILED)
            raise
        finally:
            self.records.release(record.name)
        return self.status(record.name)

    async def _apply(self, record: MachineRecord, progress: Progress, note: str, *,
                     restart: bool = True) -> None:
        """Rewrite the part files and settings; restart if the machine ran (or should)
        and ``restart``; otherwise they apply at its next start."""
        self.records.step(record.name, "files")
        self._write_part_files(record, self.paths(record.name))
        if record.op_data.get("was_running") and restart:
            self.records.step(record.name, "restart")
            await progress(note)
            if self._nspawn(record) is not None:
                await self._stop_claimed(record, progress)
            await self._start_claimed(self.records.get(record.name), progress)

    async def _restore(self, record: MachineRecord, progress: Progress) -> None:
        undo = self._undo.get(record.op) if record.op else None
        if undo is not None:
            await undo(record, record.op_data)
        if record.op_data.get("image"):
            self.records.update(record.name, image=record.op_data["image"])
        if "features" in record.op_data:
            self.records.update(record.name, features=record.op_data["features"])
        record = self.records.get(record.name)
        # Past the change, it may run with the new files (or be stopped half-way): start
        # it again with the old ones.
        if record.op_step not in ("claimed", "change") or self._nspawn(record) is None:
            await self._apply(record, progress, messages.restoring)

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
        if record.op not in self._undo or not record.op_data:
            return await self.teardown.recover(record)
        try:
            await self._restore(record, NoProgress())
        except Exception as exc:
            # Once, not on every command: the machine is marked failed for a person to
            # look at (`logs`, `net set`, `destroy`), and the claim is let go.
            log.exception("could not undo the interrupted %s of %s", record.op, record.name)
            self.records.update(record.name, desired=Desired.FAILED)
            self.records.release(record.name)
            note = messages.interrupted_not_undone(str(record.op), record.name, str(exc))
            if record.op_job is not None:
                self.jobs.annotate(record.op_job, messages.interrupted_job(note))
            return note
        self.records.release(record.name)
        note = messages.interrupted_undone(str(record.op), record.name, record.op_step or "?")
        if record.op_job is not None:
            self.jobs.annotate(record.op_job, messages.interrupted_job(note))
        return note

    async def remove_image(self, image: str) -> None:
        """Delete an image unless a machine uses it (the tree is deleted off the loop)."""
        await asyncio.to_thread(self.images.remove, image,
                                used_by=self.records.using_image(image))
