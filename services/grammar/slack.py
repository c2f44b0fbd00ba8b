"""Who and where in chat: a user by immutable id (a Slack user id, a mention as Slack
sends it, or ``local`` for the host's own operator) and a Slack channel.

    user          := "local" | [UW] [A-Z0-9]{2,20} | "<@" id [ "|" label ] ">"   (Slack ids)
"""

from __future__ import annotations

import re

from services.core.errors import InvalidInput
from services.grammar.text import printable

# Slack user ids: U… for users, W… for Enterprise Grid users, B… for bots. Local callers
# (`ctbot cmd`, the console) are the reserved id "local".
SLACK_USER_ID_RE = re.compile(r"[UWB][A-Z0-9]{2,20}")
_MENTION_RE = re.compile(r"<@([UW][A-Z0-9]{2,20})(?:\|[^<>]{0,80})?>")
LOCAL_USER = "local"

_CHANNEL_RE = re.compile(r"[CGD][A-Z0-9]{8,12}|#[a-z0-9_\-]{1,80}")


def slack_channel(raw: str) -> str:
    """A channel as chat.postMessage takes it: an id (C…, G…, D…) or ``#name``."""
    if not _CHANNEL_RE.fullmatch(raw):
        raise InvalidInput(f"must be a channel id like C0123456789 or a #name, not "
                           f"{printable(raw)}")
    return raw


def user(raw: str) -> str:
    """A person, by immutable id: ``local``, a Slack user id (``U012ABCDEF``, ``W…``) or a
    Slack mention as Slack sends it (``<@U012ABCDEF|ana>``) → the id. Display names are
    refused: anyone can change theirs."""
    mention = _MENTION_RE.fullmatch(raw)
    if mention is not None:
        return mention.group(1)
    bare = raw.removeprefix("@")
    if raw == LOCAL_USER or (SLACK_USER_ID_RE.fullmatch(bare) and bare[0] in "UW"):
        return bare
    raise InvalidInput(f"{printable(raw)} is not a user ctbot can tell by id: in Slack, "
                       "mention them (pick @ana from the list, so Slack sends their id); "
                       "elsewhere give their Slack user id (U012ABCDEF: their profile → ⋮ "
                       "→ Copy member ID), or `local` for the host's own operator")
