"""Replies as Slack messages: Block Kit from templates, text as the notification fallback."""

from __future__ import annotations

import html
import re
from typing import Any

from handlers.context import Reply
from services.core.templating import render_json

# Slack rejects a section text longer than 3000 characters.
_SECTION_LIMIT = 2900
_SMART_PUNCTUATION = str.maketrans({"“": '"', "”": '"', "‘": "'", "’": "'"})
_DASH_OPTION = re.compile(r"(?<!\S)[—–]")


def normalize_slack_text(text: str) -> str:
    """Undo what Slack does to typed text: HTML escaping and "smart" punctuation.

    Slack escapes ``&<>`` in slash command text, and desktop clients turn a typed
    ``--`` into an em dash and straight quotes into curly ones.
    """
    text = html.unescape(text).translate(_SMART_PUNCTUATION)
    return _DASH_OPTION.sub("--", text)


def render_blocks(reply: Reply, *, command_text: str | None = None) -> list[dict[str, Any]]:
    if reply.blocks is not None:
        return reply.blocks
    body = reply.text.strip() or " "
    chunks = [body[i:i + _SECTION_LIMIT] for i in range(0, len(body), _SECTION_LIMIT)]
    if "\n" in body:
        chunks = [f"```{c}```" for c in chunks]
    # Slack refuses a button whose value is over 2000 characters (and the whole message
    # with it): such a command is confirmed from a terminal instead.
    confirm = (command_text if reply.needs_confirmation and command_text
               and len(command_text) <= 2000 else None)
    blocks: list[dict[str, Any]] = render_json("replies/reply.blocks.json.j2", chunks=chunks,
                                               confirm=confirm)
    return blocks


def notification_text(reply: Reply) -> str:
    first = reply.text.strip().split("\n", 1)[0]
    return first[:300] or "ctbot"
