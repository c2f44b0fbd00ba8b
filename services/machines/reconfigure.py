"""All-or-nothing changes to a machine, and their undo.

A change (a part's own update, a feature turned on or off) runs under the machine's claim
with its undo data recorded first; every part's files and the settings are rewritten and
a running machine restarted. If anything fails, or the process is killed, the op's undo
(registered with ``on_undo``) puts the previous state back, files and run state included;
a stale operation with no undo goes to the one teardown (services/machines/teardown.py).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from services.core.host import ProcessId
from services.core.jobs import JobStore
from services.core.progress import NoProgress, Progress
from services.core.tasks import finish_despite_cancel
from services.machines import messages
from services.machines.power import Power
from services.machines.records import Desired, MachineRecord, MachineStore, Op
from services.machines.teardown import Teardown

log = logging.getLogger(__name__)

Undo = Callable[[MachineRecord, dict[str, Any]], Awaitable[None]]


class Reconfigurer:
    def __init__(self, *, records: MachineStore, jobs: JobStore, power: Power,
                 teardown: Teardown, find: Callable[[MachineRecord], ProcessId | None],
                 image_for: Callable[[MachineRecord, str, Progress], Awaitable[str]]) -> None:
        self.records = records
        self.jobs = jobs
        self.power = power
        self.teardown = teardown
        self.find = find
        self.image_for = image_for
        self._undo: dict[Op, Undo] = {}

    def on_undo(self, op: Op, undo: Undo) -> None:
        """How to put back what ``op`` changed, from the data its claim recorded: used
        when the operation fails, and by recovery when its process was killed."""
        self._undo[op] = undo

    async def run(self, record: MachineRecord, op: Op,
                  change: Callable[[MachineRecord], Awaitable[None]], *,
                  undo_data: dict[str, Any], progress: Progress, restart_note: str,
                  restart: bool) -> None:
        """``Machines.reconfigure`` once the machine is claimed; releases the claim."""
        running = self.find(record) is not None
        self.records.set_op_data(record.name, {**undo_data, "was_running": running,
                                               "image": record.image})
        try:
            self.records.step(record.name, "change")
            await change(record)
            record = self.records.get(record.name)
            await self.image_for(record, record.image, progress)
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

    async def _apply(self, record: MachineRecord, progress: Progress, note: str, *,
                     restart: bool = True) -> None:
        """Rewrite the part files and settings; restart if the machine ran (or should)
        and ``restart``; otherwise they apply at its next start."""
        self.records.step(record.name, "files")
        self.power.write_part_files(record, self.power.paths(record.name))
        if record.op_data.get("was_running") and restart:
            self.records.step(record.name, "restart")
            await progress(note)
            if self.find(record) is not None:
                await self.power.stop(record, progress)
            await self.power.start(self.records.get(record.name), progress)

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
        if record.op_step not in ("claimed", "change") or self.find(record) is None:
            await self._apply(record, progress, messages.restoring)

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
