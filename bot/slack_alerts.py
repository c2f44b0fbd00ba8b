"""Health alerts into Slack: chat.postMessage and chat.update in `[health] channel`."""

from __future__ import annotations

import html
import logging

from slack_sdk.web.async_client import AsyncWebClient

log = logging.getLogger(__name__)


class SlackAlerts:
    """services.health.incidents.Alerts over Slack's Web API (the bot's own token).

    Text is escaped as Slack's mrkdwn requires (&, <, >): an error a machine sends back
    (an SSH banner, an HTTP status line) cannot become a mention (<!channel>) or a link.

    A channel given as ``#name`` is what chat.postMessage accepts; chat.update needs the
    id, so the one Slack answers with is kept.

    Each message names the host whose ctbot checked (``[hosts] name``): the hosts of one
    fleet post to one channel, each its own machines' incidents."""

    def __init__(self, client: AsyncWebClient, channel: str, *, host: str | None = None
                 ) -> None:
        self.client = client
        self.channel = channel
        self.host = host

    def _text(self, text: str) -> str:
        signed = f"{text}\n_host `{self.host}`_" if self.host else text
        return html.escape(signed, quote=False)

    async def post(self, text: str, *, thread_ts: str | None = None,
                   channel: str | None = None) -> str | None:
        response = await self.client.chat_postMessage(
            channel=channel or self.channel, text=self._text(text),
            thread_ts=thread_ts, unfurl_links=False, unfurl_media=False)
        if response.get("channel") and channel is None:
            self.channel = str(response["channel"])
        ts = response.get("ts")
        return str(ts) if ts else None

    async def update(self, ts: str, text: str, *, channel: str | None = None) -> None:
        await self.client.chat_update(channel=channel or self.channel, ts=ts,
                                      text=self._text(text))
