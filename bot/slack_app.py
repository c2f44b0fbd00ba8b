"""The Bolt app: turns `/ct …` and the confirm button into dispatcher calls.

Used by both Slack transports: HTTP (bot/web.py feeds it verified requests) and
Socket Mode (bot/socket_mode.py). Ack first, then work: the ack goes out before the
command runs, and the real reply follows through ``response_url``.
"""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.app.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient

from bot.runtime import Runtime, new_correlation_id
from bot.settings import SlackSettings
from bot.slack_progress import SlackJobMessage
from bot.slack_render import normalize_slack_text, notification_text, render_blocks
from handlers.context import CommandRequest, Reply, Transport
from handlers.roles import is_slack_user_id

log = logging.getLogger(__name__)


def build_web_client(slack: SlackSettings) -> AsyncWebClient:
    return AsyncWebClient(token=slack.bot_token, base_url=slack.api_url, timeout=10)


def build_bolt_app(runtime: Runtime, *, transport: Transport) -> AsyncApp:
    slack = runtime.settings.slack
    app = AsyncApp(
        client=build_web_client(slack),
        signing_secret=slack.signing_secret or "",
        # Socket Mode has no signatures; over HTTP bot/slack_guard.py and Bolt both check.
        request_verification_enabled=transport is Transport.SLACK,
        process_before_response=False,
        raise_error_for_unhandled_request=False,
    )
    dispatcher = runtime.dispatcher

    async def run_and_respond(*, text: str, user_id: str, channel_id: str | None,
                              confirmed: bool, respond: AsyncRespond,
                              client: AsyncWebClient) -> None:
        cid = new_correlation_id()
        if not is_slack_user_id(user_id):
            log.warning("slack payload with a malformed user id ignored cid=%s", cid)
            return
        observer = SlackJobMessage(client, channel_id) if channel_id else None
        reply = await dispatcher.dispatch(CommandRequest(
            text=text, user_id=user_id, transport=transport, correlation_id=cid,
            channel_id=channel_id, confirmed=confirmed, observer=observer,
        ))
        if reply.job_id is not None and observer is not None and observer.posted:
            return  # the job's own message already shows how it ended
        await _respond(respond, reply, command_text=text)

    @app.command(slack.command)
    async def on_slash_command(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond,
                               client: AsyncWebClient) -> None:
        text = normalize_slack_text(body.get("text", ""))
        if dispatcher.is_mutating(text):
            await ack(text=f"⏳ `{slack.command} {text}` …", response_type="ephemeral")
        else:
            await ack()
        await run_and_respond(text=text, user_id=body["user_id"],
                              channel_id=body.get("channel_id"), confirmed=False,
                              respond=respond, client=client)

    @app.action("ct_confirm")
    async def on_confirm(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any],
                         respond: AsyncRespond, client: AsyncWebClient) -> None:
        await ack()
        text = str(action.get("value", ""))
        # The clicker is authorized again: whoever presses the button must hold the role.
        await respond(text=f"Confirmed by <@{body['user']['id']}>: `{text}`",
                      replace_original=True)
        await run_and_respond(text=text, user_id=body["user"]["id"],
                              channel_id=(body.get("channel") or {}).get("id"),
                              confirmed=True, respond=respond, client=client)

    @app.action("ct_cancel")
    async def on_cancel(ack: AsyncAck, respond: AsyncRespond) -> None:
        await ack()
        await respond(text="Cancelled; nothing was changed.", replace_original=True)

    return app


async def _respond(respond: AsyncRespond, reply: Reply, *, command_text: str) -> None:
    await respond(
        text=notification_text(reply),
        blocks=render_blocks(reply, command_text=command_text),
        response_type=str(reply.visibility),
        replace_original=False,
    )
