"""Slack Socket Mode, in our event loop, with a watchdog.

slack_sdk's own monitor reconnects when its ping/pong fails, but a connection can go
silent in ways it does not notice (bolt-python #1529: the monitor task dies, or the
socket stays open while Slack has forgotten it). The watchdog checks from outside: a
session that is closed, or from which nothing — not even a pong — has arrived for
``silence_seconds``, is replaced by a new one from ``apps.connections.open``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.app.async_app import AsyncApp

log = logging.getLogger(__name__)


class SocketModeTransport:
    def __init__(self, bolt_app: AsyncApp, app_token: str, *, silence_seconds: float = 30.0,
                 ping_interval: float | None = None) -> None:
        self._handler = AsyncSocketModeHandler(bolt_app, app_token, web_client=bolt_app.client)
        self._client = self._handler.client
        # The SDK pings every ping_interval and counts a session dead after four missed
        # pongs; keep its pings frequent enough for our silence limit to see them. Its
        # last_ping_pong_time is when the last answered ping was *sent*, so on a healthy
        # connection it is up to one interval old: the interval must stay well below the
        # silence limit (no 1 s floor: with silence_seconds=1 that replaced healthy
        # sessions every second).
        self._client.ping_interval = ping_interval or silence_seconds / 4
        if self._client.ping_interval * 2 > silence_seconds:
            raise ValueError(f"ping_interval {self._client.ping_interval}s is too long for "
                             f"silence_seconds {silence_seconds}s")
        self._silence = silence_seconds
        self._watchdog: asyncio.Task[None] | None = None
        self.reconnects = 0

    async def start(self) -> None:
        await self._handler.connect_async()  # type: ignore[no-untyped-call]
        log.info("socket mode connected")
        self._watchdog = asyncio.create_task(self._watch(), name="socket-mode-watchdog")

    async def stop(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
        await self._handler.close_async()  # type: ignore[no-untyped-call]

    async def _watch(self) -> None:
        interval = max(0.5, self._silence / 3)
        while True:
            await asyncio.sleep(interval)
            session = self._client.current_session
            problem = await self._problem()
            if problem is None:
                continue
            log.warning("socket mode connection lost reason=%s; reconnecting", problem)
            try:
                replaced = await self._replace(session)
            except Exception as exc:  # keep watching: Slack may be unreachable for a while
                log.warning("socket mode reconnect failed error=%s: %s", type(exc).__name__, exc)
                continue
            if not replaced:
                log.info("socket mode session already replaced by the SDK, or recovered")
                continue
            self.reconnects += 1
            log.info("socket mode reconnected reconnects=%d", self.reconnects)

    async def _replace(self, session: object) -> bool:
        """A new session from apps.connections.open, unless the SDK's monitor, which may
        be reconnecting right now under its lock, has already replaced ``session``."""
        lock = self._client.connect_operation_lock
        acquired = False
        # If the SDK is stuck holding the lock, go ahead without it, as the SDK itself would.
        with contextlib.suppress(TimeoutError):
            acquired = await asyncio.wait_for(lock.acquire(), timeout=5)
        try:
            if acquired and (self._client.current_session is not session
                             or await self._problem() is None):
                return False
            self._client.wss_uri = await self._client.issue_new_wss_url()
            await self._client.connect()  # type: ignore[no-untyped-call]
            return True
        finally:
            if acquired:
                lock.release()

    async def _problem(self) -> str | None:
        session = self._client.current_session
        if session is None or session.closed:
            return "session closed"
        last = self._client.last_ping_pong_time
        if last is not None and time.time() - last > self._silence:
            return f"silent for {time.time() - last:.0f}s"
        return None
