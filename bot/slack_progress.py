"""A job's progress as ONE Slack message: posted once, then edited in place.

Updates are coalesced to at most one ``chat.update`` per ``min_interval`` seconds
(Slack rate-limits chat.update to about one per second per channel); the final state
is always sent, at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from handlers.verbs.jobs import render_job
from services.jobs import Job

log = logging.getLogger(__name__)


class SlackJobMessage:
    def __init__(self, client: AsyncWebClient, channel: str, *,
                 min_interval: float = 1.0) -> None:
        self._client = client
        self._channel = channel
        self._min_interval = min_interval
        self._lock = asyncio.Lock()
        self._ts: str | None = None
        self._last_sent = 0.0
        self._pending: Job | None = None
        self._flush: asyncio.Task[None] | None = None
        self.failed = False

    @property
    def posted(self) -> bool:
        return self._ts is not None and not self.failed

    async def job_changed(self, job: Job) -> None:
        if self.failed:
            return
        if job.state.finished:
            if self._flush is not None:
                self._flush.cancel()
                self._flush = None
            await self._send(job)
            return
        wait = self._last_sent + self._min_interval - time.monotonic()
        if self._ts is None or wait <= 0:
            await self._send(job)
            return
        self._pending = job
        if self._flush is None:
            self._flush = asyncio.create_task(self._flush_later(wait))

    async def _flush_later(self, delay: float) -> None:
        await asyncio.sleep(delay)
        self._flush = None
        job, self._pending = self._pending, None
        if job is not None:
            await self._send(job)

    async def _send(self, job: Job) -> None:
        text = render_job(job)
        blocks: list[dict[str, Any]] = [
            {"type": "section", "text": {"type": "mrkdwn", "text": f"```{text[:2900]}```"}}
        ]
        async with self._lock:
            try:
                if self._ts is None:
                    response = await self._client.chat_postMessage(
                        channel=self._channel, text=text.split("\n", 1)[0], blocks=blocks
                    )
                    self._ts = response["ts"]
                else:
                    await self._client.chat_update(
                        channel=self._channel, ts=self._ts, text=text.split("\n", 1)[0],
                        blocks=blocks,
                    )
                self._last_sent = time.monotonic()
            except SlackApiError as exc:
                # e.g. not_in_channel: the final reply then goes through response_url.
                log.warning("cannot post job progress job_id=%d channel=%s error=%s",
                            job.id, self._channel, exc.response.get("error"))
                self.failed = True
