"""Verbs about the bot itself: help, whoami, audit."""

from __future__ import annotations

from typing import Any

from handlers.context import Invocation, Reply, Verb
from handlers.grammar import Positional
from handlers.registry import verb
from handlers.roles import Role
from services.grammar.numbers import count

AUDIT_DEFAULT = 20
AUDIT_MAX = 200


def verb_json(v: Verb, role: Role) -> dict[str, Any]:
    return {"verb": v.name, "usage": v.usage, "short_usage": v.short_usage, "role": str(v.role),
            "summary": v.summary, "allowed": role.allows(v.role)}


@verb("help", role=Role.NONE, audited=False,
      positionals=[Positional("VERB", required=False), Positional("SUB", required=False)])
async def run_help(inv: Invocation) -> Reply:
    """Show the commands you can use, or the details of one: `help VERB`."""
    registry = inv.services.registry
    name = inv.args.get("VERB")
    if name is None or (inv.args.get("SUB") is None and name not in registry
                        and registry.group(name)):
        verbs = registry.group(name) if name else [v for v in registry if v.name != "help"]
        return Reply(data={"role": str(inv.role),
                           "verbs": [verb_json(v, inv.role) for v in verbs]}, view="help")
    sub = inv.args.get("SUB")
    v, _ = registry.resolve([name] if sub is None else [name, sub])
    return Reply(data={**verb_json(v, inv.role), "help": v.doc, "details": v.details,
                       "options": [{"usage": f.usage, "help": f.help}
                                   for f in v.signature.flags]},
                 view="help_verb")


@verb("whoami", role=Role.NONE)
async def run_whoami(inv: Invocation) -> Reply:
    """Show your user id and your role on this bot."""
    return Reply(data={"user_id": inv.user_id, "role": str(inv.role),
                       "transport": str(inv.request.transport)}, view="whoami")


@verb("audit", role=Role.ADMIN, positionals=[
    Positional("N", required=False, parse=lambda raw: count(raw, maximum=AUDIT_MAX))])
async def run_audit(inv: Invocation) -> Reply:
    """Show the last N audit entries (default 20, at most 200): who ran what, and how it ended."""
    entries = inv.services.audit.latest(inv.args.get("N", AUDIT_DEFAULT))
    return Reply(data={"entries": [e.to_json() for e in entries]}, view="audit")
