"""The Bolt app: turns `/ct …` and the confirm button into dispatcher calls.

Used by both Slack transports: HTTP (bot/web.py feeds it verified requests) and
Socket Mode (bot/socket_mode.py). Ack first, then work: the listener acks and hands
the command to BackgroundWork, so Bolt answers Slack at once
(``process_before_response=True`` avoids Bolt's 10 ms polling for the ack), and the
real reply follows through ``response_url`` on one shared HTTP session.
"""

from __future__ import annotations

import html
import logging
from dataclasses import dataclass
from typing import Any

from slack_bolt.app.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_sdk.web.async_client import AsyncWebClient

from bot.background import BackgroundWork
from bot.runtime import Runtime, new_correlation_id
from bot.settings import SlackSettings
from bot.slack_progress import SlackJobMessage
from bot.slack_render import normalize_slack_text, notification_text, render_blocks
from bot.slack_replies import ReplySender
from handlers.context import CommandRequest, Reply, Transport

log = logging.getLogger(__name__)


def build_web_client(slack: SlackSettings) -> AsyncWebClient:
    return AsyncWebClient(token=slack.bot_token, base_url=slack.api_url, timeout=10)


@dataclass
class SlackBolt:
    """The Bolt app and what it owns: background work and the reply session."""

    app: AsyncApp
    background: BackgroundWork
    replies: ReplySender

    async def close(self) -> None:
        await self.background.drain()
        await self.replies.drain()


def build_bolt_app(runtime: Runtime, *, transport: Transport) -> SlackBolt:
    slack = runtime.settings.slack
    app = AsyncApp(
        client=build_web_client(slack),
        signing_secret=slack.signing_secret or "",
        # Over HTTP, bot/slack_guard.py has verified the signature before Bolt sees the
        # request (stricter than Bolt: timestamp grammar, UTF-8, replays); Socket Mode
        # has no signatures at all.
        request_verification_enabled=False,
        process_before_response=True,
        raise_error_for_unhandled_request=False,
    )
    background = BackgroundWork(limit=4)
    replies = ReplySender(slack.response_origins)
    dispatcher = runtime.dispatcher

    async def run_and_respond(*, text: str, user_id: str, channel_id: str | None,
                              confirmed: bool, response_url: str,
                              client: AsyncWebClient) -> None:
        cid = new_correlation_id()
        # A user id that is not Slack's (even "local") gets no role here: the command is
        # refused and audited like any other (handlers/dispatch.py).
        observer = (SlackJobMessage(client, channel_id, jobs=runtime.jobs.store)
                    if channel_id else None)
        reply = await dispatcher.dispatch(CommandRequest(
            text=text, user_id=user_id, transport=transport, correlation_id=cid,
            channel_id=channel_id, confirmed=confirmed, observer=observer,
        ))
        if reply.job_id is not None and observer is not None and observer.posted:
            return  # the job's own message already shows how it ended
        replies.post(response_url, **reply_message(reply, command_text=text))

    @app.command(slack.command)
    async def on_slash_command(ack: AsyncAck, body: dict[str, Any],
                               client: AsyncWebClient) -> None:
        text = normalize_slack_text(body.get("text", ""))
        if dispatcher.is_mutating(text):
            await ack(text=f"⏳ `{slack.command} {text}` …", response_type="ephemeral")
        else:
            await ack()
        background.spawn(run_and_respond(
            text=text, user_id=str(body.get("user_id", "")), channel_id=body.get("channel_id"),
            confirmed=False, response_url=str(body.get("response_url", "")), client=client,
        ), name="slash-command")

    @app.action("ct_confirm")
    async def on_confirm(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any],
                         client: AsyncWebClient) -> None:
        await ack()
        text = str(action.get("value", ""))
        user_id = str((body.get("user") or {}).get("id", ""))
        response_url = str(body.get("response_url", ""))

        async def confirmed() -> None:
            # Whoever presses must hold the role: checked before the prompt changes, so a
            # refused click leaves the buttons for someone who may press them; the click
            # itself is refused and audited by the dispatch below either way.
            if dispatcher.allowed(text, user_id, transport):
                replies.post(response_url, text=f"Confirmed by <@{user_id}>: "
                             f"`{html.escape(text, quote=False)}`", replace_original=True)
            await run_and_respond(text=text, user_id=user_id,
                                  channel_id=(body.get("channel") or {}).get("id"),
                                  confirmed=True, response_url=response_url, client=client)

        background.spawn(confirmed(), name="confirm")

    @app.action("ct_cancel")
    async def on_cancel(ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        replies.post(str(body.get("response_url", "")), text="Cancelled; nothing was changed.",
                     replace_original=True)

    return SlackBolt(app=app, background=background, replies=replies)


def reply_message(reply: Reply, *, command_text: str) -> dict[str, Any]:
    return {
        "text": notification_text(reply),
        "blocks": render_blocks(reply, command_text=command_text),
        "response_type": str(reply.visibility),
        "replace_original": False,
    }
