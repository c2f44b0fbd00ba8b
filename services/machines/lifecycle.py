"""Machines: create, start, stop, restart, destroy, inspect — and recover from crashes.

Every operation claims the machine first (services/machine_store.py) and records its
current step, so that a ctbot killed at any point leaves something reconcile() can
finish or undo: an interrupted ``create`` is rolled back (nothing half-made stays), an
interrupted ``destroy`` is finished, an interrupted start/stop is released and the
machine's real state observed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from services.core import host
from services.core.errors import Conflict, InvalidInput, NotFound, OperationFailed
from services.core.host import Completed, ProcessId
from services.core.jobs import JobContext, JobRunner, JobStore
from services.core.templating import render
from services.grammar import image_name, machine_name
from services.machines import clones, rootfs
from services.machines.cgroups import Limits
from services.machines.clones import MachinePaths
from services.machines.enter import enter_argv
from services.machines.images import Images
from services.machines.records import Desired, MachineRecord, MachineStore, Op
from services.machines.supervisor import (
    BootFailed,
    BootTimeout,
    Launch,
    Readiness,
    Supervisor,
    leader_of,
)
from services.network.addresses import AUTO, AddressRequest, Family, IPInterface, parse_request
from services.network.service import Networking

log = logging.getLogger(__name__)

Progress = Callable[[str], Awaitable[None]]
EXEC_OUTPUT_LIMIT = 64 * 1024


class MachineState(StrEnum):
    RUNNING = "running"
    STOPPED = "stopped"
    STARTING = "starting"
    STOPPING = "stopping"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class CreateSpec:
    name: str
    image: str
    cpu: float | None = None
    memory_bytes: int | None = None
    start: bool = True
    features: tuple[str, ...] = ()
    ipv4: AddressRequest = AUTO
    ipv6: AddressRequest = AUTO


@dataclass(frozen=True, slots=True)
class MachineStatus:
    name: str
    state: MachineState
    image: str
    leader_pid: int | None
    nspawn_pid: int | None
    created_at: float
    features: tuple[str, ...]
    cpu: float | None
    memory_bytes: int | None
    clone_method: str | None
    operation: str | None
    ipv4: IPInterface | None
    ipv6: IPInterface | None


@dataclass(frozen=True, slots=True)
class MachinesConfig:
    machines_dir: Path
    state_dir: Path
    boot_timeout: float
    stop_timeout: float


class Machines:
    def __init__(self, *, records: MachineStore, images: Images, supervisor: Supervisor,
                 jobs: JobStore, networking: Networking, config: MachinesConfig) -> None:
        self.records = records
        self.networking = networking
        self.images = images
        self.supervisor = supervisor
        self.jobs = jobs
        self.config = config

    def paths(self, name: str) -> MachinePaths:
        return MachinePaths.of(name, machines_dir=self.config.machines_dir,
                               state_dir=self.config.state_dir)

    # ------------------------------------------------------------------ inspect

    def status(self, name: str) -> MachineStatus:
        return self._observe(self.records.get(machine_name(name)))

    def all(self) -> list[MachineStatus]:
        return [self._observe(r) for r in self.records.all()]

    def _observe(self, record: MachineRecord) -> MachineStatus:
        nspawn = self.supervisor.find(record.name, self.paths(record.name).root, record.nspawn)
        addresses = self.networking.of(record.name)
        if record.op_alive:
            state = (MachineState.STOPPING if record.op in (Op.STOP, Op.DESTROY)
                     else MachineState.STARTING)
        elif nspawn is not None:
            state = MachineState.RUNNING
        elif record.desired is Desired.FAILED:
            state = MachineState.FAILED
        else:
            state = MachineState.STOPPED
        return MachineStatus(
            name=record.name, state=state, image=record.image,
            leader_pid=leader_of(nspawn) if nspawn else None,
            nspawn_pid=nspawn.pid if nspawn else None, created_at=record.created_at,
            features=record.features, cpu=record.cpu, memory_bytes=record.memory_bytes,
            clone_method=str(record.clone_method) if record.clone_method else None,
            operation=str(record.op) if record.op_alive else None,
            ipv4=addresses.get(Family.V4), ipv6=addresses.get(Family.V6),
        )

    def check_can_create(self, name: str) -> None:
        """Fail fast, before a job is queued; create() checks again, atomically."""
        record = self.records.find(machine_name(name))
        if record is not None:
            if record.op_alive:
                raise Conflict(f"machine `{name}` is being created (job #{record.op_job}); "
                               "try again when it is done")
            raise Conflict(f"machine `{name}` exists already; `status {name}` shows it")

    # ------------------------------------------------------------------ create

    async def create(self, spec: CreateSpec, *, progress: Progress,
                     job_id: int | None = None) -> MachineStatus:
        name, image = machine_name(spec.name), image_name(spec.image)
        if not self.images.exists(image) and image != self.images.config.default:
            self.images.get(image)  # raises NotFound with the list of images
        paths = self.paths(name)
        self.check_can_create(name)
        if paths.exists():
            # Not ours by record, so not ours to delete (checked before claiming the name,
            # so that no rollback ever touches it).
            raise Conflict(f"{paths.root} or {paths.settings} exists but ctbot has no "
                           f"machine `{name}`; move it away or pick another name")
        self.records.begin_create(name=name, image=image, features=spec.features,
                                  cpu=spec.cpu, memory_bytes=spec.memory_bytes, job_id=job_id)
        try:
            self.records.step(name, "addresses")
            self.networking.allocate(name, spec.ipv4, spec.ipv6)
            await self._create_steps(name, image, spec, paths, progress)
        except BaseException:
            log.warning("create failed, rolling back machine=%s", name)
            await _finish_despite_cancel(self._undo_create(name, paths))
            raise
        return self.status(name)

    async def _create_steps(self, name: str, image: str, spec: CreateSpec,
                            paths: MachinePaths, progress: Progress) -> None:
        if not self.images.exists(image):
            self.records.step(name, "image")
            await progress(f"image `{image}` does not exist yet: building it (first use)")
            await self.images.build(image, progress=progress, if_missing=True)
        started = time.monotonic()
        self.records.step(name, "clone")
        method = await clones.clone(self.images.get(image).path, paths)
        self.records.update(name, clone_method=method)
        await progress(f"cloned `{image}` ({method}) in {time.monotonic() - started:.2f} s")

        started = time.monotonic()
        self.records.step(name, "configure")
        self._configure(name, paths, spec.features)
        addresses = ", ".join(str(a) for a in self.networking.of(name).values()) or "none"
        await progress(f"configured machine-id, hostname, settings and addresses ({addresses}) "
                       f"in {time.monotonic() - started:.2f} s")
        if spec.start:
            await self._boot(self.records.get(name), paths, progress)
        else:
            self.records.update(name, desired=Desired.STOPPED)
        self.records.release(name)

    def _configure(self, name: str, paths: MachinePaths, features: Sequence[str]) -> None:
        rootfs.write_file(paths.root, "etc/machine-id", (secrets.token_hex(16) + "\n").encode())
        rootfs.write_file(paths.root, "etc/hostname", f"{name}\n".encode())
        rootfs.write_file(paths.root, "etc/hosts", render(
            "machine/hosts.j2", name=name).encode())
        if self.networking.of(name):
            self.networking.write_machine_files(paths.root, name)
        self._write_settings(name, paths, features)

    def _write_settings(self, name: str, paths: MachinePaths, features: Sequence[str]) -> None:
        settings = render("machine/container.nspawn.j2", name=name, features=list(features),
                          cpu_affinity=None, binds=[],
                          network=self.networking.nspawn_network(name))
        tmp = paths.settings.with_suffix(".tmp")
        tmp.write_text(settings)
        tmp.rename(paths.settings)

    async def _boot(self, record: MachineRecord, paths: MachinePaths,
                    progress: Progress) -> None:
        name = record.name
        if self.networking.of(name):
            self.records.step(name, "network")
            await self.networking.ensure_host()
        self.records.step(name, "start")
        started = time.monotonic()
        nspawn, readiness = await self.supervisor.start(Launch(
            name=name, root=paths.root, console_log=paths.console_log,
            notify_socket=paths.notify_socket,
            limits=Limits(cpu=record.cpu, memory_bytes=record.memory_bytes)))
        self.records.update(name, nspawn=nspawn)
        await progress(f"started systemd-nspawn (pid {nspawn.pid}, {self.supervisor.kind})")
        self.records.step(name, "boot")
        if readiness is not None:
            await self._wait_ready(name, nspawn, readiness, paths)
        self.records.update(name, desired=Desired.RUNNING)
        await progress(f"booted: its systemd reported ready after "
                       f"{time.monotonic() - started:.2f} s")

    async def _wait_ready(self, name: str, nspawn: ProcessId, readiness: Readiness,
                          paths: MachinePaths) -> None:
        try:
            await readiness.wait(nspawn, self.config.boot_timeout)
        except BootFailed:
            console = _tail(paths.console_log, 8)
            hint = ""
            if "Too many open files" in console:
                # Every machine's systemd holds inotify instances, and all machines run as
                # the host's root: the per-user limit (128 by default) runs out first.
                hint = ("\nThe host ran out of inotify instances (fs.inotify."
                        f"max_user_instances = {_sysctl('fs/inotify/max_user_instances')}). "
                        "Raise it, e.g. `sysctl -w fs.inotify.max_user_instances=1024`, "
                        "and persist it in /etc/sysctl.d/.")
            raise OperationFailed(
                f"machine `{name}` stopped while booting. Its console said:\n"
                f"{console}{hint}") from None
        except BootTimeout:
            raise OperationFailed(
                f"machine `{name}` did not finish booting within "
                f"{self.config.boot_timeout:.0f} s. Its console said:\n"
                f"{_tail(paths.console_log, 8)}") from None

    async def _undo_create(self, name: str, paths: MachinePaths) -> None:
        record = self.records.find(name)
        if record is None or record.op is not Op.CREATE:
            return
        try:
            await self.supervisor.stop(name, paths.root, record.nspawn, timeout=5)
            await clones.remove(paths)
            self.networking.release(name)
            self.records.delete(name)
        except Exception:
            # Leave the claim stale: the next reconcile (every minute in `serve`, or at
            # the start of any ctbot process) tries the rollback again.
            log.exception("rolling back the create of %s failed; will retry", name)
            self.records.abandon(name)

    # ------------------------------------------------------------------ lifecycle

    async def start(self, name: str, *, progress: Progress) -> MachineStatus:
        record = await self._claim(name, Op.START)
        try:
            if self._observe_running(record):
                raise Conflict(f"machine `{name}` is running already")
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
            await _finish_despite_cancel(
                self.supervisor.stop(record.name, paths.root, None, timeout=5))
            self.records.update(record.name, desired=Desired.FAILED, nspawn=None)
            raise

    async def stop(self, name: str, *, progress: Progress) -> MachineStatus:
        record = await self._claim(name, Op.STOP)
        try:
            if not self._observe_running(record):
                self.records.update(name, desired=Desired.STOPPED, nspawn=None)
                raise Conflict(f"machine `{name}` is not running")
            await self._stop_claimed(record, progress)
        finally:
            self.records.release(name)
        return self.status(name)

    async def _stop_claimed(self, record: MachineRecord, progress: Progress) -> None:
        started = time.monotonic()
        await self.supervisor.stop(record.name, self.paths(record.name).root, record.nspawn,
                                   timeout=self.config.stop_timeout)
        self.records.update(record.name, desired=Desired.STOPPED, nspawn=None)
        await progress(f"powered off in {time.monotonic() - started:.2f} s")

    async def restart(self, name: str, *, progress: Progress) -> MachineStatus:
        record = await self._claim(name, Op.RESTART)
        try:
            if self._observe_running(record):
                await self._stop_claimed(record, progress)
            await self._start_claimed(self.records.get(name), progress)
        finally:
            self.records.release(name)
        return self.status(name)

    async def destroy(self, name: str, *, progress: Progress,
                      job_id: int | None = None) -> None:
        record = await self._claim(name, Op.DESTROY, job_id=job_id)
        try:
            await self._destroy_claimed(record, progress)
        except Exception:
            # Every step is idempotent: a second `destroy` picks up where this one failed.
            if self.records.find(name) is not None:
                self.records.release(name)
            raise

    async def _destroy_claimed(self, record: MachineRecord, progress: Progress) -> None:
        name, paths = record.name, self.paths(record.name)
        self.records.step(name, "stop")
        running = self.supervisor.find(name, paths.root, record.nspawn) is not None
        # Even when not running: stop() also removes the cgroup and unit drop-in.
        await self.supervisor.stop(name, paths.root, record.nspawn,
                                   timeout=self.config.stop_timeout)
        if running:
            await progress("powered off")
        self.records.step(name, "remove")
        await clones.remove(paths)
        had_forwards = bool(self.networking.forwards(name))
        self.networking.release(name)
        if had_forwards:
            await self.networking.apply_firewall()
        self.records.delete(name)
        await progress(f"removed its root filesystem, settings and addresses; `{name}` is gone")

    async def _claim(self, name: str, op: Op, *, job_id: int | None = None) -> MachineRecord:
        name = machine_name(name)
        record = self.records.find(name)
        if record is not None and record.op_stale and self.records.take_over(record):
            # An operation died half-way (its process was killed): finish or undo it first.
            await self._recover(record)
            if self.records.find(name) is None:
                raise NotFound(f"there is no machine `{name}`; an interrupted create was "
                               "rolled back")
        return self.records.claim(name, op, job_id=job_id)

    def _observe_running(self, record: MachineRecord) -> bool:
        return self.supervisor.find(record.name, self.paths(record.name).root,
                                    record.nspawn) is not None

    async def readdress(self, name: str, changes: Mapping[Family, AddressRequest], *,
                        progress: Progress) -> MachineStatus:
        """Give a machine new addresses; families not in ``changes`` keep theirs."""
        record = await self._claim(name, Op.READDRESS)
        try:
            for family, request in changes.items():
                self.networking.addresses.allocate(name, family, request)
            paths = self.paths(name)
            self.networking.write_machine_files(paths.root, name)
            self._write_settings(name, paths, record.features)
            now = ", ".join(str(a) for a in self.networking.of(name).values()) or "none"
            await progress(f"addresses now: {now}")
            await self.networking.apply_firewall()  # forwards follow the new addresses
            if self._observe_running(record):
                # Restarted rather than told to reload from inside: ctbot never runs the
                # machine's own programs on its own initiative (they could be replaced by
                # whoever is root in the machine, and would run with the host's rights).
                await progress("restarting the machine so it takes its new addresses")
                await self._stop_claimed(record, progress)
                await self._start_claimed(self.records.get(name), progress)
        finally:
            self.records.release(name)
        return self.status(name)

    async def remove_image(self, image: str) -> None:
        """Delete an image unless a machine uses it (the tree is deleted off the loop)."""
        await asyncio.to_thread(self.images.remove, image,
                                used_by=self.records.using_image(image))

    def image_users(self, image: str) -> list[str]:
        return self.records.using_image(image)

    # ------------------------------------------------------------------ inside

    def _leader(self, name: str) -> int:
        status = self.status(name)
        if status.leader_pid is None:
            raise Conflict(f"machine `{name}` is {status.state}; `start {name}` first")
        return status.leader_pid

    async def exec(self, name: str, argv: Sequence[str], *, timeout: float) -> Completed:
        """Run a command inside the machine; its exit status is part of the result."""
        leader = self._leader(name)
        result = await host.run(enter_argv(leader, list(argv)), check=False,
                                timeout=timeout, max_output=EXEC_OUTPUT_LIMIT)
        if result.returncode == 127 or (result.returncode == 126 and not result.stdout):
            raise OperationFailed(f"cannot run `{argv[0]}` in `{name}`: "
                                  f"{result.stderr.strip()[-300:]}")
        return result

    async def logs(self, name: str, lines: int) -> str:
        """The machine's journal tail; its console log when it is not running."""
        status = self.status(name)
        if status.leader_pid is None:
            return _tail(self.paths(name).console_log, lines)
        result = await host.run(
            enter_argv(status.leader_pid, ["journalctl", "--no-pager", "--output=short-iso",
                                           f"--lines={lines}"]),
            check=False, timeout=30, max_output=EXEC_OUTPUT_LIMIT)
        return result.stdout or result.stderr

    # ------------------------------------------------------------------ recovery

    async def reconcile(self) -> list[str]:
        """Make the records match what runs and exists; return what was found."""
        notes: list[str] = []
        for snapshot in self.records.all():
            record = self.records.find(snapshot.name)  # fresh: others may act meanwhile
            if record is None or record.op_alive:
                continue
            try:
                if record.op_stale:
                    # Only one process recovers a given stale operation.
                    if self.records.take_over(record):
                        notes.append(await self._recover(record))
                    continue
                notes += await self._reconcile_idle(record)
            except Exception:
                # One broken machine must not stop ctbot from starting.
                log.exception("reconcile of %s failed; will retry", record.name)
                notes.append(f"could not reconcile `{record.name}`; see the log")
        for note in notes:
            log.warning("reconcile: %s", note)
        return notes

    async def _reconcile_idle(self, record: MachineRecord) -> list[str]:
        notes = []
        paths = self.paths(record.name)
        if (record.clone_method is not None and self.images.exists(record.image)
                and await clones.ensure_mounted(self.images.get(record.image).path, paths,
                                                record.clone_method)):
            notes.append(f"remounted the root of `{record.name}` (the host rebooted?)")
        nspawn = self.supervisor.find(record.name, paths.root, record.nspawn)
        if nspawn is not None and nspawn != record.nspawn:
            self.records.update(record.name, nspawn=nspawn, desired=Desired.RUNNING)
            notes.append(f"`{record.name}` runs as nspawn pid {nspawn.pid}; record updated")
        elif nspawn is None and record.desired is Desired.RUNNING:
            self.records.update(record.name, desired=Desired.STOPPED, nspawn=None)
            notes.append(f"`{record.name}` should be running but is not (powered off from "
                         f"inside, or the host rebooted); `start {record.name}` starts it")
        return notes

    async def _recover(self, record: MachineRecord) -> str:
        name, paths = record.name, self.paths(record.name)
        at = record.op_step or "?"
        if record.op is Op.CREATE:
            await self.supervisor.stop(name, paths.root, record.nspawn, timeout=5)
            await clones.remove(paths)
            self.networking.release(name)
            self.records.delete(name)
            note = (f"create of `{name}` was interrupted at step {at}; rolled back: "
                    "nothing of it is left")
        elif record.op is Op.DESTROY:
            await self._destroy_claimed(record, _ignore_progress)
            note = f"destroy of `{name}` was interrupted at step {at}; finished it"
        else:
            self.records.release(name)
            running = self._observe_running(record)
            self.records.update(name, desired=Desired.RUNNING if running else Desired.STOPPED,
                                nspawn=self.supervisor.find(name, paths.root, record.nspawn))
            note = (f"{record.op} of `{name}` was interrupted at step {at}; the machine is "
                    f"{'running' if running else 'stopped'}")
        if record.op_job is not None:
            with contextlib.suppress(NotFound):
                self.jobs.annotate(record.op_job, f"interrupted: {note}")
        return note


