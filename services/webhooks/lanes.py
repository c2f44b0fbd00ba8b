"""Each rule's command runs in a lane that applies its ``concurrency``:

    parallel         runs at once (at most PARALLEL_LIMIT at a time; the rest wait)
    serial           one at a time, in the order the deliveries came
    skip-if-running  while one runs (or waits), another is skipped
    coalesce         one runs; of those that come meanwhile only the newest waits, and
                     the one it replaces is coalesced into it (never runs)

A lane holds its tasks (asyncio keeps only weak references) and bounds what waits.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from services.webhooks.config import Concurrency

log = logging.getLogger(__name__)

PARALLEL_LIMIT = 8
MAX_WAITING = 10_000  # per rule; each waits as a few hundred bytes (and a row)

Work = Callable[[], Coroutine[Any, Any, None]]


class Admission(StrEnum):
    RUNNING = "running"
    QUEUED = "queued"
    SKIPPED = "skipped"  # ``other``: the delivery that runs
    FULL = "full"  # MAX_WAITING wait already: refuse, the sender retries later


@dataclass(frozen=True, slots=True)
class Admitted:
    admission: Admission
    other: str | None = None  # skipped: the one running; queued by coalesce: the replaced


class Lane:
    def __init__(self, policy: Concurrency) -> None:
        self.policy = policy
        self._limit = PARALLEL_LIMIT if policy is Concurrency.PARALLEL else 1
        self._running: dict[str, asyncio.Task[None]] = {}
        self._waiting: deque[tuple[str, Work]] = deque()

    @property
    def busy(self) -> bool:
        return bool(self._running or self._waiting)

    def admission(self) -> Admitted:
        """What ``admit`` would do now (nothing changes): a delivery is recorded with
        its state before it is admitted, in the same step of the event loop."""
        if len(self._running) < self._limit and not self._waiting:
            return Admitted(Admission.RUNNING)
        if self.policy is Concurrency.SKIP_IF_RUNNING:
            return Admitted(Admission.SKIPPED, next(iter(self._running), None))
        if self.policy is Concurrency.COALESCE and self._waiting:
            return Admitted(Admission.QUEUED, self._waiting[-1][0])
        if len(self._waiting) >= MAX_WAITING:
            return Admitted(Admission.FULL)
        return Admitted(Admission.QUEUED)

    def admit(self, delivery_id: str, work: Work) -> Admitted:
        """Start ``work`` now, queue it, or refuse it, as the policy says."""
        admitted = self.admission()
        if admitted.admission is Admission.RUNNING:
            self._start(delivery_id, work)
        elif admitted.admission is Admission.QUEUED:
            if admitted.other is not None:  # coalesce: the one waiting is replaced
                self._waiting.pop()
            self._waiting.append((delivery_id, work))
        return admitted

    def _start(self, delivery_id: str, work: Work) -> None:
        task = asyncio.create_task(work(), name=f"webhook-delivery-{delivery_id}")
        self._running[delivery_id] = task
        task.add_done_callback(lambda t: self._finished(delivery_id, t))

    def _finished(self, delivery_id: str, task: asyncio.Task[None]) -> None:
        self._running.pop(delivery_id, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("webhook delivery failed delivery=%s", delivery_id,
                      exc_info=task.exception())
        while self._waiting and len(self._running) < self._limit:
            next_id, work = self._waiting.popleft()
            self._start(next_id, work)

    async def drain(self, timeout: float) -> list[str]:
        """Let what runs finish (bounded); drop what waits (it stays queued in the store
        and runs at the next start). Returns the dropped ids."""
        dropped = [delivery_id for delivery_id, _ in self._waiting]
        self._waiting.clear()
        tasks = list(self._running.values())
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        return dropped
