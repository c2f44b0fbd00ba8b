"""What health checks need from the host (doctor): raw ICMP sockets, an IPv6 route."""

from __future__ import annotations

import json

from services.core import host
from services.core.doctor import Check
from services.grammar.addresses import Family
from services.health.icmp import IcmpUnavailable, open_socket
from services.network.addresses import Pool
from services.network.links import host_links


async def health_checks(pools: dict[Family, Pool], *, bridge: str) -> list[Check]:
    checks = []
    for family in Family:
        try:
            open_socket(family).close()
            ok, detail = True, f"raw ICMP socket for {family}: usable"
        except IcmpUnavailable as exc:
            ok, detail = False, str(exc)
        checks.append(Check(f"icmp {family}", ok, detail,
                            "health checks send ICMP from raw sockets: run ctbot as root "
                            "(or with CAP_NET_RAW)"))
    pool = pools.get(Family.V6)
    if pool is None:
        checks.append(Check("ipv6 route", True, "IPv6 is off ([network] ipv6_pool = none): "
                            "machines are checked over IPv4 only"))
        return checks
    machine = pool.gateway.ip + 1  # a machine's address, not the bridge's own
    shown = await host.run(["ip", "-j", "-6", "route", "get", str(machine)], check=False,
                           timeout=10)
    routes = json.loads(shown.stdout or "[]") if shown.returncode == 0 else []
    device = routes[0].get("dev") if routes else None
    if device == bridge:
        ok, detail = True, f"{pool.network} is routed to {bridge}"
    elif bridge not in await host_links():
        ok, detail = True, (f"{bridge} does not exist yet (made when a machine with an "
                            "address starts)")
    else:
        ok, detail = False, (f"{pool.network} goes to {device or 'nowhere'}, not {bridge}: "
                             "IPv6 health checks will fail")
    checks.append(Check("ipv6 route", ok, detail,
                        "the route comes with the bridge's address: any ctbot command puts "
                        "it back while machines run; a more specific route of the host's "
                        "may shadow it"))
    return checks
