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
SECTIONS_KEPT = 40  # of Slack's 50 blocks a message: room for buttons and a cut note
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
    """Sections of at most SECTION_LIMIT characters, at most SECTIONS_KEPT of them (Slack
    takes 50 blocks a message: "Block Kit", limits); several lines go in a code block.

    A longer text keeps its first and last sections with a note of what was cut
    between them (a log's end is what is asked for as often as its start)."""
    # Slack reads &, < and > as markup (<!channel>, <@U…>, links): text from users and
    # machines is shown as it is, never as a mention (Slack: "Escaping text"). Chunks are
    # cut before escaping, so an entity is never split; a ``` in the text would end the
    # code block early: a zero-width space between its backticks keeps it one.
    raw = text.strip() or " "
    code = "\n" in raw
    limit = SECTION_LIMIT - 6 if code else SECTION_LIMIT  # the ``` around a code block
    pieces, start = [], 0
    while start < len(raw):
        end = min(len(raw), start + limit)
        while len(escaped := _escape(raw[start:end], code=code)) > limit:
            end = start + max(1, (end - start) * limit // len(escaped) - 1)
        pieces.append((end - start, escaped))
        start = end
    chunks = [escaped for _, escaped in pieces]
    if len(chunks) > SECTIONS_KEPT:
        half = SECTIONS_KEPT // 2
        cut = sum(size for size, _ in pieces[half:-half])
        chunks = [*chunks[:half], f"… {cut} characters cut here (`ctbot cmd` on the host, or "
                  "--json, shows everything) …", *chunks[-half:]]
    if code:
        chunks = [c if c.startswith("… ") else f"```{c}```" for c in chunks]
    return [SectionBlock(text=MarkdownTextObject(text=c)) for c in chunks]


def _escape(text: str, *, code: bool) -> str:
    escaped = html.escape(text, quote=False)
    return escaped.replace("```", "`\u200b`\u200b`") if code else escaped


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
