"""Verbs for health checks: `health …` (states, history, digest, mutes), `check …`."""

from __future__ import annotations

from handlers.context import Invocation, Reply, Transport
from handlers.grammar import Flag, Positional
from handlers.registry import verb
from handlers.roles import Role
from handlers.routing import remote_request
from handlers.verbs.machines import MACHINE
from services.core.errors import InvalidInput
from services.grammar.names import machine_ref
from services.grammar.numbers import count, seconds
from services.grammar.text import printable
from services.health import messages
from services.health.targets import check_id
from services.hosts.answers import Unreadable, one_line, text
from services.hosts.protocol import RemoteReply

MAX_MUTE = 30 * 86400
MAX_REASON = 200


def mute_target(raw: str) -> str:
    """A machine (NAME or OUTER/INNER) or `all`."""
    return raw if raw == "all" else machine_ref(raw)


def reason(raw: str) -> str:
    if len(raw) > MAX_REASON or not raw.isprintable():
        raise InvalidInput(f"a reason is one line of at most {MAX_REASON} characters, not "
                           f"{printable(raw)}")
    return raw


def status_code(raw: str) -> int:
    """An HTTP status code, 100 to 599 (RFC 9110 §15)."""
    if not (raw.isascii() and raw.isdigit() and len(raw) == 3 and 100 <= int(raw) <= 599):
        raise InvalidInput(messages.bad_status(printable(raw)))
    return int(raw)


@verb("health", role=Role.VIEWER,
      positionals=[Positional("NAME", required=False, parse=machine_ref)])
async def run_health(inv: Invocation) -> Reply:
    """Each check's state (up, down, unknown and why), last RTT, uptime over 24 h and 7 d,
    per family; open incidents and mutes. Checks run in `ctbot serve` every
    `[health] interval` seconds: ICMP and SSH over IPv4 and IPv6 for every machine, plus
    those added with `check add`. Also: `health history NAME`, `health digest`,
    `health mute NAME|all DURATION`, `health unmute NAME|all`.
    """
    data = dict(inv.services.health.report(inv.args.get("NAME")))
    hosts = inv.services.hosts
    names = hosts.names() if hosts is not None and not inv.args.get("NAME") \
        and inv.request.transport is not Transport.REMOTE else []
    if names:
        # Each host checks its own machines (its own ctbot's schedule): gathered here.
        assert hosts is not None
        answers = await hosts.gather(names, remote_request(inv, ["health"]))
        data["hosts"] = [_host_health(name, answer) for name, answer in answers.items()]
    return Reply(view="health", data=data)


@verb("health history", role=Role.VIEWER,
      positionals=[MACHINE],
      flags=[Flag("days", "how far back (default 7, at most 90)", "N",
                  parse=lambda raw: count(raw, maximum=90))])
async def run_health_history(inv: Invocation) -> Reply:
    """A machine's incidents: when, how long, which checks, how each ended."""
    return Reply(view="health_history", data=inv.services.health.history(
        inv.args["NAME"], inv.args.get("days", 7)))


@verb("health digest", role=Role.VIEWER)
async def run_health_digest(inv: Invocation) -> Reply:
    """The daily digest, now: machines up, uptime per machine and family over 24 h, the
    day's incidents, the slowest RTTs (posted to `[health] channel` at `digest_at`)."""
    return Reply(view="health_digest", data=inv.services.health.digest())


@verb("health mute", role=Role.OPERATOR, mutating=True,
      positionals=[Positional("NAME|all", parse=mute_target),
                   Positional("DURATION", parse=lambda raw: seconds(raw, maximum=MAX_MUTE))],
      flags=[Flag("reason", "why (shown in `health` and in the state of each check)",
                  "TEXT", parse=reason)])
async def run_health_mute(inv: Invocation) -> Reply:
    """Maintenance: a machine's checks (or `all`) are UNKNOWN and never alert for
    DURATION (`30m`, `2h`, `1d`; at most 30d). `health unmute` ends it early; the checks
    then start over."""
    mute = inv.services.health.mute(inv.args["NAME|all"], inv.args["DURATION"],
                                    inv.args.get("reason", ""), inv.user_id)
    return Reply(view="health_muted", data=mute.to_json())


@verb("health unmute", role=Role.OPERATOR, mutating=True,
      positionals=[Positional("NAME|all", parse=mute_target)])
async def run_health_unmute(inv: Invocation) -> Reply:
    """End a mute: the machine's checks are evaluated again from the next sweep.
    `health unmute all` ends `health mute all`; machines muted by name stay muted."""
    inv.services.health.unmute(inv.args["NAME|all"])
    return Reply(view="health_unmuted", data={"target": inv.args["NAME|all"]})


@verb("check add", role=Role.OPERATOR, mutating=True,
      positionals=[MACHINE, Positional("CHECK")],
      flags=[Flag("expect", "the HTTP status that means up (default 200)", "STATUS",
                  parse=status_code),
             Flag("insecure", "https: do not verify the server's certificate")])
async def run_check_add(inv: Invocation) -> Reply:
    """Add a check to a machine: `tcp:PORT`, `http://NAME[:PORT]/PATH` or `https://…`
    (NAME is the machine's; the check goes to each of its addresses, IPv4 and IPv6).
    """
    spec = inv.services.health.add_check(
        inv.args["NAME"], inv.args["CHECK"], expect=inv.args.get("expect"),
        insecure=bool(inv.args.get("insecure")), added_by=inv.user_id)
    return Reply(view="check_added", data={"machine": inv.args["NAME"], **spec.to_json()})


@verb("check list", role=Role.VIEWER,
      positionals=[Positional("NAME", required=False, parse=machine_ref)])
async def run_check_list(inv: Invocation) -> Reply:
    """Every machine's checks: the built-in icmp and ssh, and those added (with the ID
    `check remove` takes)."""
    checks = inv.services.health.checks(inv.args.get("NAME"))
    return Reply(view="check_list", data={"machines": [
        {"machine": m, "checks": [c.to_json() for c in specs]} for m, specs in checks.items()]})


@verb("check remove", role=Role.OPERATOR, mutating=True,
      positionals=[MACHINE, Positional("ID", parse=check_id)])
async def run_check_remove(inv: Invocation) -> Reply:
    """Remove a check added with `check add` (ID as `check list` shows it, e.g. c3)."""
    inv.services.health.remove_check(inv.args["NAME"], inv.args["ID"])
    return Reply(view="check_removed", data={"machine": inv.args["NAME"],
                                             "id": inv.args["ID"]})


def _host_health(name: str, answer: RemoteReply | str) -> dict[str, object]:
    """One host's part of `health`: its text (checked, shown indented under its name in
    the view), or why there is none, on one line."""
    try:
        if isinstance(answer, str):
            raise Unreadable(answer)
        if answer.outcome != "ok":
            raise Unreadable(str(answer.data.get("error") or answer.outcome))
        return {"name": name, "reachable": True, "text": text(answer.text)}
    except Unreadable as exc:
        return {"name": name, "reachable": False, "error": one_line(str(exc))}
