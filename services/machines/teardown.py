"""The one teardown: destroy, the rollback of a failed create, and crash recovery.

Each step is idempotent, so a teardown interrupted by a crash simply runs again from the
start: power off (every part told first), unmount and delete the root and its layers,
release every part in reverse order, delete the record.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from services.core.host import ProcessId
from services.core.jobs import JobStore
from services.core.progress import NoProgress, Progress
from services.machines import clones, messages
from services.machines.clones import MachinePaths
from services.machines.parts import MachinePart
from services.machines.records import Desired, MachineRecord, MachineStore, Op
from services.machines.supervisor import Supervisor

log = logging.getLogger(__name__)

ROLLBACK_STOP_TIMEOUT = 5.0  # seconds: a machine being rolled back has nothing to save


class Teardown:
    def __init__(self, *, records: MachineStore, supervisor: Supervisor, jobs: JobStore,
                 parts: Sequence[MachinePart], paths: Callable[[str], MachinePaths],
                 find: Callable[[MachineRecord], ProcessId | None],
                 stop_timeout: float) -> None:
        self.records = records
        self.supervisor = supervisor
        self.jobs = jobs
        self.parts = parts
        self.paths = paths
        self.find = find
        self.stop_timeout = stop_timeout

    async def run(self, record: MachineRecord, *, timeout: float | None = None,
                  progress: Progress | None = None) -> None:
        """Remove everything of ``record``'s machine; its claim must be held."""
        report = progress or NoProgress()
        name, paths = record.name, self.paths(record.name)
        self.records.step(name, "stop")
        running = self.find(record) is not None
        if running:
            for part in reversed(self.parts):
                await part.before_stop(record, report)
        await self.supervisor.stop(name, paths.root, record.nspawn,
                                   timeout=timeout or self.stop_timeout)
        # Even when it was not running: its cgroups, or its unit's files.
        await self.supervisor.forget(name, paths.root)
        if running:
            await report(messages.powered_off())
        self.records.step(name, "remove")
        await clones.remove(paths)
        for part in reversed(self.parts):
            await part.release(record)
        self.records.delete(name)
        await report(messages.removed(name))

    async def rollback(self, name: str) -> None:
        """Undo a create that failed in this process (never raises: see below)."""
        record = self.records.find(name)
        if record is None or record.op is not Op.CREATE:
            return
        try:
            await self.run(record, timeout=ROLLBACK_STOP_TIMEOUT)
        except Exception:
            # Leave the claim stale: the next reconcile (every minute in `serve`, or at
            # the start of any ctbot process) tries the rollback again.
            log.exception("rolling back the create of %s failed; will retry", name)
            self.records.abandon(name)

    async def recover(self, record: MachineRecord) -> str:
        """Finish or undo a stale operation this process has taken over; says what it
        did. If that fails, the claim is made stale again for the next attempt."""
        step = record.op_step or "?"
        try:
            if record.op is Op.CREATE:
                await self.run(record, timeout=ROLLBACK_STOP_TIMEOUT)
                note = messages.interrupted_create(record.name, step)
            elif record.op is Op.DESTROY:
                await self.run(record)
                note = messages.interrupted_destroy(record.name, step)
            else:
                self.records.release(record.name)
                nspawn = self.find(record)
                self.records.update(record.name, nspawn=nspawn,
                                    desired=Desired.RUNNING if nspawn else Desired.STOPPED)
                note = messages.interrupted_other(str(record.op), record.name, step,
                                                  nspawn is not None)
        except Exception:
            if self.records.find(record.name) is not None:
                self.records.abandon(record.name)
            raise
        if record.op_job is not None:
            self.jobs.annotate(record.op_job, messages.interrupted_job(note))
        return note
