"""Verbs for machines: create, list, status, start, stop, restart, destroy, exec, logs."""

from __future__ import annotations

import shlex
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from handlers.context import Invocation, Reply
from handlers.grammar import Flag, Positional, parse_count
from handlers.registry import verb
from handlers.roles import Role
from handlers.verbs.jobs import run_as_job
from services.core.errors import InvalidInput
from services.core.templating import render
from services.grammar import image_name, machine_name
from services.machines.lifecycle import MachineStatus, parse_size
from services.network.addresses import Family, parse_request

NAME = Positional("NAME")
EXEC_TIMEOUT_MAX = 600


def status_json(status: MachineStatus) -> dict[str, Any]:
    """The machine-readable form of `status` (and of each entry of `list`)."""
    return {
        "name": status.name,
        "state": str(status.state),
        "image": status.image,
        "leader_pid": status.leader_pid,
        "created_at": datetime.fromtimestamp(status.created_at, tz=UTC).isoformat(),
        "features": list(status.features),
        "ipv4": str(status.ipv4) if status.ipv4 else None,
        "ipv6": str(status.ipv6) if status.ipv6 else None,
        "cpu": status.cpu,
        "memory_bytes": status.memory_bytes,
        "clone": status.clone_method,
        "operation": status.operation,
    }


async def run_machine_job(inv: Invocation, kind: str, args: dict[str, Any]) -> Reply:
    """Run a machine operation as a job; on success the reply carries the machine."""
    reply = await run_as_job(inv, kind, args)
    name = args["name"]
    if not reply.ok or kind == "machine.destroy":
        return reply
    status = inv.services.machines.status(name)
    return replace(reply, data={**status_json(status), "job": reply.job_id})


@verb("create", role=Role.OPERATOR, mutating=True, positionals=[NAME], flags=[
    Flag("image", "image to clone (default: the configured default image)", "IMG"),
    Flag("cpu", "CPU limit in CPUs, e.g. 1.5", "N"),
    Flag("memory", "memory limit, e.g. 512M or 2G", "SIZE"),
    Flag("no-start", "create it stopped"),
    Flag("ipv4", "auto (default), none, or ADDRESS/PREFIX in the IPv4 pool", "ADDR"),
    Flag("ipv6", "auto (default), none, or ADDRESS/PREFIX in the IPv6 pool", "ADDR"),
])
async def run_create(inv: Invocation) -> Reply:
    """Create a machine: a copy-on-write clone of an image, booted.

    Steps: clone → configure (fresh machine-id, hostname, settings) → start → wait until
    the machine's own systemd reports running. Names: 1–12 lowercase letters, digits and
    hyphens, starting with a letter.
    """
    name = machine_name(inv.args.positionals["NAME"])
    image_flag = inv.args.flag("image")
    image = image_name(str(image_flag)) if image_flag else inv.services.images.config.default
    cpu = _cpu(inv.args.flag("cpu"))
    memory = inv.args.flag("memory")
    addresses = {str(f): str(inv.args.flag(str(f)) or "auto") for f in Family}
    for family in Family:
        parse_request(addresses[str(family)], family)  # a clear error before any job
    inv.services.machines.check_can_create(name)
    return await run_machine_job(inv, "machine.create", {
        "name": name, "image": image, "cpu": cpu,
        "memory_bytes": parse_size(str(memory)) if memory else None,
        "start": not inv.args.flag("no-start"), **addresses,
    })


@verb("list", role=Role.VIEWER)
async def run_list(inv: Invocation) -> Reply:
    """List machines with their state, image and leader PID."""
    machines = inv.services.machines.all()
    return Reply(text=render("replies/machine_list.txt.j2", machines=machines),
                 data={"machines": [status_json(m) for m in machines]})


