"""asyncio helpers that more than one service needs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)


async def finish_despite_cancel(cleanup: Coroutine[Any, Any, None]) -> None:
    """Run a cleanup to its end even if the caller is cancelled meanwhile (shutdown):
    a rollback cut off half-way would leave exactly the half-made thing it undoes.
    A failing cleanup is logged, never raised: the caller re-raises what went wrong first."""
    task = asyncio.ensure_future(cleanup)
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            continue
        except Exception:
            break
    if not task.cancelled() and task.exception() is not None:
        log.error("cleanup failed", exc_info=task.exception())
