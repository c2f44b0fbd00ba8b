"""Verbs for networking: addresses, pools, pings, port forwards, networkd export."""

from __future__ import annotations

from pathlib import Path

from handlers.context import Invocation, Reply
from handlers.grammar import Flag, Positional
from handlers.jobs import run_job
from handlers.registry import verb
from handlers.roles import Role
from handlers.verbs.machines import MACHINE, NAME, address_flag, require
from services.core.audit import Outcome
from services.core.errors import Conflict, InvalidInput
from services.grammar.addresses import Family
from services.grammar.names import machine_ref
from services.grammar.ports import host_port, port_spec
from services.network import messages
from services.network.operations import Readdress, add_forward, remove_forward
from services.network.ping import ping

OPTIONAL_NAME = Positional("NAME", required=False, parse=machine_ref)



@verb("net show", role=Role.VIEWER, positionals=[OPTIONAL_NAME])
async def run_net_show(inv: Invocation) -> Reply:
    """Show addresses, gateways, the bridge and port forwards (of one machine, or all)."""
    net, name = inv.services.networking, inv.args.get("NAME")
    if name is not None:
        require(inv, name)
    names = [name] if name else [n for r in inv.services.machines.records.all()
                                 for n in (r.name, *(i.ref for i in inv.services.inner.of(r.name)))]
    return Reply(view="net_show", data={
        "bridge": net.config.bridge,
        "gateways": {str(f): str(p.gateway) for f, p in net.config.pools.items()},
        "machines": [{"name": n, "addresses": {str(f): str(a) for f, a in net.of(n).items()},
                      "ports": [f.to_json() for f in net.forwards(n)]} for n in names]})


@verb("net pools", role=Role.VIEWER)
async def run_net_pools(inv: Invocation) -> Reply:
    """Show the address pools and how many addresses are in use."""
    net = inv.services.networking
    return Reply(view="net_pools", data={"bridge": net.config.bridge, "pools": [
        {"family": str(f), "network": str(p.network), "gateway": str(p.gateway),
         "used": net.addresses.used(f), "capacity": p.capacity,
         "capacity_text": p.capacity_text} for f, p in net.config.pools.items()]})


@verb("net set", role=Role.OPERATOR, mutating=True, positionals=[NAME], flags=[
    address_flag(Family.V4, "auto"), address_flag(Family.V6, "auto")])
async def run_net_set(inv: Invocation) -> Reply:
    """Give a machine new addresses; a running machine is restarted to take them."""
    changes = {f: inv.args.flags[str(f)] for f in Family if str(f) in inv.args.flags}
    if not changes:
        raise InvalidInput(messages.say_what_to_change())
    inv.services.machines.require(inv.args["NAME"])
    inv.services.networking.addresses.check_all(inv.args["NAME"], changes)  # before a job
    return await run_job(inv, "machine.readdress", Readdress(inv.args["NAME"], changes))


@verb("ping", role=Role.VIEWER, positionals=[MACHINE], flags=[
    Flag("v4", "IPv4 only"), Flag("v6", "IPv6 only")])
async def run_ping(inv: Invocation) -> Reply:
    """Ping a machine from the host over IPv4 and IPv6, with the round-trip time."""
    name = inv.args["NAME"]
    require(inv, name)
    families = [f for f, flag in ((Family.V4, "v4"), (Family.V6, "v6"))
                if inv.args.get(flag)] or list(Family)
    addresses = inv.services.networking.of(name)
    targets = [(f, addresses[f]) for f in families if f in addresses]
    if not targets:
        raise Conflict(messages.no_family_address(name, families))
    results = [await ping(f, a.ip, timeout=2) for f, a in targets]
    return Reply(data={"name": name, "results": [r.to_json() for r in results]}, view="ping",
                 outcome=Outcome.OK if all(r.answered for r in results) else Outcome.USER_ERROR)


@verb("net export", role=Role.ADMIN, mutating=True,
      flags=[Flag("dir", "where to write (default /etc/systemd/network)", "DIR", parse=Path)])
async def run_net_export(inv: Invocation) -> Reply:
    """Write the bridge as systemd-networkd files, so it is back after a host reboot."""
    directory: Path = inv.args.get("dir", Path("/etc/systemd/network"))
    if not directory.is_absolute() or ".." in directory.parts:
        raise InvalidInput(messages.export_dir(directory))
    machines, images = inv.services.machines.config, inv.services.images.config
    written = inv.services.networking.write_export(directory, off_limits=(
        machines.machines_dir, machines.state_dir, images.images_dir))
    return Reply(data={"written": [str(p) for p in written]}, view="net_export")


@verb("port add", role=Role.OPERATOR, mutating=True,
      positionals=[MACHINE, Positional("HOSTPORT:PORT", parse=port_spec)])
async def run_port_add(inv: Invocation) -> Reply:
    """Forward a host port to a machine port, over IPv4 and IPv6: `port add web1 8080:80`.

    TCP unless the ports end in `/udp` (`port add dns1 5353:53/udp`). The host port
    answers on every address of the host and on 127.0.0.1; [::1] is refused at once
    (Linux never routes ::1 off the host). From other machines it works when the host
    routes for them (`[network] outbound = true`); otherwise connect to the machine's own
    address. A host port a host program listens on is refused.
    """
    net = inv.services.networking
    require(inv, inv.args["NAME"])
    forward = await add_forward(inv.services.machines, net, inv.args["NAME"],
                                inv.args["HOSTPORT:PORT"])
    return Reply(data=forward.to_json() | net.forward_reach(), view="port_added")


@verb("port list", role=Role.VIEWER, positionals=[OPTIONAL_NAME])
async def run_port_list(inv: Invocation) -> Reply:
    """List port forwards (of one machine, or all)."""
    forwards = inv.services.networking.forwards(inv.args.get("NAME"))
    return Reply(data={"ports": [f.to_json() for f in forwards]}, view="port_list")


@verb("port remove", role=Role.OPERATOR, mutating=True,
      positionals=[MACHINE, Positional("HOSTPORT", parse=host_port)])
async def run_port_remove(inv: Invocation) -> Reply:
    """Stop forwarding a host port: `port remove web1 8080` (`8080/udp` for UDP)."""
    name, port = inv.args["NAME"], inv.args["HOSTPORT"]
    await remove_forward(inv.services.machines, inv.services.networking, name, port)
    return Reply(data={"removed": str(port), "machine": name}, view="port_removed")
