"""SSH as a machine part: host keys of its own at create, the creator's access, the
read-only access directory in the .nspawn settings, logins made at boot, everything
forgotten at teardown."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.core.errors import CtbotError, OperationFailed
from services.core.progress import Progress
from services.grammar.slack import user
from services.machines.parts import BasePart, NspawnSettings, PartOptions
from services.machines.records import MachineRecord
from services.machines.supervisor import leader_of
from services.ssh import files, messages
from services.ssh.access import ROOT, SSH_PORT, SshAccess
from services.ssh.store import Grant

log = logging.getLogger(__name__)

PART_NAME = "ssh"
TCP_LISTEN = "0A"  # st column of /proc/net/tcp: TCP_LISTEN (include/net/tcp_states.h)


@dataclass(frozen=True, slots=True)
class SshOptions:
    """Who asked for the machine: they get root access at create if they have keys."""

    creator: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"creator": self.creator}


class SshPart(BasePart):
    name = PART_NAME

    def __init__(self, access: SshAccess) -> None:
        self.access = access

    def options_from_json(self, data: Mapping[str, Any]) -> PartOptions:
        creator = data.get("creator")
        return SshOptions(user(str(creator)) if creator else None)

    async def allocate(self, machine: MachineRecord, options: PartOptions | None,
                       progress: Progress) -> None:
        creator = options.creator if isinstance(options, SshOptions) else None
        if creator is None:
            return
        keys = self.access.keys(creator)
        if not keys:
            await progress(messages.creator_has_no_keys(machine.name, creator))
            return
        self.access.store.grant(Grant(machine.name, creator, ROOT, None, None,
                                      granted_by=creator, granted_at=time.time()))
        await progress(messages.creator_granted(machine.name, len(keys)))

    def write_files(self, machine: MachineRecord, root: Path) -> None:
        if not self.access.host_keys(machine.name):
            # At create (an image carries no host keys), or for a machine made before SSH.
            self.access.store.set_host_keys(machine.name,
                                            files.make_host_keys(root, machine.name))
        files.write_sshd_snippet(root)
        self.access.push(machine.name)

    def settings(self, machine: MachineRecord) -> NspawnSettings:
        return NspawnSettings(files=(files.bind_line(self.access.config.access_root,
                                                     machine.name),))

    async def before_start(self, machine: MachineRecord, progress: Progress) -> None:
        self.access.push(machine.name)  # nspawn needs the bind source to exist

    async def after_start(self, machine: MachineRecord, leader: int,
                          progress: Progress) -> None:
        # A login that cannot be made (the machine's useradd is broken) costs that login,
        # not the boot: the machine runs, and the reason is in the job's progress.
        try:
            await self.access.ensure_logins(machine.name, leader,
                                            self.access.logins(machine.name))
        except OperationFailed as exc:
            log.warning("logins not made machine=%s error=%s", machine.name, exc)
            await progress(f"ssh: {exc}")

    async def release(self, machine: MachineRecord) -> None:
        self.access.forget(machine.name)

    async def reconcile(self, machines: Sequence[MachineRecord],
                        running: AbstractSet[str]) -> list[str]:
        """Each machine's access directory as the store says (a grant expired, the
        machine's root edited its view); directories of machines gone are removed."""
        notes = []
        for machine in machines:
            try:
                if self.access.push(machine.name):
                    notes.append(messages.access_rewritten(machine.name))
            except CtbotError as exc:  # that machine's own doing; the others go on
                notes.append(messages.access_not_rewritten(machine.name, str(exc)))
        known = {r.name for r in self.access.records.all()}
        notes += [messages.stray_removed(n) for n in self.access.stray_directories(known)]
        return notes

    def describe(self, machine: MachineRecord) -> dict[str, Any]:
        alive = machine.nspawn is not None and machine.nspawn.alive()
        leader = leader_of(machine.nspawn) if alive and machine.nspawn else None
        return {"ssh": {"listening": leader is not None and listening(leader, SSH_PORT)}}


def listening(pid: int, port: int) -> bool:
    """Whether a TCP socket listens on ``port`` in ``pid``'s network namespace, from
    /proc/PID/net/tcp and tcp6 (proc(5)): no packet sent, nothing of the machine run."""
    wanted = f":{port:04X}"
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{table}", encoding="ascii") as rows:
                next(rows, None)  # header
                for row in rows:
                    fields = row.split()
                    if len(fields) > 3 and fields[3] == TCP_LISTEN and fields[1].endswith(wanted):
                        return True
        except OSError:
            continue
    return False
