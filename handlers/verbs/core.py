"""Verbs about the bot itself: help, whoami, audit."""

from __future__ import annotations

from handlers.context import Invocation, Reply
from handlers.grammar import Positional, parse_count
from handlers.registry import verb
from handlers.roles import Role
from services.core.templating import render

AUDIT_DEFAULT = 20
AUDIT_MAX = 200


@verb("help", role=Role.NONE, audited=False,
      positionals=[Positional("VERB", required=False), Positional("SUB", required=False)])
async def run_help(inv: Invocation) -> Reply:
    """Show the commands you can use, or the details of one: `help VERB`."""
    registry = inv.services.registry
    name = inv.args.positionals.get("VERB")
    if name is not None:
        sub = inv.args.positionals.get("SUB")
        if sub is None and name not in registry and registry.group(name):
            verbs = registry.group(name)
            text = render("replies/help.txt.j2", verbs=verbs, role=inv.role)
            return Reply(text=text, data={"verbs": [v.name for v in verbs]})
        v, _ = registry.resolve([name] if sub is None else [name, sub])
        text = render("replies/help_verb.txt.j2", verb=v)
        return Reply(text=text, data={"verb": v.name, "usage": v.usage, "role": v.role,
                                      "help": v.doc})
    verbs = [v for v in registry if v.name != "help"]
    text = render("replies/help.txt.j2", verbs=verbs, role=inv.role)
    return Reply(
        text=text,
        data={"verbs": [{"verb": v.name, "usage": v.usage, "role": v.role,
                         "summary": v.summary, "allowed": inv.role.allows(v.role)}
                        for v in verbs]},
    )


@verb("whoami", role=Role.NONE)
async def run_whoami(inv: Invocation) -> Reply:
    """Show your user id and your role on this bot."""
    text = render("replies/whoami.txt.j2", user_id=inv.user_id, role=inv.role,
                  transport=inv.request.transport)
    return Reply(text=text, data={"user_id": inv.user_id, "role": inv.role,
                                  "transport": inv.request.transport})


@verb("audit", role=Role.ADMIN, positionals=[Positional("N", required=False)])
async def run_audit(inv: Invocation) -> Reply:
    """Show the last N audit entries (default 20, at most 200): who ran what, and how it ended."""
    raw = inv.args.positionals.get("N")
    limit = AUDIT_DEFAULT if raw is None else parse_count(raw, maximum=AUDIT_MAX)
    entries = inv.services.audit.latest(limit)
    text = render("replies/audit.txt.j2", entries=entries)
    return Reply(
        text=text,
        data={"entries": [
            {"id": e.id, "at": e.at, "user_id": e.user_id, "role": e.role,
             "transport": e.transport, "command": e.command, "outcome": e.outcome,
             "detail": e.detail, "correlation_id": e.correlation_id}
            for e in entries
        ]},
    )
