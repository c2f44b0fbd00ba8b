"""Verbs for networking: addresses, pools, pings, port forwards, networkd export."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from handlers.context import Invocation, Reply
from handlers.grammar import Flag, Positional
from handlers.registry import verb
from handlers.roles import Role
from handlers.verbs.machines import run_machine_job
from services.core.audit import Outcome
from services.core.errors import Conflict, InvalidInput
from services.core.templating import render
from services.grammar import machine_name
from services.network.addresses import Family, parse_request
from services.network.bridge import ping
from services.network.service import PortForward

NAME = Positional("NAME")


def forward_json(f: PortForward) -> dict[str, Any]:
    return {"host_port": f.host_port, "protocol": str(f.protocol), "machine": f.machine,
            "machine_port": f.machine_port, "targets": [str(t) for t in f.targets]}


@verb("net show", role=Role.VIEWER, positionals=[Positional("NAME", required=False)])
async def run_net_show(inv: Invocation) -> Reply:
    """Show addresses, gateways, the bridge and port forwards (of one machine, or all)."""
    net = inv.services.networking
    raw = inv.args.positionals.get("NAME")
    names = ([machine_name(raw)] if raw else
             [m.name for m in inv.services.machines.all()])
    if raw:
        inv.services.machines.status(names[0])  # "no such machine" if so
    machines = [{"name": n, "addresses": {str(f): str(a) for f, a in net.of(n).items()},
                 "ports": [forward_json(f) for f in net.forwards(n)]} for n in names]
    gateways = {str(f): str(p.gateway) for f, p in net.config.pools.items()}
    data = {"bridge": net.config.bridge, "gateways": gateways, "machines": machines}
    return Reply(text=render("replies/net_show.txt.j2", **data), data=data)


@verb("net pools", role=Role.VIEWER)
async def run_net_pools(inv: Invocation) -> Reply:
    """Show the address pools and how many addresses are in use."""
    net = inv.services.networking
    pools = [{"family": str(f), "network": str(p.network), "gateway": str(p.gateway),
              "used": net.addresses.used(f), "capacity": p.capacity,
              "capacity_text": (str(p.capacity) if p.capacity < 2**32
                                else f"2^{p.network.max_prefixlen - p.network.prefixlen}")}
             for f, p in net.config.pools.items()]
    return Reply(text=render("replies/net_pools.txt.j2", pools=pools,
                             bridge=net.config.bridge),
                 data={"bridge": net.config.bridge, "pools": pools})


@verb("net set", role=Role.OPERATOR, mutating=True, positionals=[NAME], flags=[
    Flag("ipv4", "auto, none, or ADDRESS/PREFIX in the IPv4 pool", "ADDR"),
    Flag("ipv6", "auto, none, or ADDRESS/PREFIX in the IPv6 pool", "ADDR"),
])
async def run_net_set(inv: Invocation) -> Reply:
    """Give a machine new addresses; a running machine is restarted to take them."""
    name = machine_name(inv.args.positionals["NAME"])
    changes = {str(f): str(inv.args.flag(str(f))) for f in Family
               if inv.args.flag(str(f)) is not None}
    if not changes:
        raise InvalidInput("say what to change: `net set NAME --ipv4 … --ipv6 …`")
    for family in Family:
        if str(family) in changes:
            parse_request(changes[str(family)], family)
    inv.services.machines.status(name)
    return await run_machine_job(inv, "machine.readdress", {"name": name, **changes})


@verb("ping", role=Role.VIEWER, positionals=[NAME], flags=[
    Flag("v4", "IPv4 only"), Flag("v6", "IPv6 only")])
async def run_ping(inv: Invocation) -> Reply:
    """Ping a machine from the host over IPv4 and IPv6, with the round-trip time."""
    name = machine_name(inv.args.positionals["NAME"])
    inv.services.machines.status(name)
    families = [f for f, flag in ((Family.V4, "v4"), (Family.V6, "v6"))
                if inv.args.flag(flag)] or list(Family)
    addresses = inv.services.networking.of(name)
    targets = [(f, addresses[f]) for f in families if f in addresses]
    if not targets:
        raise Conflict(f"`{name}` has no {' or '.join(map(str, families))} address")
    results = [(f, await ping(a.ip, count=1, timeout=2)) for f, a in targets]
    data = {"name": name, "results": [
        {"family": str(f), "address": r.address, "answered": r.answered, "rtt_ms": r.rtt_ms}
        for f, r in results]}
    text = render("replies/ping.txt.j2", name=name, results=data["results"])
    answered = all(r.answered for _, r in results)
    return Reply(text=text, data=data, outcome=Outcome.OK if answered else Outcome.USER_ERROR)


@verb("net export", role=Role.ADMIN, mutating=True,
      flags=[Flag("dir", "where to write (default /etc/systemd/network)", "DIR")])
async def run_net_export(inv: Invocation) -> Reply:
    """Write the bridge as systemd-networkd files, so it is back after a host reboot."""
    raw = inv.args.flag("dir")
    directory = Path(str(raw)) if raw else Path("/etc/systemd/network")
    if not directory.is_absolute() or ".." in directory.parts:
        raise InvalidInput(f"--dir `{directory}` must be an absolute path without `..`")
    written = inv.services.networking.write_export(directory)
    return Reply(text="Wrote " + ", ".join(map(str, written)) +
                 ". `networkctl reload` (or a reboot) applies them.",
                 data={"written": [str(p) for p in written]})


@verb("port add", role=Role.OPERATOR, mutating=True,
      positionals=[NAME, Positional("HOSTPORT:CTPORT[/PROTO]")])
async def run_port_add(inv: Invocation) -> Reply:
    """Forward a host port to a machine port, over IPv4 and IPv6: `port add web1 8080:80`."""
    name = machine_name(inv.args.positionals["NAME"])
    inv.services.machines.status(name)
    forward = await inv.services.networking.add_forward(
        name, inv.args.positionals["HOSTPORT:CTPORT[/PROTO]"])
    return Reply(text=f"Forwarding {forward}.", data=forward_json(forward))


@verb("port list", role=Role.VIEWER, positionals=[Positional("NAME", required=False)])
async def run_port_list(inv: Invocation) -> Reply:
    """List port forwards (of one machine, or all)."""
    raw = inv.args.positionals.get("NAME")
    forwards = inv.services.networking.forwards(machine_name(raw) if raw else None)
    text = "\n".join(str(f) for f in forwards) or "No port forwards."
    return Reply(text=text, data={"ports": [forward_json(f) for f in forwards]})


@verb("port remove", role=Role.OPERATOR, mutating=True,
      positionals=[NAME, Positional("HOSTPORT[/PROTO]")])
async def run_port_remove(inv: Invocation) -> Reply:
    """Stop forwarding a host port: `port remove web1 8080`."""
    name = machine_name(inv.args.positionals["NAME"])
    spec = inv.args.positionals["HOSTPORT[/PROTO]"]
    await inv.services.networking.remove_forward(name, spec)
    return Reply(text=f"Removed the forward of {spec} to `{name}`.",
                 data={"removed": spec, "machine": name})
