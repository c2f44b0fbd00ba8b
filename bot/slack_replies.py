"""Replies to a command's ``response_url``.

A slash command's payload names where its reply goes; ctbot posts only to Slack's own
origins (``[slack] response_origins``), never to whatever a payload says (a loopback
port, a metadata address). Each reply is a task of its own, so a command's slot is free
the moment its reply is handed over; replies to one response_url go in order; each has a
timeout, and a destination that hangs delays nothing but its own replies.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from slack_sdk.webhook.async_client import AsyncWebhookClient

log = logging.getLogger(__name__)

REPLY_TIMEOUT = 10.0  # seconds per reply (Slack answers in well under one)
IN_FLIGHT = 64  # replies being sent at once, over all destinations


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.lower()}"


class ReplySender:
    def __init__(self, origins: Iterable[str], *, timeout: float = REPLY_TIMEOUT) -> None:
        self._origins = frozenset(origins)
        self._timeout = timeout
        self._slots = asyncio.Semaphore(IN_FLIGHT)
        self._session: aiohttp.ClientSession | None = None
        self._last: dict[str, asyncio.Task[None]] = {}  # per response_url, for ordering
        self._tasks: set[asyncio.Task[None]] = set()

    def allowed(self, url: str) -> bool:
        return origin(url) in self._origins

    def post(self, url: str, **message: Any) -> None:
        """Send ``message`` to ``url`` soon, after any earlier reply to the same URL."""
        if not self.allowed(url):
            # The URL itself carries a token: log where it pointed, not what it was.
            log.warning("reply not sent: response_url origin=%s is not one of "
                        "[slack] response_origins", origin(url))
            return
        previous = self._last.get(url)
        task = asyncio.create_task(self._send_after(previous, url, message), name="reply")
        self._last[url] = task
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._done(url, t))

    def _done(self, url: str, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if self._last.get(url) is task:
            del self._last[url]

    async def _send_after(self, previous: asyncio.Task[None] | None, url: str,
                          message: dict[str, Any]) -> None:
        if previous is not None:
            await asyncio.wait({previous})
        async with self._slots:
            try:
                await asyncio.wait_for(self._send(url, message), self._timeout)
            except TimeoutError:
                log.warning("reply not answered within %.0f s origin=%s", self._timeout,
                            origin(url))
            except aiohttp.ClientError as exc:
                log.warning("reply failed origin=%s error=%s", origin(url), exc)

    async def _send(self, url: str, message: dict[str, Any]) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        response = await AsyncWebhookClient(url=url, session=self._session).send_dict(message)
        if response.status_code != 200:
            log.warning("response_url refused the reply status=%d origin=%s",
                        response.status_code, origin(url))

    async def drain(self, timeout: float = 10.0) -> None:
        """Let replies in flight finish (bounded), then close the session."""
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        if self._session is not None:
            await self._session.close()
