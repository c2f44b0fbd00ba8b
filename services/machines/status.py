"""A machine as observed: its record joined with what runs (the state is never stored)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from services.core.errors import InternalError
from services.core.host import ProcessId
from services.machines.cgroups import DEFAULT_PIDS
from services.machines.records import Desired, MachineRecord, Op
from services.machines.supervisor import leader_of


class MachineState(StrEnum):
    RUNNING = "running"
    STOPPED = "stopped"
    STARTING = "starting"
    STOPPING = "stopping"
    FAILED = "failed"


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
    pids: int
    clone_method: str | None
    operation: str | None
    details: dict[str, Any] = field(default_factory=dict)  # what the parts describe

    def to_json(self) -> dict[str, Any]:
        """The machine-readable form of `status` (and of each entry of `list`)."""
        return {
            "name": self.name,
            "state": str(self.state),
            "image": self.image,
            "leader_pid": self.leader_pid,
            "nspawn_pid": self.nspawn_pid,
            "created_at": datetime.fromtimestamp(self.created_at, tz=UTC).isoformat(),
            "features": list(self.features),
            **self.details,
            "cpu": self.cpu,
            "memory_bytes": self.memory_bytes,
            "pids": self.pids,
            "clone": self.clone_method,
            "operation": self.operation,
        }


BASE_FIELDS = frozenset({"name", "state", "image", "leader_pid", "nspawn_pid", "created_at",
                         "features", "cpu", "memory_bytes", "pids", "clone", "operation"})


def observe(record: MachineRecord, nspawn: ProcessId | None,
            details: dict[str, Any]) -> MachineStatus:
    """The status of ``record``, given the nspawn process found running its root and
    the fields the parts describe (InternalError if a part would shadow a base field)."""
    if clash := BASE_FIELDS & details.keys():
        raise InternalError(f"machine parts describe reserved status fields: {sorted(clash)}")
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
        pids=record.pids or DEFAULT_PIDS,
        clone_method=str(record.clone_method) if record.clone_method else None,
        operation=str(record.op) if record.op_alive else None, details=details,
    )
