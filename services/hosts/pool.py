"""One pooled SSH connection per host (asyncssh), its channels bounded, its host key
pinned, reconnected with backoff and jitter; a dead or slow host fails only its own
calls, within a bound.

A call opens a channel on the host's connection and runs what the host's
authorized_keys forces (`ctbot remote`), its request on stdin, its reply on stdout.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from services.core.errors import OperationFailed
from services.hosts import messages
from services.hosts.config import HostsConfig
from services.hosts.limits import MAX_REPLY
from services.hosts.store import HostRecord

if TYPE_CHECKING:
    import asyncssh

log = logging.getLogger(__name__)

BACKOFF_FIRST = 0.5  # seconds before the first retry of a host that failed
BACKOFF_MAX = 10.0  # the longest wait between attempts: a host that is back is used soon


class HostUnreachable(OperationFailed):
    """The host could not be reached or did not answer in time; says which and why."""


@dataclass
class _Link:
    connection: asyncssh.SSHClientConnection | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    sessions: asyncio.Semaphore | None = None
    failures: int = 0
    retry_at: float = 0.0
    error: str = ""


class HostPool:
    def __init__(self, config: HostsConfig, client_key: asyncssh.SSHKey) -> None:
        self.config = config
        self._key = client_key
        self._links: dict[str, _Link] = {}

    async def call(self, host: HostRecord, payload: bytes, *, timeout: float,
                   limit: int = MAX_REPLY) -> bytes:
        """Run the host's forced command with `payload` on stdin; its stdout (at most
        `limit` bytes, read no further). HostUnreachable when the connection cannot be
        had within [hosts] timeout or breaks; OperationFailed when the command does not
        answer within `timeout` seconds (the connection, and other calls on it, stay)."""
        import asyncssh

        link = self._links.setdefault(host.name, _Link(
            sessions=asyncio.Semaphore(self.config.max_sessions)))
        assert link.sessions is not None
        try:
            async with asyncio.timeout(self.config.timeout):
                connection = await self._connection(host, link)
        except TimeoutError:
            self._failed(host, link, f"no SSH connection within {self.config.timeout:.0f} s")
            raise HostUnreachable(messages.unreachable(host.name, link.error)) from None
        except asyncssh.HostKeyNotVerifiable:
            offered = await offered_key(host.address, host.port, timeout=self.config.timeout)
            pinned = asyncssh.import_public_key(host.host_key).get_fingerprint()
            self._failed(host, link, messages.fingerprint_changed(
                host.name, pinned, offered.get_fingerprint() if offered else "(none read)"))
            raise HostUnreachable(link.error) from None
        except (OSError, asyncssh.Error) as exc:
            self._failed(host, link, _reason(exc))
            raise HostUnreachable(messages.unreachable(host.name, link.error)) from None
        try:
            async with asyncio.timeout(timeout):
                async with link.sessions:
                    return await _run(host.name, connection, payload, limit)
        except TimeoutError:
            raise OperationFailed(messages.no_answer_yet(host.name, timeout)) from None
        except (OSError, asyncssh.Error) as exc:  # the connection broke under the call
            self._failed(host, link, _reason(exc))
            raise HostUnreachable(messages.unreachable(host.name, link.error)) from None

    def state(self, name: str) -> tuple[bool, str]:
        """(connected, the last error) for `host list`."""
        link = self._links.get(name)
        if link is None:
            return False, ""
        return link.connection is not None, link.error

    async def forget(self, name: str) -> None:
        link = self._links.pop(name, None)
        if link is not None:
            async with link.lock:  # a connect under way ends first, then is closed
                if link.connection is not None:
                    link.connection.close()
                    link.connection = None

    async def close(self) -> None:
        for name in list(self._links):
            await self.forget(name)

    async def _connection(self, host: HostRecord,
                          link: _Link) -> asyncssh.SSHClientConnection:
        import asyncssh

        async with link.lock:
            connection = link.connection
            if connection is not None and not connection.is_closed():
                return connection
            link.connection = None
            wait = link.retry_at - time.monotonic()
            if wait > 0:
                raise HostUnreachable(messages.backing_off(host.name, link.error, wait))
            pinned = asyncssh.import_public_key(host.host_key)
            link.connection = await asyncssh.connect(
                host.address, port=host.port, username=host.user, client_keys=[self._key],
                known_hosts=([pinned], [], []), agent_path=None, config=[],
                preferred_auth="publickey", connect_timeout=self.config.timeout,
                keepalive_interval=max(5.0, self.config.timeout), keepalive_count_max=2)
            if link.failures:
                log.info("host reachable again host=%s after=%d failures", host.name,
                         link.failures)
            link.failures, link.retry_at, link.error = 0, 0.0, ""
            return link.connection

    def _failed(self, host: HostRecord, link: _Link, reason: str) -> None:
        if link.connection is not None:
            link.connection.close()
            link.connection = None
        link.failures += 1
        link.error = reason
        # Exponential backoff with full jitter (AWS Architecture Blog, "Exponential
        # Backoff And Jitter"): hosts that fail together do not retry together.
        ceiling = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (link.failures - 1))
        link.retry_at = time.monotonic() + random.uniform(0, ceiling)
        log.warning("host unreachable host=%s address=%s failures=%d error=%s", host.name,
                    host.address, link.failures, reason)


async def _run(name: str, connection: asyncssh.SSHClientConnection, payload: bytes,
               limit: int) -> bytes:
    """One channel: `payload` in, stdout out, read no further than `limit` bytes."""
    process = await connection.create_process("ctbot remote", encoding=None)
    try:
        process.stdin.write(payload)
        process.stdin.write_eof()
        chunks: list[bytes] = []
        size = 0
        while chunk := await process.stdout.read(65536):
            size += len(chunk)
            if size > limit:
                raise OperationFailed(messages.reply_too_long(name))
            chunks.append(chunk)
        said = await process.stderr.read(4096)
        status = (await process.wait(check=False)).exit_status
    finally:
        process.close()
    out = b"".join(chunks)
    if status != 0 and not out:
        raise OperationFailed(messages.remote_failed(
            name, status if status is not None else -1, said.decode(errors="replace")[-500:]))
    return out


async def offered_key(address: str, port: int, *, timeout: float) -> asyncssh.SSHKey | None:
    """The host key sshd at `address` offers (no login: the key exchange only), or None
    if none could be read within `timeout` seconds."""
    import asyncssh

    try:
        async with asyncio.timeout(timeout):
            return await asyncssh.get_server_host_key(address, port, config=[])
    except (OSError, TimeoutError, asyncssh.Error):
        return None


def _reason(exc: BaseException) -> str:
    import asyncssh

    if isinstance(exc, asyncssh.PermissionDenied):
        return "it refused ctbot's key (`host key` shows the line its root must add)"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is sshd running?)"
    return str(exc) or type(exc).__name__
