"""What networking says to users: errors and progress lines, in one place."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from services.grammar.addresses import Family, IPAddress, IPInterface, IPNetwork
from services.grammar.ports import HostPort, PortProtocol


def no_pool(family: Family) -> str:
    return f"no {family} pool is configured ([network] {family}_pool)"


def pool_exhausted(family: Family, network: IPNetwork, capacity: int) -> str:
    return (f"the {family} pool {network} is exhausted ({capacity} addresses in use); free "
            "one or widen the pool")


def outside_pool(wanted: IPInterface, family: Family, network: IPNetwork) -> str:
    return f"{wanted} is outside the {family} pool {network}"


def is_gateway(address: IPAddress) -> str:
    return f"{address} is the gateway (the bridge's own address)"


def is_reserved(address: IPAddress, network: IPNetwork) -> str:
    return f"{address} is the network or broadcast address of {network}"


def address_taken(address: IPAddress, machine: str) -> str:
    return f"{address} is already used by `{machine}`"


def addresses(described: Mapping[str, Any], *, now: bool = False) -> str:
    shown = ", ".join(str(a) for a in described.values() if a) or "none"
    return f"addresses{' now' if now else ''}: {shown}"


RESTART_FOR_ADDRESSES = "restarting the machine so it takes its new addresses"


def foreign_bridge(name: str, problems: Iterable[str]) -> str:
    return (f"bridge {name} exists but {'; '.join(problems)}; ctbot leaves it as it is and "
            "attaches no machine to it (fix it, or set [network] bridge to another name)")


def bridge_created(name: str, gateways: Iterable[IPInterface]) -> str:
    return f"created bridge {name} with {', '.join(map(str, gateways))}"


def no_address(machine: str) -> str:
    return f"`{machine}` has no address; give it one with `net set`"


def no_family_address(machine: str, families: Iterable[Family]) -> str:
    return f"`{machine}` has no {' or '.join(map(str, families))} address"


def host_port_busy(port: int, protocol: PortProtocol) -> str:
    return (f"host port {port}/{protocol} is in use by a program on the host; forwarding it "
            "would cut that program off. Pick another host port")


def host_port_forwarded(port: int, protocol: PortProtocol, machine: str) -> str:
    return f"host port {port}/{protocol} already forwards to `{machine}`"


def no_forward(machine: str, port: HostPort) -> str:
    return f"`{machine}` has no forward of host port {port}"


def say_what_to_change() -> str:
    return "say what to change: `net set NAME --ipv4 … --ipv6 …`"


def link_taken(link: str, machine: str) -> str:
    return (f"the host already has an interface {link}: another machine named `{machine}` "
            "runs on this host (another ctbot instance, or nspawn started by hand). Stop it, "
            "or pick another name")


def export_dir(directory: Path) -> str:
    return f"--dir `{directory}` must be an absolute path without `..`"


# Drift, repairs and host changes.

def bridge_gone(bridge: str) -> str:
    return f"bridge {bridge} was gone: made it again"


def bridge_was_down(bridge: str) -> str:
    return f"bridge {bridge} was down: brought it up"


def link_gone(machine: str, link: str) -> str:
    return (f"`{machine}` runs but its host-side link {link} is gone: it has no network "
            f"until `restart {machine}`")


def link_reattached(machine: str, link: str, bridge: str, master: str | None) -> str:
    was = f"on {master}" if master else "on no bridge"
    return f"`{machine}`'s link {link} was {was}: attached it to {bridge} again"


def table_reloaded(table: str) -> str:
    return f"nftables tables inet and bridge {table} were missing or changed: loaded them again"


def foreign_filter(machine: str, link: str, tables: list[str]) -> str:
    named = ", ".join(f"nftables table {t}" for t in tables)
    first = tables[0]
    return (f"{named} (not ctbot's) filters {link} by name, so its rules judge machine "
            f"{machine}'s traffic too (left by another ctbot, or a run that was killed?): "
            f"remove it if it is not in use (`nft delete table {first}`)")


def table_deleted(table: str) -> str:
    return f"deleted the nftables tables inet and bridge {table}"


def bridge_deleted(bridge: str) -> str:
    return f"deleted bridge {bridge}"


def sysctl_set(setting: str) -> str:
    return f"set {setting}"


def sysctl_restored(path: Path, value: str) -> str:
    return f"restored {sysctl_name(path)} = {value}"


def sysctl_left(path: Path, value: str) -> str:
    return (f"left {sysctl_name(path)} as it is: it is no longer {value}, the value ctbot "
            "set, so someone else changed it since")


def sysctl_name(path: Path) -> str:
    """``/proc/sys/net/ipv4/ip_forward`` → ``net.ipv4.ip_forward`` (sysctl(8) notation)."""
    return ".".join(path.relative_to("/proc/sys").parts)


def teardown_refused(machines: list[str]) -> str:
    return (f"machines exist ({', '.join(machines)}): destroy them first; `host teardown` "
            "only undoes ctbot's changes to an empty host")


def export_off_limits(directory: Path, place: Path) -> str:
    return (f"--dir `{directory}` is inside {place}: networkd files do not go there "
            "(a machine's files, ctbot's own, or the kernel's)")


def export_not_a_directory(directory: Path) -> str:
    return f"--dir `{directory}` exists and is not a directory"


def file_removed(path: str) -> str:
    return f"removed {path}"


def pool_overlaps(pool: IPNetwork, address: IPInterface, link: str) -> str:
    return (f"the pool {pool} overlaps {address} on {link}: a bridge with it would take "
            "that network's traffic away from the host. Pick a pool of its own "
            "([network] ipv4_pool / ipv6_pool)")
