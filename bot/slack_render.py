"""Replies as Slack messages: Block Kit built with slack_sdk's block models, the text as
the notification fallback."""

from __future__ import annotations

import html
import re
from typing import Any

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    MarkdownTextObject,
    SectionBlock,
)

from handlers.context import Reply

# Slack rejects a section text longer than 3000 characters, and a button value longer
# than 2000 (Block Kit reference: section `text`, button `value`).
SECTION_LIMIT = 2900
BUTTON_VALUE_LIMIT = 2000
_SMART_PUNCTUATION = str.maketrans({"“": '"', "”": '"', "‘": "'", "’": "'"})
_DASH_OPTION = re.compile(r"(?<!\S)[—–]")
# With should_escape (slack-app-manifest.yml) Slack sends links as <URL> or <URL|label>;
# mentions stay <@U…|name>: that is how a USER argument names someone by id.
_LINK = re.compile(r"<((?:https?|mailto):[^|>\s]+)(?:\|[^>]*)?>")


def normalize_slack_text(text: str) -> str:
    """Undo what Slack does to typed text: links, HTML escaping, "smart" punctuation.

    Slack sends a link as ``<URL>`` (``<URL|label>``), escapes ``&<>`` typed in slash
    command text, and desktop clients turn a typed ``--`` into an em dash and straight
    quotes into curly ones. Mentions (``<@U012ABC|ana>``) are left for the grammar.
    """
    text = _LINK.sub(lambda m: m.group(1), text)
    text = html.unescape(text).translate(_SMART_PUNCTUATION)
    return _DASH_OPTION.sub("--", text)


def text_blocks(text: str) -> list[Block]:
    """Sections of at most SECTION_LIMIT characters; several lines go in a code block."""
    # Slack reads &, < and > as markup (<!channel>, <@U…>, links): text from users and
    # machines is shown as it is, never as a mention (Slack: "Escaping text").
    body = html.escape(text.strip(), quote=False) or " "
    chunks = [body[i:i + SECTION_LIMIT] for i in range(0, len(body), SECTION_LIMIT)]
    if "\n" in body:
        chunks = [f"```{c}```" for c in chunks]
    return [SectionBlock(text=MarkdownTextObject(text=c)) for c in chunks]


def confirm_buttons(command_text: str) -> ActionsBlock:
    return ActionsBlock(block_id="ct_confirm", elements=[
        ButtonElement(text="Confirm", action_id="ct_confirm", style="danger",
                      value=command_text),
        ButtonElement(text="Cancel", action_id="ct_cancel", value="cancel"),
    ])


def render_blocks(reply: Reply, *, command_text: str | None = None) -> list[dict[str, Any]]:
    blocks = text_blocks(reply.text)
    # A command too long for a button's value is confirmed from a terminal instead.
    if (reply.needs_confirmation and command_text
            and len(command_text) <= BUTTON_VALUE_LIMIT):
        blocks.append(confirm_buttons(command_text))
    return [b.to_dict() for b in blocks]


def notification_text(reply: Reply) -> str:
    first = reply.text.strip().split("\n", 1)[0]
    return html.escape(first[:300], quote=False) or "ctbot"