async def _finish_despite_cancel(cleanup: Coroutine[Any, Any, None]) -> None:
    """Run a cleanup to its end even if the caller is cancelled meanwhile (shutdown):
    a rollback cut off half-way would leave exactly the half-made machine it undoes."""
    task = asyncio.ensure_future(cleanup)
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            continue
        except Exception:
            break
    # The caller re-raises what went wrong first; a failing cleanup must not hide it.
    if not task.cancelled() and task.exception() is not None:
        log.error("cleanup failed", exc_info=task.exception())


def _sysctl(name: str) -> str:
    try:
        return Path(f"/proc/sys/{name}").read_text().strip()
    except OSError:
        return "?"


def _tail(path: Path, lines: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode(errors="replace")
    except OSError:
        return "(no console output recorded)"
    return "\n".join(text.splitlines()[-lines:])


async def _ignore_progress(line: str) -> None:
    return None


def parse_size(raw: str) -> int:
    """``512M``, ``2G``, ``1.5GiB`` → bytes (binary units, as systemd reads them)."""
    match = re.fullmatch(r"([0-9]{1,6}(?:\.[0-9]{1,3})?)\s*([KMGT]?)(?:i?B)?", raw.strip(),
                         flags=re.IGNORECASE)
    if match is None:
        raise InvalidInput(f"`{raw}` is not a size; write e.g. 512M or 2G")
    factor = 1024 ** " KMGT".index(match.group(2).upper() or " ")
    value = int(float(match.group(1)) * factor)
    if value < 32 * 1024 * 1024:
        raise InvalidInput(f"memory {raw} is too small: a booted machine needs at least 32M")
    return value


def register_jobs(runner: JobRunner, machines: Machines) -> None:
    """The durable job kinds of machines and images."""

    async def create(ctx: JobContext) -> str:
        a = ctx.args
        status = await machines.create(
            CreateSpec(name=a["name"], image=a["image"], cpu=a.get("cpu"),
                       memory_bytes=a.get("memory_bytes"), start=a.get("start", True),
                       ipv4=parse_request(a.get("ipv4", "auto"), Family.V4),
                       ipv6=parse_request(a.get("ipv6", "auto"), Family.V6)),
            progress=ctx.progress, job_id=ctx.job_id)
        return f"`{status.name}` is {status.state}"

    async def start(ctx: JobContext) -> str:
        status = await machines.start(ctx.args["name"], progress=ctx.progress)
        return f"`{status.name}` is {status.state}"

    async def stop(ctx: JobContext) -> str:
        status = await machines.stop(ctx.args["name"], progress=ctx.progress)
        return f"`{status.name}` is {status.state}"

    async def restart(ctx: JobContext) -> str:
        status = await machines.restart(ctx.args["name"], progress=ctx.progress)
        return f"`{status.name}` is {status.state}"

    async def destroy(ctx: JobContext) -> str:
        await machines.destroy(ctx.args["name"], progress=ctx.progress, job_id=ctx.job_id)
        return f"`{ctx.args['name']}` destroyed"

    async def readdress(ctx: JobContext) -> str:
        changes = {family: parse_request(ctx.args[str(family)], family)
                   for family in Family if str(family) in ctx.args}
        status = await machines.readdress(ctx.args["name"], changes, progress=ctx.progress)
        return f"`{status.name}`: ipv4 {status.ipv4 or 'none'}, ipv6 {status.ipv6 or 'none'}"

    async def build_image(ctx: JobContext) -> str:
        image = await machines.images.build(ctx.args["name"], suite=ctx.args.get("suite"),
                                            progress=ctx.progress)
        return f"image `{image.name}` ready ({image.size_bytes // 2**20} MiB)"

    async def import_image(ctx: JobContext) -> str:
        image = await machines.images.import_(ctx.args["name"], Path(ctx.args["path"]),
                                              progress=ctx.progress)
        return f"image `{image.name}` imported ({image.size_bytes // 2**20} MiB)"

    for kind, body in (("machine.create", create), ("machine.start", start),
                       ("machine.stop", stop), ("machine.restart", restart),
                       ("machine.destroy", destroy), ("machine.readdress", readdress),
                       ("image.build", build_image),
                       ("image.import", import_image)):
        runner.register(kind, body)
