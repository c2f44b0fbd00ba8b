"""Verbs for machines: create, list, status, start, stop, restart, destroy, exec, logs."""

from __future__ import annotations

import shlex
from dataclasses import replace
from functools import partial

from handlers.context import Invocation, Reply, Transport
from handlers.grammar import Flag, Positional
from handlers.jobs import run_job
from handlers.registry import verb
from handlers.roles import Role
from handlers.routing import remote_request
from services.core.errors import Conflict, InvalidInput
from services.grammar.addresses import AUTO, Family, address_request
from services.grammar.features import FEATURES
from services.grammar.names import image_name, machine_name, machine_ref
from services.grammar.numbers import count, cpu, memory_limit, seconds
from services.hosts.answers import Unreadable, machine_rows, one_line
from services.hosts.service import LOCAL
from services.machines import inside, messages
from services.machines.specs import CreateSpec, MachineRef
from services.nesting import messages as nesting_messages
from services.nesting.records import InnerCreate, InnerRef
from services.network.part import PART_NAME as NETWORK
from services.network.part import Addressing
from services.ssh.part import PART_NAME as SSH
from services.ssh.part import SshOptions

NAME = Positional("NAME", parse=machine_name)
# A machine or one inside another: NAME or OUTER/INNER (services/nesting/).
MACHINE = Positional("NAME", parse=machine_ref)
EXEC_TIMEOUT_DEFAULT, EXEC_TIMEOUT_MAX = 60, 600
LOGS_DEFAULT, LOGS_MAX = 50, 1000


def require(inv: Invocation, name: str) -> None:
    """"No such machine" for a machine or one inside another, before anything runs."""
    if "/" in name:
        inv.services.inner.require(name)
    else:
        inv.services.machines.require(name)


def address_flag(family: Family, default: str) -> Flag:
    return Flag(str(family), f"{default}, none, or ADDRESS/PREFIX in the IPv{family.version} "
                "pool", "ADDR", parse=partial(address_request, family=family))


@verb("create", role=Role.OPERATOR, mutating=True, positionals=[NAME], flags=[
    Flag("image", "image to clone (default: the configured default image)", "IMG",
         parse=image_name),
    Flag("cpu", "CPU limit in CPUs, e.g. 1.5", "N", parse=cpu),
    Flag("memory", "memory limit, e.g. 512M or 2G", "SIZE", parse=memory_limit),
    Flag("pids", "most processes at once (default 16384)", "N",
         parse=lambda raw: count(raw, maximum=4_194_304)),
    Flag("no-start", "create it stopped"),
    Flag("docker", "with Docker inside (overlay2 storage, dockerd ready when it is)"),
    Flag("nesting", "may run machines of its own (systemd-nspawn inside)"),
    Flag("in", "create it inside OUTER, a --nesting machine (it is then OUTER/NAME)",
         "OUTER", parse=machine_name),
    address_flag(Family.V4, "auto (default)"),
    address_flag(Family.V6, "auto (default)"),
])
async def run_create(inv: Invocation) -> Reply:
    """Create a machine: a copy-on-write clone of an image, booted.

    Steps: clone → configure (fresh machine-id, hostname, host keys, settings) → start →
    wait until the machine's own systemd reports running. Names: 1–12 lowercase letters,
    digits and hyphens, starting with a letter. If you have SSH keys (`key add`), you get
    root access to it (`ssh NAME` says how to connect).
    """
    name = inv.args["NAME"]
    addressing = Addressing({f: inv.args.flags.get(str(f), AUTO) for f in Family})
    if outer := inv.args.get("in"):
        return await _create_inner(inv, outer, name, addressing)
    inv.services.machines.check_can_create(name, memory_bytes=inv.args.get("memory"))
    inv.services.networking.addresses.check_all(name, addressing.requests)  # before a job
    return await run_job(inv, "machine.create", CreateSpec(
        name=name, image=inv.args.get("image") or inv.services.images.config.default,
        cpu=inv.args.get("cpu"), memory_bytes=inv.args.get("memory"), pids=inv.args.get("pids"),
        start=not inv.args.get("no-start"),
        features=tuple(f for f in FEATURES if inv.args.get(f)),
        options={NETWORK: addressing, SSH: SshOptions(creator=inv.person)}))


async def _create_inner(inv: Invocation, outer: str, name: str,
                        addressing: Addressing) -> Reply:
    unsupported = [f"--{f}" for f in ("pids", "no-start", "nesting") if inv.args.get(f)]
    if unsupported:
        raise InvalidInput(messages.not_for_inner(unsupported))
    spec = InnerCreate(
        outer=outer, name=name, image=inv.args.get("image") or inv.services.images.config.default,
        requests=addressing.requests, memory_bytes=inv.args.get("memory"),
        cpu=inv.args.get("cpu"), creator=inv.person, docker=bool(inv.args.get("docker")))
    inv.services.inner.check_limits(spec)  # before a job: nothing is made if refused
    inv.services.networking.addresses.check_all(f"{outer}/{name}", addressing.requests)
    return await run_job(inv, "inner.create", spec)


