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


def needs_confirmation(usage: str, *, webhook: bool = False) -> str:
    if webhook:
        return (f"`{usage}` cannot be undone: a webhook rule runs it only with "
                "`confirm = true` in its config")
    return (f"`{usage}` cannot be undone. Confirm to go ahead (the button in Slack, "
            "`--yes` on the command line or in the console).")


PRIVATE_KEY_REDACTED = "[a private key was pasted here; not stored]"


def private_key_pasted() -> str:
    return ("that is a PRIVATE key: it was not stored anywhere, but treat it as seen "
            "(make a new one if it went through chat). Paste the public key instead: the "
            "one line of your .pub file (`cat ~/.ssh/id_ed25519.pub`)")


def not_utf8() -> str:
    return "the command is not UTF-8 text; type it again (check the terminal's encoding)"
