"""Verbs about the other hosts this ctbot drives (`--host NAME`, `HOST:NAME`)."""

from __future__ import annotations

import os
from importlib import metadata

from handlers.context import Invocation, Reply
from handlers.grammar import Flag, Positional
from handlers.registry import verb
from handlers.roles import Role
from handlers.routing import remote_request
from services.core.errors import InvalidInput
from services.grammar.access import login
from services.grammar.addresses import host_address
from services.grammar.names import host_name
from services.grammar.ports import port
from services.hosts import messages
from services.hosts.answers import Unreadable, host_info, one_line
from services.hosts.protocol import RemoteReply
from services.hosts.service import LOCAL, Hosts

HOST = Positional("NAME", parse=host_name)


def _hosts(inv: Invocation) -> Hosts:
    if inv.services.hosts is None:
        raise InvalidInput("this ctbot has no hosts store")
    return inv.services.hosts


def version() -> str:
    try:
        return metadata.version("ctbot")
    except metadata.PackageNotFoundError:
        return "unknown"


@verb("host add", role=Role.ADMIN, mutating=True,
      positionals=[HOST, Positional("ADDRESS", parse=host_address)],
      flags=[Flag("user", "the login on that host (default root)", "USER", parse=login),
             Flag("port", "its sshd's port (default 22)", "PORT", parse=port),
             Flag("fingerprint", "the host key's SHA256 fingerprint, as the first "
                  "`host add` showed it: pins that key", "SHA256")])
async def run_host_add(inv: Invocation) -> Reply:
    """Drive another host's ctbot from here, over SSH: first shows its host key.

    Without --fingerprint, nothing is stored: the reply shows the host key the address
    offers. Check it on the host, then run the same with `--fingerprint SHA256:…` to pin
    it; a host that later offers another key is refused. The host's root lets this ctbot
    in with the line `host key` prints (it runs `ctbot remote` only: no shell).
    """
    hosts = _hosts(inv)
    name, address = inv.args["NAME"], inv.args["ADDRESS"]
    ssh_port = inv.args.get("port") or 22
    if name == LOCAL:
        raise InvalidInput(messages.local_is_reserved())
    fingerprint = inv.args.get("fingerprint")
    if fingerprint is None:
        key_type, offered, _ = await hosts.offered(address, ssh_port)
        return Reply(message=messages.confirm_fingerprint(name, address, ssh_port, key_type,
                                                          offered),
                     data={"name": name, "address": address, "port": ssh_port,
                           "key_type": key_type, "fingerprint": offered, "added": False})
    record = await hosts.add(name, address, ssh_port, inv.args.get("user") or "root",
                             fingerprint, added_by=inv.user_id)
    info = await hosts.gather([name], remote_request(inv, ["host", "info"], "host info"))
    answer = info[name]
    return Reply(view="host_added", data={
        **record.to_json(), "fingerprint": fingerprint, "added": True,
        "reachable": isinstance(answer, RemoteReply),
        "error": answer if isinstance(answer, str) else None,
        "authorized_line": hosts.authorized_line()})


@verb("host list", role=Role.VIEWER)
async def run_host_list(inv: Invocation) -> Reply:
    """List the hosts: this one first, then each other with whether it answers, its
    ctbot's version, its machines and load."""
    local = {"name": LOCAL, "reachable": True, **_info(inv)}
    hosts = _hosts(inv)
    names = hosts.names()
    answers = await hosts.gather(names, remote_request(inv, ["host", "info"], "host info"))
    rows = [local]
    for name in names:
        answer, address = answers[name], hosts.get(name).address
        try:
            if isinstance(answer, str):
                raise Unreadable(answer)
            if answer.outcome != "ok":
                raise Unreadable(str(answer.data.get("error") or answer.outcome))
            # A host's answer is checked field by field; the row's own fields are ours.
            rows.append({**host_info(answer.data), "name": name, "address": address,
                         "reachable": True})
        except Unreadable as exc:
            rows.append({"name": name, "address": address, "reachable": False,
                         "error": one_line(str(exc))})
    return Reply(view="host_list", data={"hosts": rows})


@verb("host remove", role=Role.ADMIN, mutating=True, confirm=True, positionals=[HOST])
async def run_host_remove(inv: Invocation) -> Reply:
    """Stop driving a host (its machines and its ctbot are untouched); forgets its key."""
    await _hosts(inv).remove(inv.args["NAME"])
    return Reply(message=f"host `{inv.args['NAME']}` removed; its machines keep running",
                 data={"name": inv.args["NAME"], "removed": True})


@verb("host key", role=Role.ADMIN)
async def run_host_key(inv: Invocation) -> Reply:
    """The line a host's root adds to /root/.ssh/authorized_keys so this ctbot drives it
    (restricted to `ctbot remote`: the key opens no shell)."""
    return Reply(view="host_key", data={"authorized_line": _hosts(inv).authorized_line()})


@verb("host info", role=Role.VIEWER)
async def run_host_info(inv: Invocation) -> Reply:
    """This host's ctbot: its version, machines and load (what `host list` shows)."""
    return Reply(view="host_info", data=_info(inv))


def _info(inv: Invocation) -> dict[str, object]:
    machines = inv.services.machines.all()
    return {"version": version(), "machines": len(machines),
            "running": sum(1 for m in machines if m.leader_pid),
            "load": round(os.getloadavg()[0], 2)}
