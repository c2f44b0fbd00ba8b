"""The host side of machine networking, through netlink (pyroute2), not `ip` programs.

One bridge carries the gateway addresses of both pools. Machines attach to it with
nspawn's ``Bridge=`` (nspawn makes the veth pair ``vb-NAME``/``host0`` and enslaves it,
on every boot, without ctbot); their addresses are configured *inside* by a
systemd-networkd file, so they survive reboots of the machine.

The bridge is made at start and made idempotently: an existing bridge whose addresses
match is accepted; one that differs is reported and left alone.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from dataclasses import dataclass

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from services.core import host
from services.core.errors import HostCommandFailed, InternalError, OperationFailed
from services.network.addresses import Family, IPInterface, Pool

log = logging.getLogger(__name__)

IFA_F_NODAD = 0x02  # linux/if_addr.h: usable at once, no duplicate address detection
_BRIDGE_RE = re.compile(r"^[a-z][a-z0-9-]{0,14}$")


@dataclass(frozen=True, slots=True)
class BridgeState:
    name: str
    exists: bool
    is_bridge: bool
    addresses: tuple[IPInterface, ...]
    up: bool


def check_bridge_name(name: str) -> str:
    if not _BRIDGE_RE.fullmatch(name):
        raise ValueError(f"bridge name {name!r}: 1–15 lowercase letters, digits, hyphens")
    return name


class HostBridge:
    def __init__(self, name: str, pools: dict[Family, Pool]) -> None:
        self.name = check_bridge_name(name)
        self.pools = pools

    @property
    def gateways(self) -> tuple[IPInterface, ...]:
        return tuple(pool.gateway for pool in self.pools.values())

    async def state(self) -> BridgeState:
        async with AsyncIPRoute() as ipr:
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
                               bool(link["flags"] & 1))

    async def ensure(self) -> list[str]:
        """Make the bridge if missing; accept it if it matches; report if it differs."""
        state = await self.state()
        if state.exists:
            problems = self._differences(state)
            if problems:
                # Someone else's interface: report it, never clobber it or attach to it.
                note = (f"bridge {self.name} exists but {'; '.join(problems)}; ctbot leaves "
                        "it as it is and attaches no machine to it (fix it, or set "
                        "[network] bridge to another name)")
                log.warning("%s", note)
                raise OperationFailed(note)
            if not state.up:
                await self._set_up()
            return []
        try:
            async with AsyncIPRoute() as ipr:
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
        return [f"created bridge {self.name} with {', '.join(map(str, self.gateways))}"]

    def _differences(self, state: BridgeState) -> list[str]:
        problems = []
        if not state.is_bridge:
            problems.append("it is not a bridge")
        for gateway in self.gateways:
            if gateway not in state.addresses:
                problems.append(f"it lacks the gateway address {gateway}")
        return problems

    async def _set_up(self) -> None:
        async with AsyncIPRoute() as ipr:
            index = (await ipr.link_lookup(ifname=self.name))[0]
            await ipr.link("set", index=index, state="up")


@dataclass(frozen=True, slots=True)
class PingResult:
    address: str
    answered: bool
    rtt_ms: float | None


_RTT_RE = re.compile(r"time[=<]([0-9.]+) ms")


async def ping(address: ipaddress.IPv4Address | ipaddress.IPv6Address, *,
               count: int = 1, timeout: float = 2.0) -> PingResult:
    """Ping from the host (the system ping, as a user would)."""
    argv = ["ping", f"-{address.version}", "-n", "-c", str(count), "-W",
            str(max(1, int(timeout))), "--", str(address)]
    try:
        result = await host.run(argv, check=False, timeout=timeout * count + 5)
    except HostCommandFailed as exc:
        raise OperationFailed(f"ping {address} did not finish: {exc}") from exc
    match = _RTT_RE.search(result.stdout)
    return PingResult(str(address), result.returncode == 0,
                      float(match.group(1)) if match else None)
