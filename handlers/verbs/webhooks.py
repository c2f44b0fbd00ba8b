"""Verbs for webhooks: `webhooks` lists endpoints, rules and what their deliveries did."""

from __future__ import annotations

from handlers.context import Invocation, Reply
from handlers.grammar import Flag, Positional
from handlers.registry import verb
from handlers.roles import Role
from services.grammar.names import webhook_name
from services.grammar.numbers import count


@verb("webhooks", role=Role.ADMIN,
      positionals=[Positional("NAME", required=False, parse=webhook_name)],
      flags=[Flag("last", "how many deliveries per webhook (default 5, at most 100)", "N",
                  parse=lambda raw: count(raw, maximum=100))])
async def run_webhooks(inv: Invocation) -> Reply:
    """Webhook endpoints (`POST /hooks/NAME`, from `[[webhooks]]` in the settings): their
    scheme, role, channel and rules, whether their secret is set, deliveries by outcome
    over 24 h and the last ones (id, state, command, job)."""
    webhooks = inv.services.webhooks
    name = inv.args.get("NAME")
    if name is not None:
        webhooks.config(name)  # NotFound names the configured ones
    data = webhooks.summary(last=inv.args.get("last", 5))
    if name is not None:
        data = {**data, "webhooks": [w for w in data["webhooks"] if w["name"] == name]}
    return Reply(view="webhooks", data=data)
