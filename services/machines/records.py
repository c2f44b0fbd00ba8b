"""Machine records, and the per-machine operation claim that makes concurrent
commands (from any ctbot process sharing the store) safe.

An operation (create, start, stop, restart, readdress, destroy) first *claims* the machine: the
claim records the operation, the current step, its job and the claiming process. A
second claim while the first holder lives is refused with who holds it; a claim whose
process died (SIGKILL, crash, reboot) is stale, and start-up reconciliation finishes or
undoes what it was doing.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from services.core.errors import Conflict, NotFound
from services.core.host import ProcessId, this_process
from services.core.store import Store
from services.machines import messages
from services.machines.clones import CloneMethod


class Desired(StrEnum):
    """What the machine should be doing; what it *is* doing is observed live."""

    RUNNING = "running"
    STOPPED = "stopped"
    FAILED = "failed"


class Op(StrEnum):
    CREATE = "create"
    START = "start"
    STOP = "stop"
    RESTART = "restart"
    DESTROY = "destroy"
    READDRESS = "readdress"
    FORWARD = "forward"  # a port forward added or removed
    FEATURE = "feature"  # a feature (docker, …) turned on or off


@dataclass(frozen=True, slots=True)
class MachineRecord:
    name: str
    image: str
    desired: Desired
    features: tuple[str, ...]
    cpu: float | None
    memory_bytes: int | None
    pids: int | None
    clone_method: CloneMethod | None
    nspawn: ProcessId | None
    op: Op | None
    op_step: str | None
    op_job: int | None
    op_owner: ProcessId | None
    op_data: dict[str, Any]  # what the operation needs to be undone after a crash
    created_at: float

    @property
    def op_alive(self) -> bool:
        return self.op is not None and self.op_owner is not None and self.op_owner.alive()

    @property
    def op_stale(self) -> bool:
        return self.op is not None and not self.op_alive


class MachineStore:
    def __init__(self, store: Store) -> None:
        self._store = store

    def begin_create(self, *, name: str, image: str, features: Sequence[str],
                     cpu: float | None, memory_bytes: int | None, pids: int | None,
                     job_id: int | None) -> None:
        """Insert the record, claimed for ``create``; Conflict if the name is taken."""
        owner = this_process()
        with self._store.transaction() as tx:
            row = tx.execute("SELECT * FROM machines WHERE name = ?", (name,)).fetchone()
            if row is not None:
                raise _busy_or_exists(_record(row))
            tx.execute(
                "INSERT INTO machines (name, image, state, features, cpu, memory_bytes, pids,"
                " op, op_step, op_job, op_pid, op_start, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (name, image, Desired.STOPPED, json.dumps(list(features)), cpu, memory_bytes,
                 pids,
                 Op.CREATE, "claimed", job_id, owner.pid, owner.start, time.time()),
            )

    def claim(self, name: str, op: Op, *, job_id: int | None = None,
              data: dict[str, Any] | None = None) -> MachineRecord:
        """Claim an existing machine for ``op``, recording ``data`` with the claim (what
        recovery needs to undo the operation); Conflict while another op holds it."""
        owner = this_process()
        with self._store.transaction() as tx:
            row = tx.execute("SELECT * FROM machines WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise NotFound(messages.no_machine(name))
            record = _record(row)
            if record.op_alive:
                raise _busy_or_exists(record)
            tx.execute(
                "UPDATE machines SET op = ?, op_step = ?, op_job = ?, op_pid = ?, op_start = ?,"
                " op_data = ? WHERE name = ?",
                (op, "claimed", job_id, owner.pid, owner.start, json.dumps(data or {}), name),
            )
        return self.get(name)

    def set_op_data(self, name: str, data: dict[str, Any]) -> None:
        self._store.execute("UPDATE machines SET op_data = ? WHERE name = ?",
                            (json.dumps(data), name))

    def take_over(self, record: MachineRecord) -> bool:
        """Claim a stale operation for recovery; False if another process got there first."""
        owner = this_process()
        old = record.op_owner
        cursor = self._store.execute(
            "UPDATE machines SET op_pid = ?, op_start = ? WHERE name = ? AND op = ?"
            " AND op_pid IS ? AND op_start IS ?",
            (owner.pid, owner.start, record.name, str(record.op),
             old.pid if old else None, old.start if old else None))
        return cursor.rowcount == 1

    def abandon(self, name: str) -> None:
        """Keep the operation but drop its owner: it becomes stale, to be recovered."""
        self._store.execute("UPDATE machines SET op_pid = NULL, op_start = NULL"
                            " WHERE name = ?", (name,))

    def step(self, name: str, step: str) -> None:
        self._store.execute("UPDATE machines SET op_step = ? WHERE name = ?", (step, name))

    def release(self, name: str) -> None:
        self._store.execute(
            "UPDATE machines SET op = NULL, op_step = NULL, op_job = NULL, op_pid = NULL,"
            " op_start = NULL, op_data = '{}' WHERE name = ?", (name,))

    def update(self, name: str, **fields: Any) -> None:
        columns = {"desired": "state", "clone_method": "clone_method", "image": "image"}
        sets, values = [], []
        for key, value in fields.items():
            if key == "nspawn":
                sets += ["nspawn_pid = ?", "nspawn_start = ?"]
                values += [value.pid, value.start] if value is not None else [None, None]
            elif key == "features":
                sets.append("features = ?")
                values.append(json.dumps(list(value)))
            else:
                sets.append(f"{columns[key]} = ?")
                values.append(str(value) if value is not None else None)
        self._store.execute(f"UPDATE machines SET {', '.join(sets)} WHERE name = ?",
                            (*values, name))

    def delete(self, name: str) -> None:
        self._store.execute("DELETE FROM machines WHERE name = ?", (name,))

    def get(self, name: str) -> MachineRecord:
        rows = self._store.query("SELECT * FROM machines WHERE name = ?", (name,))
        if not rows:
            raise NotFound(messages.no_machine(name))
        return _record(rows[0])

    def find(self, name: str) -> MachineRecord | None:
        rows = self._store.query("SELECT * FROM machines WHERE name = ?", (name,))
        return _record(rows[0]) if rows else None

    def all(self) -> list[MachineRecord]:
        return [_record(r) for r in self._store.query("SELECT * FROM machines ORDER BY name")]

    def using_image(self, image: str) -> list[str]:
        rows = self._store.query("SELECT name FROM machines WHERE image = ? ORDER BY name",
                                 (image,))
        return [r["name"] for r in rows]


def _busy_or_exists(record: MachineRecord) -> Conflict:
    if record.op_alive and record.op is Op.CREATE:
        return Conflict(messages.being_created(record.name, record.op_job))
    if record.op_alive:
        return Conflict(messages.busy(record.name, str(record.op), record.op_job))
    return Conflict(messages.exists(record.name))


def _record(row: sqlite3.Row) -> MachineRecord:
    nspawn = ProcessId(row["nspawn_pid"], row["nspawn_start"]) if row["nspawn_pid"] else None
    owner = ProcessId(row["op_pid"], row["op_start"]) if row["op_pid"] else None
    return MachineRecord(
        name=row["name"],
        image=row["image"],
        desired=Desired(row["state"]),
        features=tuple(json.loads(row["features"])),
        cpu=row["cpu"],
        memory_bytes=row["memory_bytes"],
        pids=row["pids"],
        clone_method=CloneMethod(row["clone_method"]) if row["clone_method"] else None,
        nspawn=nspawn,
        op=Op(row["op"]) if row["op"] else None,
        op_step=row["op_step"],
        op_job=row["op_job"],
        op_owner=owner,
        op_data=json.loads(row["op_data"] or "{}"),
        created_at=row["created_at"],
    )
