"""The host side of machine networking, through netlink (pyroute2), not `ip` programs.

One bridge carries the gateway addresses of both pools. Machines attach to it with
nspawn's ``Bridge=`` (nspawn makes the veth pair ``vb-NAME``/``host0`` and enslaves it,
on every boot, without ctbot); their addresses are configured *inside* by a
systemd-networkd file, so they survive reboots of the machine.

The bridge is made idempotently: an existing bridge whose addresses match is accepted;
one that differs is reported and left alone. pyroute2 is imported only here, and only
when something changes: it costs ~100 ms, which `ctbot cmd list` must not pay (looking
goes through services/network/links.py).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from services.core.errors import InternalError, OperationFailed
from services.grammar.addresses import Family, IPInterface
from services.network import messages
from services.network.addresses import Pool
from services.network.links import Link, host_links

if TYPE_CHECKING:
    from pyroute2 import AsyncIPRoute

log = logging.getLogger(__name__)

IFA_F_NODAD = 0x02  # linux/if_addr.h: usable at once, no duplicate address detection


def _iproute() -> AsyncIPRoute:
    from pyroute2 import AsyncIPRoute

    return AsyncIPRoute()


class HostBridge:
    def __init__(self, name: str, pools: dict[Family, Pool]) -> None:
        self.name = name
        self.pools = pools

    @property
    def gateways(self) -> tuple[IPInterface, ...]:
        return tuple(pool.gateway for pool in self.pools.values())

    async def ensure(self) -> list[str]:
        """Make the bridge if missing; accept it if it matches; OperationFailed naming
        the differences if it does not (someone else's interface is never clobbered)."""
        from pyroute2.netlink.exceptions import NetlinkError

        state = (await host_links()).get(self.name)
        if state is not None:
            problems = self.differences(state)
            if problems:
                note = messages.foreign_bridge(self.name, problems)
                log.warning("%s", note)
                raise OperationFailed(note)
            if not state.up:
                await self.set_up(self.name)
            return []
        for link in (await host_links()).values():
            for address in link.addresses:
                for pool in self.pools.values():
                    if address.network.overlaps(pool.network):
                        raise OperationFailed(messages.pool_overlaps(
                            pool.network, address, link.name))
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

    def differences(self, state: Link) -> list[str]:
        """Why an existing interface of the bridge's name is not the bridge ctbot wants."""
        problems = []
        if state.kind != "bridge":
            problems.append("it is not a bridge")
        for gateway in self.gateways:
            if gateway not in state.addresses:
                problems.append(f"it lacks the gateway address {gateway}")
        return problems

    async def set_up(self, link: str) -> None:
        """Bring ``link`` (the bridge, or a machine's link on it) up."""
        async with _iproute() as ipr:
            index = (await ipr.link_lookup(ifname=link))[0]
            await ipr.link("set", index=index, state="up")

    async def attach(self, link: str) -> None:
        """Enslave ``link`` (a machine's host-side veth) to the bridge, and bring it up."""
        async with _iproute() as ipr:
            index = (await ipr.link_lookup(ifname=link))[0]
            bridge = (await ipr.link_lookup(ifname=self.name))[0]
            await ipr.link("set", index=index, master=bridge, state="up")

    async def delete(self) -> bool:
        """Delete the bridge (its machines' links fall off it); False if there is none."""
        async with _iproute() as ipr:
            found = await ipr.link_lookup(ifname=self.name)
            if not found:
                return False
            await ipr.link("del", index=found[0])
        return True
