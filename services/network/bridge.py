"""The host side of machine networking, through netlink (pyroute2), not `ip` programs.

One bridge carries the gateway addresses of both pools. Machines attach to it with
nspawn's ``Bridge=`` (nspawn makes the veth pair ``vb-NAME``/``host0`` and enslaves it,
on every boot, without ctbot); their addresses are configured *inside* by a
systemd-networkd file, so they survive reboots of the machine.

The bridge is made idempotently: an existing bridge whose addresses match is accepted;
one that differs is reported and left alone. pyroute2 is imported only here, and only
when a bridge is looked at: it costs ~100 ms, which `ctbot cmd list` must not pay.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from services.core.errors import InternalError, OperationFailed
from services.grammar import Family, IPInterface
from services.network import messages
from services.network.addresses import Pool

if TYPE_CHECKING:
    from pyroute2 import AsyncIPRoute

log = logging.getLogger(__name__)

IFA_F_NODAD = 0x02  # linux/if_addr.h: usable at once, no duplicate address detection
IFF_UP = 0x01  # linux/if.h


def _iproute() -> AsyncIPRoute:
    from pyroute2 import AsyncIPRoute

    return AsyncIPRoute()


@dataclass(frozen=True, slots=True)
class BridgeState:
    name: str
    exists: bool
    is_bridge: bool
    addresses: tuple[IPInterface, ...]
    up: bool


class HostBridge:
    def __init__(self, name: str, pools: dict[Family, Pool]) -> None:
        self.name = name
        self.pools = pools

    @property
    def gateways(self) -> tuple[IPInterface, ...]:
        return tuple(pool.gateway for pool in self.pools.values())

    async def state(self) -> BridgeState:
        async with _iproute() as ipr:
            found = await ipr.link_lookup(ifname=self.name)
            if not found:
                return BridgeState(self.name, False, False, (), False)
            index = found[0]
            link = (await ipr.link("get", index=index))[0]
            info = link.get_attr("IFLA_LINKINFO")
            kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
            addresses = []
            async for msg in await ipr.addr("dump", index=index):
                address = msg.get_attr("IFA_ADDRESS")
                if address and not address.startswith("fe80:"):
                    addresses.append(ipaddress.ip_interface(f"{address}/{msg['prefixlen']}"))
            return BridgeState(self.name, True, kind == "bridge", tuple(addresses),
                               bool(link["flags"] & IFF_UP))

    async def ensure(self) -> list[str]:
        """Make the bridge if missing; accept it if it matches; OperationFailed naming
        the differences if it does not (someone else's interface is never clobbered)."""
        from pyroute2.netlink.exceptions import NetlinkError

        state = await self.state()
        if state.exists:
            problems = self._differences(state)
            if problems:
                note = messages.foreign_bridge(self.name, problems)
                log.warning("%s", note)
                raise OperationFailed(note)
            if not state.up:
                await self._set_up()
            return []
        try:
            async with _iproute() as ipr:
                await ipr.link("add", ifname=self.name, kind="bridge")
                index = (await ipr.link_lookup(ifname=self.name))[0]
                for gateway in self.gateways:
                    flags = IFA_F_NODAD if gateway.version == 6 else 0
                    await ipr.addr("add", index=index, address=str(gateway.ip),
                                   prefixlen=gateway.network.prefixlen, flags=flags)
                await ipr.link("set", index=index, state="up")
        except NetlinkError as exc:
            raise InternalError(f"cannot create bridge {self.name}: {exc}") from exc
        log.info("bridge created name=%s addresses=%s", self.name,
                 ",".join(map(str, self.gateways)))
        return [messages.bridge_created(self.name, self.gateways)]

    def _differences(self, state: BridgeState) -> list[str]:
        problems = []
        if not state.is_bridge:
            problems.append("it is not a bridge")
        for gateway in self.gateways:
            if gateway not in state.addresses:
                problems.append(f"it lacks the gateway address {gateway}")
        return problems

    async def _set_up(self) -> None:
        async with _iproute() as ipr:
            index = (await ipr.link_lookup(ifname=self.name))[0]
            await ipr.link("set", index=index, state="up")
