"""The grammar of names, enforced before any path, argv or file is built from one.

    machine name := [a-z] ( [a-z0-9-]{0,10} [a-z0-9] )?      1–12 characters
    image name   := [a-z] ( [a-z0-9-]{0,30} [a-z0-9] )?      1–32 characters

Twelve characters keep every derived name valid: host interface names are at most 15
bytes, and ctbot derives them as a 3-character prefix plus the machine name (``ve-web1``).
"""

from __future__ import annotations

import re

from services.core.errors import InvalidInput

MACHINE_NAME_MAX = 12
IMAGE_NAME_MAX = 32

_MACHINE_RE = re.compile(r"[a-z](?:[a-z0-9-]{0,10}[a-z0-9])?")
_IMAGE_RE = re.compile(r"[a-z](?:[a-z0-9-]{0,30}[a-z0-9])?")

MACHINE_NAME_RULE = (f"1–{MACHINE_NAME_MAX} lowercase letters, digits and hyphens, starting "
                     "with a letter and not ending with a hyphen (e.g. `web1`)")
IMAGE_NAME_RULE = (f"1–{IMAGE_NAME_MAX} lowercase letters, digits and hyphens, starting "
                   "with a letter and not ending with a hyphen (e.g. `bookworm`)")


def machine_name(raw: str) -> str:
    """``raw`` if it is a valid machine name; InvalidInput saying why otherwise."""
    return _check(raw, _MACHINE_RE, "machine name", MACHINE_NAME_RULE, MACHINE_NAME_MAX)


def image_name(raw: str) -> str:
    return _check(raw, _IMAGE_RE, "image name", IMAGE_NAME_RULE, IMAGE_NAME_MAX)


def _check(raw: str, pattern: re.Pattern[str], what: str, rule: str, maximum: int) -> str:
    if pattern.fullmatch(raw):
        return raw
    shown = _printable(raw)
    if not raw:
        reason = "it is empty"
    elif len(raw) > maximum:
        reason = f"it has {len(raw)} characters"
    elif not raw.isascii():
        reason = "it has non-ASCII characters"
    elif any(c.isupper() for c in raw):
        reason = "it has uppercase letters"
    elif not raw[0].isalpha():
        reason = "it does not start with a letter"
    elif raw.endswith("-"):
        reason = "it ends with a hyphen"
    else:
        reason = "it has characters other than a-z, 0-9 and -"
    raise InvalidInput(f"{what} {shown} is not valid: {reason}. Use {rule}.")


def _printable(raw: str) -> str:
    """The name as it can be shown safely in chat and logs (no control characters)."""
    if raw.isprintable() and "`" not in raw and len(raw) <= 40:
        return f"`{raw}`"
    return repr(raw[:40]) + ("…" if len(raw) > 40 else "")