@verb("status", role=Role.VIEWER, positionals=[NAME])
async def run_status(inv: Invocation) -> Reply:
    """Show one machine: state, image, leader PID, limits, when it was created."""
    status = inv.services.machines.status(machine_name(inv.args.positionals["NAME"]))
    return Reply(text=render("replies/machine_status.txt.j2", m=status),
                 data=status_json(status))


@verb("start", role=Role.OPERATOR, mutating=True, positionals=[NAME])
async def run_start(inv: Invocation) -> Reply:
    """Start a stopped machine and wait until it has booted."""
    return await run_machine_job(inv, "machine.start",
                              {"name": machine_name(inv.args.positionals["NAME"])})


@verb("stop", role=Role.OPERATOR, mutating=True, positionals=[NAME])
async def run_stop(inv: Invocation) -> Reply:
    """Power a machine off cleanly (killed if it does not stop in time)."""
    return await run_machine_job(inv, "machine.stop",
                              {"name": machine_name(inv.args.positionals["NAME"])})


@verb("restart", role=Role.OPERATOR, mutating=True, positionals=[NAME])
async def run_restart(inv: Invocation) -> Reply:
    """Power a machine off and boot it again."""
    return await run_machine_job(inv, "machine.restart",
                              {"name": machine_name(inv.args.positionals["NAME"])})


@verb("destroy", role=Role.OPERATOR, mutating=True, confirm=True, positionals=[NAME])
async def run_destroy(inv: Invocation) -> Reply:
    """Stop a machine and delete it with everything written inside it. Cannot be undone."""
    name = machine_name(inv.args.positionals["NAME"])
    inv.services.machines.status(name)  # a clear "no such machine" before a job starts
    return await run_machine_job(inv, "machine.destroy", {"name": name})


@verb("exec", role=Role.ADMIN, positionals=[NAME], passthrough="CMD",
      flags=[Flag("timeout", f"seconds before the command is killed (default 60, at most "
                             f"{EXEC_TIMEOUT_MAX})", "SECONDS")])
async def run_exec(inv: Invocation) -> Reply:
    """Run a command inside a running machine and show its output: `exec web1 -- uname -a`.

    The command runs as root in all the machine's namespaces, without a shell (write
    `-- sh -c '…'` for one). Output is cut at 64 KiB.
    """
    name = machine_name(inv.args.positionals["NAME"])
    argv = list(inv.args.passthrough)
    if not argv:
        raise InvalidInput("give the command after `--`, e.g. `exec web1 -- uname -a`")
    raw_timeout = inv.args.flag("timeout")
    timeout = 60 if raw_timeout is None else parse_count(str(raw_timeout),
                                                         maximum=EXEC_TIMEOUT_MAX)
    result = await inv.services.machines.exec(name, argv, timeout=timeout)
    text = render("replies/exec.txt.j2", name=name, command=shlex.join(argv), result=result)
    return Reply(text=text, data={"name": name, "argv": argv, "exit_code": result.returncode,
                                  "stdout": result.stdout, "stderr": result.stderr})


@verb("logs", role=Role.OPERATOR, positionals=[NAME, Positional("N", required=False)])
async def run_logs(inv: Invocation) -> Reply:
    """Show the last N lines (default 50) of a machine's journal, or its console log
    when it is not running."""
    name = machine_name(inv.args.positionals["NAME"])
    raw = inv.args.positionals.get("N")
    lines = 50 if raw is None else parse_count(raw, maximum=1000)
    text = await inv.services.machines.logs(name, lines)
    return Reply(text=text.rstrip() or "(empty)", data={"name": name, "lines": text})


def _cpu(raw: str | bool | None) -> float | None:
    if raw is None:
        return None
    try:
        value = float(str(raw))
    except ValueError:
        raise InvalidInput(f"--cpu `{raw}` is not a number; write e.g. 1 or 0.5") from None
    if not 0.05 <= value <= 512:
        raise InvalidInput(f"--cpu must be from 0.05 to 512 CPUs, not {value:g}")
    return value
