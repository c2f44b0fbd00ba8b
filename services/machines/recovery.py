"""Reconcile: make the records match what runs and exists, on every ctbot start and
every minute in `serve` (a `ctbot cmd` killed half-way is caught by the next process)."""

from __future__ import annotations

import logging

from services.machines import clones, messages
from services.machines.lifecycle import Machines
from services.machines.records import Desired, MachineRecord

log = logging.getLogger(__name__)


async def reconcile(machines: Machines) -> list[str]:
    """Recover stale operations, notice machines that stopped or were started by hand,
    remount roots after a host reboot, then let each part repair what it owns (once,
    for all machines). Returns what was found; one machine or part that cannot be
    reconciled never stops the others."""
    notes: list[str] = []
    idle: list[MachineRecord] = []
    running: set[str] = set()
    for snapshot in machines.records.all():
        record = machines.records.find(snapshot.name)  # fresh: others may act meanwhile
        if record is None or record.op_alive:
            continue
        try:
            if record.op_stale:
                # Only one process recovers a given stale operation.
                if machines.records.take_over(record):
                    notes.append(await machines.recover(record))
                continue
            found, up = await _reconcile_idle(machines, record)
            notes += found
            idle.append(record)
            if up:
                running.add(record.name)
        except Exception:
            log.exception("reconcile of %s failed; will retry", record.name)
            notes.append(messages.reconcile_failed(record.name))
    for part in machines.parts:
        try:
            notes += await part.reconcile(idle, running)
        except Exception:
            log.exception("reconcile of part %s failed; will retry", part.name)
            notes.append(messages.part_reconcile_failed(part.name))
    for note in notes:
        log.warning("reconcile: %s", note)
    return notes


async def _reconcile_idle(machines: Machines, record: MachineRecord) -> tuple[list[str], bool]:
    """Notes on one machine no operation holds, and whether it runs."""
    notes = []
    paths = machines.paths(record.name)
    nspawn = machines.supervisor.find(record.name, paths.root, record.nspawn)
    # Only a stopped machine's overlay, and only if it is gone (a host reboot): one whose
    # image changed (`feature … on` without --restart) gets its new one at its next start.
    if (nspawn is None and record.clone_method is not None
            and machines.images.exists(record.image)
            and await clones.ensure_mounted(machines.images.get(record.image).path, paths,
                                            record.clone_method, switch_image=False)):
        notes.append(messages.remounted(record.name))
    if nspawn is not None and nspawn != record.nspawn:
        machines.records.update(record.name, nspawn=nspawn, desired=Desired.RUNNING)
        notes.append(messages.found_running(record.name, nspawn.pid))
    elif nspawn is None and record.nspawn is not None:
        if machines.supervisor.ended(record.name, paths.root) == "success":
            # Powered off outside ctbot (`machinectl poweroff`, `systemctl stop`, or
            # `poweroff` inside): stopped on purpose, as if `stop NAME` had been typed.
            machines.records.update(record.name, nspawn=None, desired=Desired.STOPPED)
            notes.append(messages.found_powered_off(record.name))
        else:
            # It should run and does not: it stays meant to run (health checks count it
            # down, not stopped on purpose); said once, when its process is found gone.
            machines.records.update(record.name, nspawn=None)
            notes.append(messages.found_stopped(record.name))
    return notes, nspawn is not None
