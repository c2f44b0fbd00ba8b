"""Network operations on a machine that go through its lifecycle: re-addressing."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from services.core.job_runner import JobContext, JobRunner
from services.core.jobs import JobResult
from services.core.progress import Progress
from services.grammar import (
    AddressRequest,
    Family,
    machine_name,
    requests_from_json,
    requests_to_json,
)
from services.machines.jobs import machine_result
from services.machines.lifecycle import Machines
from services.machines.records import MachineRecord, Op
from services.machines.status import MachineStatus
from services.network import messages
from services.network.service import Networking


@dataclass(frozen=True, slots=True)
class Readdress:
    """`net set NAME --ipv4 … --ipv6 …`: families not given keep their address."""

    name: str
    requests: dict[Family, AddressRequest]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, **requests_to_json(self.requests)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Readdress:
        return cls(machine_name(str(data["name"])), requests_from_json(data))


async def readdress(machines: Machines, net: Networking, args: Readdress, *,
                    progress: Progress) -> MachineStatus:
    """Give a machine new addresses; a running machine is restarted to take them."""

    async def change(record: MachineRecord) -> None:
        net.allocate(record.name, args.requests)
        await progress(messages.addresses({str(f): a for f, a in net.of(record.name).items()},
                                          now=True))
        await net.apply_firewall()  # forwards follow the new addresses

    return await machines.reconfigure(args.name, Op.READDRESS, change, progress=progress,
                                      restart_note=messages.RESTART_FOR_ADDRESSES)


def register_jobs(runner: JobRunner, machines: Machines, net: Networking) -> None:
    """The job kind ``machine.readdress``."""

    async def run_readdress(ctx: JobContext) -> JobResult:
        return machine_result(await readdress(machines, net, ctx.args, progress=ctx.progress))

    runner.register("machine.readdress", run_readdress, decode=Readdress.from_json)
