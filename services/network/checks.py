"""What networking needs from the host, and whether ctbot's side of it is as it should be."""

from __future__ import annotations

from services.core.doctor import Check, read_number
from services.network.firewall import FORWARDING_SYSCTLS
from services.network.links import host_links
from services.network.messages import sysctl_name
from services.network.service import Networking


async def network_checks(net: Networking, *, machines_running: bool) -> list[Check]:
    checks = []
    bridge = (await host_links()).get(net.config.bridge)
    if bridge is None:
        checks.append(Check("bridge", not machines_running,
                            f"{net.config.bridge} does not exist (ctbot makes it when a "
                            "machine with an address starts)",
                            "any ctbot command makes it again while machines run"))
    else:
        problems = net.bridge.differences(bridge)
        checks.append(Check("bridge", not problems and bridge.up,
                            f"{net.config.bridge}: " + ("; ".join(problems) or
                                                        ("up" if bridge.up else "down")),
                            "set [network] bridge to a name no one else uses"))
    loaded = net.changes.get(net.firewall.key)
    drifted = loaded is not None and await net.firewall.drifted(net.rules())
    checks.append(Check("nftables", not drifted,
                        f"table inet {net.config.nft_table}: " +
                        ("not loaded yet" if loaded is None else
                         "changed by someone else" if drifted else "as ctbot loaded it"),
                        "any ctbot command loads it again"))
    foreign = await net.foreign_filters(sorted(net.addresses.all()))
    checks.append(Check("other tables", not foreign,
                        " ".join(foreign) or "no other nftables table filters ctbot's links",
                        "delete a table another ctbot or a killed run left behind"))
    if net.config.outbound:
        off = [sysctl_name(p) for p in FORWARDING_SYSCTLS if read_number(str(p)) != 1]
        checks.append(Check("forwarding", not (off and machines_running),
                            (f"off: {', '.join(off)} (turned on when a machine starts)"
                             if off else "on (IPv4 and IPv6)"),
                            "any ctbot command turns it on again ([network] outbound = true)"))
    return checks
