"""Health as a machine part: a destroyed machine's added checks, states and mute go with
it, so that a new machine of the same name starts with none (its history stays)."""

from __future__ import annotations

from services.health.store import HealthStore
from services.machines.parts import BasePart
from services.machines.records import MachineRecord


class HealthPart(BasePart):
    name = "health"

    def __init__(self, store: HealthStore) -> None:
        self.store = store

    async def release(self, machine: MachineRecord) -> None:
        self.store.forget_machine(machine.name)
