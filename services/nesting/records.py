"""Machines inside machines as ctbot records them: the rows of ``inner_machines``, and
the typed arguments of their jobs (`create INNER --in OUTER`, and OUTER/INNER refs)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from services.core.store import Store
from services.docker.part import FEATURE as DOCKER  # the one feature an inner may have
from services.grammar.addresses import AddressRequest, Family, requests_from_json, requests_to_json
from services.grammar.names import image_name, machine_name, machine_ref
from services.grammar.slack import user


@dataclass(frozen=True, slots=True)
class InnerRecord:
    outer: str
    name: str
    image: str
    desired: str  # "running" | "stopped"
    op: str | None  # "create PID START" / "destroy PID START" while one is under way
    created_at: str
    memory_bytes: int | None = None  # its unit's MemoryMax=, within its outer's limit
    cpu: float | None = None  # its unit's CPUQuota= in CPUs, within its outer's limit
    features: tuple[str, ...] = ()  # ("docker",)

    @property
    def ref(self) -> str:
        return f"{self.outer}/{self.name}"


@dataclass(frozen=True, slots=True)
class InnerCreate:
    """`create INNER --in OUTER [--image IMG] [--ipv4 …] [--ipv6 …]`, as a job's args."""

    outer: str
    name: str
    image: str
    requests: Mapping[Family, AddressRequest]
    memory_bytes: int | None = None
    cpu: float | None = None
    creator: str | None = None  # gets root access with their keys, as at a top-level create
    docker: bool = False  # Docker inside it, as `create --docker` gives a machine

    def to_json(self) -> dict[str, Any]:
        return {"outer": self.outer, "name": self.name, "image": self.image,
                "addresses": requests_to_json(self.requests),
                "memory_bytes": self.memory_bytes, "cpu": self.cpu, "creator": self.creator,
                "docker": self.docker}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> InnerCreate:
        memory, cpu_ = data.get("memory_bytes"), data.get("cpu")
        return cls(machine_name(str(data["outer"])), machine_name(str(data["name"])),
                   image_name(str(data["image"])), requests_from_json(data["addresses"]),
                   memory_bytes=int(memory) if memory is not None else None,
                   cpu=float(cpu_) if cpu_ is not None else None,
                   creator=user(str(data["creator"])) if data.get("creator") else None,
                   docker=bool(data.get("docker")))


@dataclass(frozen=True, slots=True)
class InnerRef:
    """The one argument of start, stop, restart and destroy of ``OUTER/INNER``."""

    ref: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.ref}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> InnerRef:
        return cls(machine_ref(str(data["name"])))


class InnerStore:
    def __init__(self, store: Store) -> None:
        self._store = store

    def insert(self, spec: InnerCreate, op: str) -> bool:
        """False if OUTER/NAME exists already (the primary key decides, atomically)."""
        with self._store.transaction() as tx:
            if tx.execute("SELECT 1 FROM inner_machines WHERE outer = ? AND name = ?",
                          (spec.outer, spec.name)).fetchone():
                return False
            tx.execute("INSERT INTO inner_machines (outer, name, image, op, created_at,"
                       " memory_bytes, cpu, features) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (spec.outer, spec.name, spec.image, op, datetime.now(UTC).isoformat(),
                        spec.memory_bytes, spec.cpu, DOCKER if spec.docker else ""))
        return True

    def get(self, outer: str, name: str) -> InnerRecord | None:
        rows = self._store.query("SELECT * FROM inner_machines WHERE outer = ? AND name = ?",
                                 (outer, name))
        return _record(rows[0]) if rows else None

    def list(self, outer: str | None = None) -> list[InnerRecord]:
        rows = self._store.query(
            "SELECT * FROM inner_machines" + (" WHERE outer = ?" if outer else "")
            + " ORDER BY outer, name", (outer,) if outer else ())
        return [_record(r) for r in rows]

    def update(self, outer: str, name: str, **fields: Any) -> None:
        columns = ", ".join(f"{key} = ?" for key in fields)  # keys are ours, not users'
        self._store.execute(f"UPDATE inner_machines SET {columns} WHERE outer = ? AND name = ?",
                            (*fields.values(), outer, name))

    def delete(self, outer: str, name: str) -> None:
        self._store.execute("DELETE FROM inner_machines WHERE outer = ? AND name = ?",
                            (outer, name))


def _record(row: Any) -> InnerRecord:
    return InnerRecord(row["outer"], row["name"], row["image"], row["desired"], row["op"],
                       row["created_at"], row["memory_bytes"], row["cpu"],
                       tuple(f for f in row["features"].split(",") if f))
