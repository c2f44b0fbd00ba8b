"""Every user-visible message that is not a template, in one place."""

from __future__ import annotations

from handlers.roles import Role


def denied(verb: str, required: Role, have: Role) -> str:
    if have is Role.NONE:
        return (f"`{verb}` needs the {required} role, and you have no role on this bot. "
                "Ask an admin to add your user id to the config (`whoami` shows it).")
    return f"`{verb}` needs the {required} role; you are {have}. Ask an admin if you need it."


def internal_error(correlation_id: str) -> str:
    return (f"Sorry, something went wrong on our side. The details are in ctbot's log "
            f"under `{correlation_id}`.")


def needs_confirmation(usage: str) -> str:
    return (f"`{usage}` cannot be undone. Confirm to go ahead (the button in Slack, "
            "`--yes` on the command line or in the console).")
