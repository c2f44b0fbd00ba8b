"""ctbot under a service manager: readiness, status and watchdog pings (sd_notify).

systemd starts `ctbot serve` as `Type=notify` (templates/service/ctbot.service.j2): it waits for
`READY=1` before it calls the service started, shows the last `STATUS=` line in
`systemctl status`, and, with `WatchdogSec=`, restarts a ctbot that stops sending
`WATCHDOG=1`. The protocol is one datagram per message to the AF_UNIX socket named by
`$NOTIFY_SOCKET` (sd_notify(3): a path, or `@NAME` for the abstract namespace), with
`KEY=VALUE` lines. Anywhere else — the console, tests, `ctbot cmd` — `$NOTIFY_SOCKET` is
unset and every call here does nothing.

Why not a library: the pure-Python one (sdnotify) has had no release since 2017 and
drops every error; systemd-python needs libsystemd's headers and a compiler in the venv.
The protocol itself is a datagram and has not changed since systemd 209.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


class ServiceManager:
    """The notify socket from the environment, or nothing.

    `status(text)` and `ready(text)` are cheap and never raise: a service manager that
    went away must not take ctbot with it (a send that fails is logged once)."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._address = _socket_address(env.get("NOTIFY_SOCKET", ""))
        self._watchdog_seconds = _watchdog_seconds(env)
        self._failed = False
        self._pinger: asyncio.Task[None] | None = None

    @property
    def active(self) -> bool:
        """True when a service manager listens (systemd started us as Type=notify)."""
        return self._address is not None

    @property
    def watchdog_seconds(self) -> float | None:
        """`WatchdogSec=` as seconds, when it applies to this process (sd_watchdog_enabled(3):
        `$WATCHDOG_USEC`, and `$WATCHDOG_PID` unset or ours)."""
        return self._watchdog_seconds

    def status(self, text: str) -> None:
        """One line for `systemctl status` (STATUS=; newlines become spaces)."""
        self._send(f"STATUS={_one_line(text)}")

    def ready(self, text: str) -> None:
        """Started: systemd ends `systemctl start` and starts what waits for ctbot."""
        self._send(f"READY=1\nSTATUS={_one_line(text)}")

    def stopping(self, text: str) -> None:
        """Stopping (STOPPING=1): `systemctl status` shows "deactivating" and the reason."""
        self._send(f"STOPPING=1\nSTATUS={_one_line(text)}")

    def start_watchdog(self) -> None:
        """Ping WATCHDOG=1 from the event loop at half of WatchdogSec (the interval
        sd_watchdog_enabled(3) advises). A loop blocked for longer than WatchdogSec sends
        nothing, and systemd restarts ctbot: that is the point of pinging from the loop."""
        if self._watchdog_seconds is None or self._pinger is not None:
            return
        self._pinger = asyncio.get_running_loop().create_task(
            self._ping(self._watchdog_seconds / 2), name="watchdog")

    async def close(self) -> None:
        if self._pinger is not None:
            self._pinger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pinger
            self._pinger = None

    async def _ping(self, interval: float) -> None:
        while True:
            self._send("WATCHDOG=1")
            await asyncio.sleep(interval)

    def _send(self, message: str) -> None:
        if self._address is None:
            return
        try:
            # A socket per message, as sd_notify(3) does: a few a minute at most.
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.sendto(message.encode(), self._address)
        except OSError as exc:
            if not self._failed:
                self._failed = True
                log.warning("cannot notify the service manager socket=%s error=%s",
                            os.environ.get("NOTIFY_SOCKET", ""), exc)


def _socket_address(value: str) -> str | bytes | None:
    """`$NOTIFY_SOCKET` → an address for sendto: a path, or `@NAME` → b"\\0NAME"
    (sd_notify(3)). Anything else (empty, relative, vsock) → None: nothing to notify."""
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return b"\0" + value[1:].encode()
    return None


def _watchdog_seconds(env: Mapping[str, str]) -> float | None:
    usec, pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and (not pid.isdigit() or int(pid) != os.getpid()):
        return None
    return int(usec) / 1_000_000


def _one_line(text: str) -> str:
    return " ".join(text.split())
