"""How long work reports on itself: steps done, and what is happening right now.

A step (``await progress("cloned in 0.01 s")``) is kept in the job's log and shown in
`job ID`. An activity (``await progress.status("debootstrap: 45%, unpacking libc6")``)
replaces the previous one: transports show it as one live line (a terminal) or in the
job's one message (Slack), and it is cleared when the job ends.
"""

from __future__ import annotations

import time
from typing import Protocol


class Progress(Protocol):
    async def __call__(self, line: str) -> None:
        """A step done."""
        ...

    async def status(self, text: str) -> None:
        """What is happening now (replaces the previous activity)."""
        ...


class NoProgress:
    """For work nobody watches (crash recovery, tests)."""

    async def __call__(self, line: str) -> None:
        return None

    async def status(self, text: str) -> None:
        return None


class Throttled:
    """Passes an activity on at most every ``interval`` seconds (a program may report
    thousands of times a minute; nobody reads that fast, and each is a store write)."""

    def __init__(self, progress: Progress, interval: float = 0.5) -> None:
        self._progress = progress
        self._interval = interval
        self._last = 0.0

    async def status(self, text: str) -> None:
        now = time.monotonic()
        if now - self._last >= self._interval:
            self._last = now
            await self._progress.status(text)
