"""What webhooks bring in: a delivery's id as its sender sends it, the names of the
environment variables holding their secrets, and ``QuotedWord``, a field a webhook
substituted into its command."""

from __future__ import annotations

import re

from services.core.errors import InvalidInput
from services.grammar.text import printable

# GitHub's X-GitHub-Delivery is a UUID, Standard Webhooks' webhook-id e.g. msg_2b…, an
# Idempotency-Key (IETF draft-ietf-httpapi-idempotency-key-header) any token: printable
# ASCII without spaces, quotes or backslashes, at most 128 characters.
_DELIVERY_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:~+=@/-]{0,127}")
_ENV_NAME_RE = re.compile(r"[A-Z_][A-Z0-9_]{0,63}")


def delivery_id_or_none(raw: str) -> str | None:
    """A delivery id as a sender sends it, or None when it is not one."""
    return raw if _DELIVERY_ID_RE.fullmatch(raw) else None


def env_name(raw: str) -> str:
    """An environment variable's name: uppercase letters, digits and _ (POSIX.1-2017
    §8.1, the portable subset), not starting with a digit."""
    if not _ENV_NAME_RE.fullmatch(raw):
        raise InvalidInput(f"{printable(raw)} is not an environment variable name "
                           "(A–Z, 0–9 and _, not starting with a digit)")
    return raw


class QuotedWord(str):
    """A word of a command line that is a value and nothing else: a field a webhook
    substituted into its command. The command grammar (handlers/grammar.py) binds it to
    a positional or an option's value, never reads it as a verb, an option, ``--`` or
    ``--yes``."""

    __slots__ = ()
