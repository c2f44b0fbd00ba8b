"""A job's progress as ONE Slack message: posted once, then edited in place.

Updates are coalesced to at most one ``chat.update`` per ``min_interval`` seconds (2 s:
Slack rate-limits chat.update to about one per second per channel, and a job's activity
may change many times a second); the final state is always sent, at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack_render import text_blocks
from handlers.views import render_view
from services.core.jobs import Job, JobStore

log = logging.getLogger(__name__)


def job_message(job: Job) -> tuple[str, list[dict[str, Any]]]:
    """The notification line and the blocks of a job's message."""
    text = render_view("job", job.to_json())
    blocks = [b.to_dict() for b in text_blocks(text)]
    return text.split("\n", 1)[0], blocks


class SlackJobMessage:
    def __init__(self, client: AsyncWebClient, channel: str, *, jobs: JobStore | None = None,
                 min_interval: float = 2.0) -> None:
        self._client = client
        self._channel = channel
        self._jobs = jobs
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
        text, blocks = job_message(job)
        async with self._lock:
            try:
                if self._ts is None:
                    response = await self._client.chat_postMessage(
                        channel=self._channel, text=text, blocks=blocks)
                    self._ts = response["ts"]
                    if self._jobs is not None:
                        # Remembered so that a ctbot restarted after a crash can still
                        # tell this message how the job ended (sync_stale_messages).
                        self._jobs.set_chat_ref(job.id, {"channel": self._channel,
                                                         "ts": str(self._ts)})
                else:
                    await self._client.chat_update(
                        channel=self._channel, ts=self._ts, text=text, blocks=blocks)
                self._last_sent = time.monotonic()
            except SlackApiError as exc:
                # e.g. not_in_channel: the final reply then goes through response_url.
                log.warning("cannot post job progress job_id=%d channel=%s error=%s",
                            job.id, self._channel, exc.response.get("error"))
                self.failed = True


async def sync_stale_messages(client: AsyncWebClient, jobs: JobStore) -> int:
    """Edit the Slack messages of jobs that ended while no one could update them (ctbot
    was killed; the restart rolled back or finished the work). Returns how many."""
    synced = 0
    for job, ref in jobs.stale_chat_messages():
        if "channel" not in ref or "ts" not in ref:
            jobs.chat_synced(job.id)
            continue
        text, blocks = job_message(job)
        try:
            await client.chat_update(channel=ref["channel"], ts=ref["ts"], text=text,
                                     blocks=blocks)
        except SlackApiError as exc:
            log.warning("cannot update the message of job_id=%d error=%s", job.id,
                        exc.response.get("error"))
        jobs.chat_synced(job.id)
        synced += 1
    return synced
