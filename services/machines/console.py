"""A machine's console log (nspawn's output): its tail, and what it tells of a boot that
fails; and waiting for a boot with the elapsed time as the job's activity."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from services.core.errors import OperationFailed
from services.core.host import ProcessId
from services.core.progress import Progress
from services.machines import messages
from services.machines.clones import MachinePaths
from services.machines.supervisor import BootFailed, BootTimeout, Readiness

TAIL_BYTES = 64 * 1024


def tail(path: Path, lines: int) -> str:
    """The last ``lines`` lines (from the last 64 KiB, across the rotated PATH.1)."""
    data = b""
    for part in (path, path.with_name(path.name + ".1")):
        try:
            with open(part, "rb") as f:
                f.seek(0, 2)
                f.seek(max(0, f.tell() - (TAIL_BYTES - len(data))))
                data = f.read() + data
        except OSError:
            continue
        if len(data) >= TAIL_BYTES:
            break
    if not data:
        return "(no console output recorded)"
    return "\n".join(data.decode(errors="replace").splitlines()[-lines:])


def boot_failure_hint(console: str) -> str:
    """What to do about a boot that failed the way ``console`` shows, or ""."""
    if "Too many open files" in console:
        return messages.inotify_exhausted(_sysctl("fs/inotify/max_user_instances"))
    return ""


def _sysctl(name: str) -> str:
    try:
        return Path(f"/proc/sys/{name}").read_text().strip()
    except OSError:
        return "?"


async def wait_until_booted(name: str, nspawn: ProcessId, readiness: Readiness,
                            paths: MachinePaths, *, timeout: float,
                            progress: Progress) -> None:
    """Until the machine's systemd reports READY=1; OperationFailed with the console's
    last lines if nspawn exits first or ``timeout`` seconds pass."""
    started = time.monotonic()

    async def tick() -> None:
        while True:
            await asyncio.sleep(1)
            await progress.status(messages.booting(name, time.monotonic() - started))

    ticker = asyncio.create_task(tick())
    try:
        await readiness.wait(nspawn, timeout)
    except BootFailed:
        log_tail = tail(paths.console_log, 8)
        raise OperationFailed(messages.stopped_while_booting(
            name, log_tail, boot_failure_hint(log_tail))) from None
    except BootTimeout:
        raise OperationFailed(messages.boot_timeout(
            name, timeout, tail(paths.console_log, 8))) from None
    finally:
        ticker.cancel()
