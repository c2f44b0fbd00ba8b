"""Verbs for machine features (`feature`) and Docker inside machines (`docker`)."""

from __future__ import annotations

from functools import partial

from handlers.context import Invocation, Reply
from handlers.grammar import Flag, Positional
from handlers.jobs import run_job
from handlers.registry import verb
from handlers.roles import Role
from handlers.verbs.machines import NAME
from services.core.errors import Conflict, InvalidInput
from services.docker import commands
from services.grammar.features import feature, on_off
from services.grammar.names import container
from services.grammar.numbers import count
from services.machines.specs import FeatureChange
from services.nesting import messages as nesting_messages

ACTIONS = ("ps", "images", "logs", "start", "stop", "restart", "inspect")
NEEDS_CONTAINER = ("logs", "start", "stop", "restart", "inspect")
LOGS_DEFAULT, LOGS_MAX = 100, 5000


def action(raw: str) -> str:
    if raw not in ACTIONS:
        raise InvalidInput(f"`{raw[:40]}` is not a docker action: {', '.join(ACTIONS)} "
                           "(anything else: `exec NAME -- docker …`, admins)")
    return raw


@verb("feature", role=Role.OPERATOR, mutating=True, positionals=[
    NAME, Positional("FEATURE", parse=feature), Positional("on|off", parse=on_off)],
    flags=[Flag("restart", "restart a running machine now to apply it")])
async def run_feature(inv: Invocation) -> Reply:
    """Turn a feature of a machine on or off: `feature web1 docker on`.

    It applies at the machine's next start (`--restart` restarts it now). Docker: on
    gives the machine an image with Docker (derived once from its own) and a Docker
    directory of its own on the host; off stops dockerd from starting, and keeps
    containers and images for when it is on again. Nesting: on lets it run machines
    inside (`create INNER --in NAME`); off is refused while it has any.
    """
    name = inv.args["NAME"]
    inv.services.machines.require(name)
    inner = inv.services.inner.of(name)
    if inv.args["FEATURE"] == "nesting" and not inv.args["on|off"] and inner:
        raise Conflict(nesting_messages.has_inners_for_off(name, [r.name for r in inner]))
    return await run_job(inv, "machine.feature", FeatureChange(
        name, inv.args["FEATURE"], inv.args["on|off"], bool(inv.args.get("restart"))))


@verb("docker", role=Role.OPERATOR, positionals=[
    NAME, Positional("ACTION", parse=action),
    Positional("CONTAINER", required=False, parse=container),
    Positional("N", required=False, parse=partial(count, maximum=LOGS_MAX))])
async def run_docker(inv: Invocation) -> Reply:
    """Docker inside a machine: `docker web1 ps`, `images`, `logs CONTAINER [N]`,
    `start|stop|restart CONTAINER`, `inspect CONTAINER`.

    Runs inside the machine with its confinement, as `exec` does; anything else is
    `exec NAME -- docker …` (admins).
    """
    name, act = inv.args["NAME"], inv.args["ACTION"]
    target = inv.args.get("CONTAINER")
    if act in NEEDS_CONTAINER and target is None:
        raise InvalidInput(f"`docker {name} {act}` needs a CONTAINER (`docker {name} ps`)")
    if act not in NEEDS_CONTAINER and target is not None:
        raise InvalidInput(f"`docker {name} {act}` takes no container")
    if inv.args.get("N") is not None and act != "logs":
        raise InvalidInput("only `logs` takes a number of lines")
    machines = inv.services.machines
    if act == "ps":
        return Reply(view="docker_ps", data={"name": name, "containers":
                                             await commands.ps(machines, name)})
    if act == "images":
        return Reply(view="docker_images", data={"name": name, "images":
                                                 await commands.images(machines, name)})
    if act == "logs":
        lines = inv.args.get("N") or LOGS_DEFAULT
        return Reply(view="docker_logs", data={"name": name, "lines": lines, "text":
                                        await commands.logs(machines, name, target, lines)})
    if act == "inspect":
        return Reply(view="docker_inspect", data=await commands.inspect(machines, name, target))
    said = await commands.lifecycle(machines, name, act, target)
    return Reply(view="docker_done", data={"name": name, "action": act, "container": target,
                                           "said": said})
