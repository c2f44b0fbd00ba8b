"""Work that runs after a Slack ack: bounded, referenced, and drained at shutdown.

Slack needs its ack within 3 s, and a burst of acks should not queue behind the
commands they started. So the ack goes out first and the command runs here, at most
``limit`` at a time; asyncio keeps only weak references to tasks, so we hold them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)


class BackgroundWork:
    def __init__(self, *, limit: int = 8) -> None:
        self._slots = asyncio.Semaphore(limit)
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, work: Coroutine[Any, Any, None], *, name: str) -> None:
        task = asyncio.create_task(self._bounded(work), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    async def _bounded(self, work: Coroutine[Any, Any, None]) -> None:
        try:
            await self._slots.acquire()
        except asyncio.CancelledError:
            work.close()  # cancelled while queued: it never started, and never will
            raise
        try:
            await work
        finally:
            self._slots.release()

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background work failed task=%s", task.get_name(),
                      exc_info=task.exception())

    def __len__(self) -> int:
        return len(self._tasks)

    async def drain(self, timeout: float = 10.0) -> None:
        """Let running work finish (replies in flight), then cancel what is left."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
