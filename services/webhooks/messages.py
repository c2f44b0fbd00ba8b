"""What webhooks say to people: replies, channel posts, doctor."""

from __future__ import annotations

from collections.abc import Sequence

from services.grammar import printable


def unknown_webhook(name: str, known: Sequence[str]) -> str:
    if not known:
        return (f"no webhook {printable(name)}: none is configured (add a [[webhooks]] "
                "entry to the settings file; see the README's Webhooks section)")
    return f"no webhook {printable(name)}; configured: {', '.join(known)}"


def unknown_delivery(name: str, delivery_id: str) -> str:
    return (f"webhook `{name}` has no delivery {printable(delivery_id)} (deliveries are "
            "kept 7 days)")


def no_secret(name: str, variables: Sequence[str]) -> str:
    return (f"webhook `{name}` refuses every request: its secret is not set "
            f"({' or '.join(variables)} in ctbot's environment)")


def posted_result(name: str, delivery_id: str, command: str, text: str) -> str:
    return f"webhook `{name}` · delivery `{delivery_id}` · `{command}`\n{text}"


def skipped(running: str | None) -> str:
    return (f"skipped: delivery {running} of the same rule was running (skip-if-running)"
            if running else "skipped: the rule's command was running (skip-if-running)")


def coalesced(newer: str) -> str:
    return f"coalesced: delivery {newer} came while this one waited, and runs instead"


def no_rule() -> str:
    return "no rule matched"
