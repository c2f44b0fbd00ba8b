"""Inner machines as observed: their rows joined with what their outer's systemd says of
their units (state, memory use), as `status` and `list` show them. The state is never
stored: an outer that does not answer in time makes it "unknown"."""

from __future__ import annotations

from typing import Any

from services.core.errors import Conflict, NotFound
from services.grammar.addresses import Family
from services.grammar.names import split_ref
from services.machines.lifecycle import Machines
from services.nesting import messages, units
from services.nesting.records import InnerRecord, InnerStore
from services.network.service import Networking


class InnerQueries:
    """The read side of InnerMachines (services/nesting/inner.py): rows, states, views."""

    def __init__(self, store: InnerStore, machines: Machines, networking: Networking) -> None:
        self.store = store
        self.machines = machines
        self.net = networking

    def require(self, ref: str) -> InnerRecord:
        outer, name = split_ref(ref)
        record = self.store.get(outer, name or "")
        if record is None:
            raise NotFound(messages.no_such_inner(ref))
        return record

    def of(self, outer: str) -> list[InnerRecord]:
        return self.store.list(outer)

    async def status(self, ref: str) -> dict[str, Any]:
        """What `status OUTER/INNER --json` shows."""
        record = self.require(ref)
        states = await self._states(record.outer)
        return self._to_json(record, states.get(record.name, "stopped"))

    async def list_json(self, outer: str) -> list[dict[str, Any]]:
        states = await self._states(outer)
        return [self._to_json(r, states.get(r.name, "stopped")) for r in self.of(outer)]

    def _to_json(self, record: InnerRecord, state: str) -> dict[str, Any]:
        addresses = self.net.of(record.ref)
        return {"name": record.ref, "outer": record.outer, "state": state,
                "image": record.image, "created_at": record.created_at,
                "memory_bytes": record.memory_bytes, "cpu": record.cpu,
                "features": list(record.features),
                **{str(f): str(addresses[f]) if f in addresses else None for f in Family}}

    async def usage(self, outer: str) -> list[dict[str, Any]]:
        """Each inner's state and what it uses of its outer's memory (its unit's
        MemoryCurrent, systemd.resource-control(5)), asked in one command."""
        records = self.of(outer)
        leader = self._leader(outer, required=False)
        states, used = (await units.usage(outer, leader, [r.name for r in records])
                        if leader is not None and records else ({}, {}))
        return [{"name": r.ref, "state": states.get(r.name, "stopped"),
                 "memory_bytes_used": used.get(r.name), "memory_bytes": r.memory_bytes,
                 "cpu": r.cpu} for r in records]

    async def _states(self, outer: str) -> dict[str, str]:
        """Each inner unit's state, asked of the outer's systemd in one command."""
        records = self.of(outer)
        leader = self._leader(outer, required=False)
        if leader is None or not records:
            return {}
        return await units.states(outer, leader, [r.name for r in records])

    def _leader(self, outer: str, *, required: bool) -> int | None:
        status = self.machines.status(outer)
        if status.leader_pid is None and required:
            raise Conflict(messages.outer_not_running(outer, str(status.state)))
        return status.leader_pid
