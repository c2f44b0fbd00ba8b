"""What health checks need from the host (doctor): raw ICMP sockets, an IPv6 route."""

from __future__ import annotations

from services.core.doctor import Check
from services.grammar import Family
from services.health.icmp import IcmpUnavailable, open_socket
from services.health.monitor import has_route
from services.network.addresses import Pool


async def health_checks(pools: dict[Family, Pool]) -> list[Check]:
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
    else:
        routed = has_route(pool.gateway.ip + 1)  # a machine's address, not the bridge's
        checks.append(Check("ipv6 route", routed,
                            f"route to {pool.network}: " + ("present" if routed else
                                                            "none (health checks of IPv6 "
                                                            "are UNKNOWN)"),
                            "the route comes with the bridge's address: any ctbot command "
                            "makes the bridge again while machines run"))
    return checks
