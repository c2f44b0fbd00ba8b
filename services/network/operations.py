"""Network operations on a machine that go through its lifecycle: re-addressing."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from services.core.errors import UserError
from services.core.job_runner import JobContext, JobRunner
from services.core.jobs import JobResult
from services.core.progress import Progress
from services.grammar.addresses import AddressRequest, Family, requests_from_json, requests_to_json
from services.grammar.names import machine_name
from services.grammar.ports import HostPort, PortSpec
from services.machines.jobs import machine_result
from services.machines.lifecycle import Machines
from services.machines.reconfigure import Undo
from services.machines.records import MachineRecord, Op
from services.machines.status import MachineStatus
from services.network import messages
from services.network.forwards import PortForward
from services.network.service import Networking

log = logging.getLogger(__name__)


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
                    progress: Progress, job_id: int | None = None) -> MachineStatus:
    """Give a machine new addresses; a running machine is restarted to take them. All or
    nothing: on failure, or after a kill, the previous addresses come back."""

    async def change(record: MachineRecord) -> None:
        # The old addresses stay held for this machine until the change is through, so
        # that putting them back can never find them taken.
        net.allocate(record.name, args.requests, hold=True)
        await progress(messages.addresses({str(f): a for f, a in net.of(record.name).items()},
                                          now=True))
        await net.apply_firewall()  # forwards follow the new addresses

    before = {f: net.of(args.name).get(f) for f in Family}
    status = await machines.reconfigure(args.name, Op.READDRESS, change, progress=progress,
                                        undo_data={"addresses": requests_to_json(before)},
                                        job_id=job_id,
                                        restart_note=messages.RESTART_FOR_ADDRESSES)
    net.addresses.release_held(args.name)  # through: the old ones are free (else reconcile)
    return status


def undo_readdress(net: Networking) -> Undo:
    """Put a machine's previous addresses back (recorded with the claim of `net set`)."""

    async def undo(record: MachineRecord, data: dict[str, Any]) -> None:
        previous = requests_from_json(data.get("addresses", {}))
        if net.addresses.restore_held(record.name):
            # A family that had no address before has none again.
            for family, request in previous.items():
                if request is None:
                    net.addresses.release(record.name, family)
        else:  # killed before the change was written: what is there is the old state
            try:
                net.allocate(record.name, previous)
            except UserError as exc:
                log.warning("cannot put back the addresses of %s: %s", record.name, exc)
        await net.apply_firewall()

    return undo


async def add_forward(machines: Machines, net: Networking, name: str,
                      spec: PortSpec) -> PortForward:
    """`port add`, with the machine claimed (no destroy or net set runs meanwhile); for
    OUTER/INNER, its outer."""
    async with machines.operation(name.partition("/")[0], Op.FORWARD):
        return await net.add_forward(name, spec)


async def remove_forward(machines: Machines, net: Networking, name: str,
                         port: HostPort) -> None:
    async with machines.operation(name.partition("/")[0], Op.FORWARD):
        await net.remove_forward(name, port)


def register_jobs(runner: JobRunner, machines: Machines, net: Networking) -> None:
    """The job kind ``machine.readdress``, and how to undo it."""

    async def run_readdress(ctx: JobContext) -> JobResult:
        return machine_result(await readdress(machines, net, ctx.args, progress=ctx.progress,
                                              job_id=ctx.job_id))

    runner.register("machine.readdress", run_readdress, decode=Readdress.from_json)
    machines.on_undo(Op.READDRESS, undo_readdress(net))
