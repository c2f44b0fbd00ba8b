"""Raw text as every grammar reads it: shown back safely (``printable``) in the message
that refuses it, and ASCII digits read as a number."""

from __future__ import annotations


def printable(raw: str) -> str:
    """``raw`` as it can be shown safely in chat and logs (no control characters)."""
    if raw.isprintable() and "`" not in raw and len(raw) <= 40:
        return f"`{raw}`"
    return repr(raw[:40]) + ("…" if len(raw) > 40 else "")


def ascii_digits(raw: str, max_digits: int) -> int | None:
    """ASCII digits only: ``int()`` would also take ``٨٠`` (Arabic-Indic) and ``1_000``."""
    if raw.isascii() and raw.isdigit() and len(raw) <= max_digits:
        return int(raw)
    return None
