"""What webhooks say to people: replies, channel posts, doctor."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from services.grammar.text import printable

if TYPE_CHECKING:
    from services.webhooks.config import WebhookConfig


def unknown_webhook(name: str, known: Sequence[str], source: str) -> str:
    if not known:
        return (f"no webhook {printable(name)}: the settings read ({source}) have no "
                "[[webhooks]] entry; give `--config FILE` (or CTBOT_CONFIG) as `ctbot "
                "serve` has it")
    return f"no webhook {printable(name)}; configured: {', '.join(known)}"


def unknown_delivery(name: str, delivery_id: str) -> str:
    return (f"webhook `{name}` has no delivery {printable(delivery_id)} (deliveries are "
            "kept 7 days)")


def no_secret(name: str, variables: Sequence[str]) -> str:
    return (f"webhook `{name}` refuses every request: its secret is not set "
            f"({' or '.join(variables)} in ctbot's environment)")


def secret_recipe(config: WebhookConfig) -> str:
    """How to make and set a secret of the webhook's scheme."""
    make = ("echo whsec_$(openssl rand -base64 32)" if config.auth == "standard"
            else "openssl rand -hex 32")
    return (f"set {config.secret_env[0]} in the environment `ctbot serve` runs with, to "
            f"the value the sender has (a new one: `{make}`); doctor checks the "
            "environment it runs in")


def no_channel_client(name: str, channel: str) -> str:
    return (f"webhook `{name}` names channel {channel}, but SLACK_BOT_TOKEN is not set: "
            "results stay in the log, GET …/deliveries/ID and `webhooks`")


def posted_result(name: str, delivery_id: str, command: str, text: str) -> str:
    """A delivery's result as posted to its channel (the poster escapes &, <, >); the
    command is plain text: a value holding a backtick cannot end a code span."""
    return f"webhook `{name}` · delivery `{delivery_id}` · {command}\n{text}"


def skipped(running: str | None) -> str:
    return (f"skipped: delivery {running} of the same rule was running (skip-if-running)"
            if running else "skipped: the rule's command was running (skip-if-running)")


def coalesced(newer: str) -> str:
    return f"coalesced: delivery {newer} came while this one waited, and runs instead"