@verb("list", role=Role.VIEWER)
async def run_list(inv: Invocation) -> Reply:
    """List machines with their state, image and leader PID; machines inside a running
    --nesting machine are listed under it as OUTER/INNER."""
    machines = []
    for machine in inv.services.machines.all():
        shown = machine.to_json()
        if inv.services.inner.of(machine.name):
            shown["inner"] = await inv.services.inner.list_json(machine.name)
        machines.append(shown)
    hosts = inv.services.hosts
    # A controller asking this host gets this host's machines only (never a fan-out).
    names = hosts.names() if hosts is not None and inv.request.transport \
        is not Transport.REMOTE else []
    if not names:
        return Reply(data={"machines": machines}, view="machine_list")
    # Several hosts: this one's first, then each other's (asked all at once, each within
    # [hosts] timeout); a host that does not answer is marked, the others are listed.
    assert hosts is not None
    for shown in machines:
        shown["host"] = LOCAL
    unreachable = []
    answers = await hosts.gather(names, replace(remote_request(inv, ["list"]),
                                                wants_text=False))
    for name in names:
        answer = answers[name]
        try:
            if isinstance(answer, str):
                raise Unreadable(answer)
            if answer.outcome != "ok":
                raise Unreadable(str(answer.data.get("error") or answer.outcome))
            rows = machine_rows(answer.data.get("machines"))
        except Unreadable as exc:
            unreachable.append({"host": name, "error": one_line(str(exc))})
            continue
        machines.extend({**row, "host": name} for row in rows)
    return Reply(data={"machines": machines, "unreachable": unreachable},
                 view="machine_list")


@verb("status", role=Role.VIEWER, positionals=[MACHINE])
async def run_status(inv: Invocation) -> Reply:
    """Show one machine: state, image, leader PID, limits, when it was created."""
    if "/" in inv.args["NAME"]:
        return Reply(data=await inv.services.inner.status(inv.args["NAME"]),
                     view="inner_status")
    status = inv.services.machines.status(inv.args["NAME"]).to_json()
    if inv.services.inner.of(inv.args["NAME"]):
        status["inner"] = await inv.services.inner.usage(inv.args["NAME"])
    return Reply(data=status, view="machine_status")


async def _machine_job(inv: Invocation, kind: str) -> Reply:
    name = inv.args["NAME"]
    if "/" in name:
        inv.services.inner.require(name)
        return await run_job(inv, kind.replace("machine.", "inner."), InnerRef(name))
    inv.services.machines.require(name)  # "no such machine" before a job starts
    return await run_job(inv, kind, MachineRef(name))


@verb("start", role=Role.OPERATOR, mutating=True, positionals=[MACHINE])
async def run_start(inv: Invocation) -> Reply:
    """Start a stopped machine and wait until it has booted."""
    return await _machine_job(inv, "machine.start")


@verb("stop", role=Role.OPERATOR, mutating=True, positionals=[MACHINE])
async def run_stop(inv: Invocation) -> Reply:
    """Power a machine off cleanly (killed if it does not stop in time)."""
    return await _machine_job(inv, "machine.stop")


@verb("restart", role=Role.OPERATOR, mutating=True, positionals=[MACHINE])
async def run_restart(inv: Invocation) -> Reply:
    """Power a machine off and boot it again."""
    return await _machine_job(inv, "machine.restart")


@verb("destroy", role=Role.OPERATOR, mutating=True, confirm=True, positionals=[MACHINE],
      flags=[Flag("recursive", "with the machines inside it (a --nesting machine)")])
async def run_destroy(inv: Invocation) -> Reply:
    """Stop a machine and delete it with everything written inside it. Cannot be undone."""
    name = inv.args["NAME"]
    inner = [] if "/" in name else inv.services.inner.of(name)
    if inner and not inv.args.get("recursive"):
        raise Conflict(nesting_messages.has_inners(name, [r.name for r in inner]))
    for record in inner:  # each its own job, then the outer's
        reply = await run_job(inv, "inner.destroy", InnerRef(record.ref))
        if inv.services.inner.store.get(record.outer, record.name) is not None:
            return reply  # it failed: the outer stays
    return await _machine_job(inv, "machine.destroy")


@verb("exec", role=Role.ADMIN, positionals=[MACHINE], passthrough="CMD",
      flags=[Flag("timeout", f"seconds before the command is killed (default "
                             f"{EXEC_TIMEOUT_DEFAULT}, at most {EXEC_TIMEOUT_MAX})", "SECONDS",
                  parse=lambda raw: seconds(raw, maximum=EXEC_TIMEOUT_MAX))])
async def run_exec(inv: Invocation) -> Reply:
    """Run a command inside a running machine and show its output: `exec web1 -- uname -a`.

    The command runs as root in all the machine's namespaces, without a shell (write
    `-- sh -c '…'` for one). Output is cut at 64 KiB.
    """
    name, argv = inv.args["NAME"], list(inv.args.passthrough)
    if not argv:
        raise InvalidInput(messages.give_a_command())
    timeout = inv.args.get("timeout", EXEC_TIMEOUT_DEFAULT)
    result = (await inv.services.inner.exec(name, argv, timeout=timeout) if "/" in name
              else await inside.run(inv.services.machines, name, argv, timeout=timeout))
    return Reply(data={"name": name, "argv": argv, "command": shlex.join(argv),
                       "exit_code": result.returncode, "stdout": result.stdout,
                       "stderr": result.stderr, "truncated": result.truncated}, view="exec")


@verb("logs", role=Role.OPERATOR, positionals=[
    MACHINE, Positional("N", required=False, parse=lambda raw: count(raw, maximum=LOGS_MAX))])
async def run_logs(inv: Invocation) -> Reply:
    """Show the last N lines (default 50) of a machine's journal, or its console log
    when it is not running."""
    name, lines = inv.args["NAME"], inv.args.get("N", LOGS_DEFAULT)
    text = (await inv.services.inner.journal(name, lines) if "/" in name
            else await inside.journal(inv.services.machines, name, lines))
    return Reply(data={"name": name, "lines": text}, view="logs")

