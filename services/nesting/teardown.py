"""An inner machine's one teardown: destroy, the rollback of a failed create, and crash
recovery.

Each create and destroy is recorded with the process doing it (``op``: "create PID
START"); a row whose process is gone (killed) is rolled back or finished by the next
reconcile, through the same teardown.
"""

from __future__ import annotations

import logging
import os

from services.core import host
from services.core.errors import CtbotError
from services.machines import rootfs
from services.machines.lifecycle import Machines
from services.nesting import units
from services.nesting.part import NestingPart
from services.nesting.records import InnerRecord, InnerStore
from services.nesting.units import STOP_TIMEOUT
from services.network.service import Networking
from services.ssh.access import SshAccess

log = logging.getLogger(__name__)


def this_process(op: str) -> str:
    """``op`` as a row records it: with this process's id and start time."""
    return f"{op} {os.getpid()} {host.process_start_time(os.getpid())}"


def owner_alive(op: str) -> bool:
    """Whether the process that recorded ``op`` still runs."""
    _, pid, start = ([*op.split(), "", "", ""])[:3]
    return pid.isdigit() and host.ProcessId(int(pid), int(start) if start.isdigit()
                                            else None).alive()


class InnerTeardown:
    def __init__(self, store: InnerStore, machines: Machines, networking: Networking,
                 part: NestingPart, ssh: SshAccess) -> None:
        self.store = store
        self.machines = machines
        self.net = networking
        self.part = part
        self.ssh = ssh

    async def run(self, record: InnerRecord, *, ask_outer: bool = True) -> None:
        """Everything of the inner, on the host, whatever the outer does: its unit is
        asked to stop (``ask_outer``, briefly), then its layer, addresses, grants and
        row go; a unit the outer keeps running has lost its root's layer, and the bridge
        drops its traffic (the outer may no longer send from its addresses)."""
        leader = self.machines.status(record.outer).leader_pid
        if leader is not None and ask_outer:
            try:
                await units.stop(record.outer, leader, [record.name], timeout=STOP_TIMEOUT)
            except CtbotError as exc:
                log.warning("unit not stopped machine=%s error=%s", record.ref, exc)
        nested = self.part.nested_dir(record.outer)
        if nested.is_dir():
            rootfs.remove_tree(nested, record.name)
        await self.net.release(record.ref)  # the bridge's rules without it, then its rows
        self.ssh.forget(record.ref)
        self.store.delete(record.outer, record.name)
