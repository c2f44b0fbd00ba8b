"""Hosts: the ones this ctbot drives, added with their host key pinned, and calls to
their ctbot (`ctbot remote`), one or all at once, each bounded in time."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from services.core.errors import Conflict, InvalidInput, NotFound, OperationFailed
from services.hosts import messages
from services.hosts.answers import one_line
from services.hosts.config import HostsConfig
from services.hosts.identity import authorized_line, controller_key
from services.hosts.limits import MAX_FANOUT_REPLY, MAX_REPLY
from services.hosts.pool import HostPool, HostUnreachable, offered_key
from services.hosts.protocol import RemoteReply, RemoteRequest
from services.hosts.store import HostRecord, HostStore

LOCAL = "local"
log = logging.getLogger(__name__)


class Hosts:
    def __init__(self, store: HostStore, config: HostsConfig) -> None:
        self.store = store
        self.config = config
        self._pool: HostPool | None = None  # the key is made only once a host is used

    @property
    def pool(self) -> HostPool:
        if self._pool is None:
            self._pool = HostPool(self.config, controller_key(self.config.key_dir))
        return self._pool

    def names(self) -> list[str]:
        return [h.name for h in self.store.all()]

    def get(self, name: str) -> HostRecord:
        record = self.store.find(name)
        if record is None:
            raise NotFound(messages.unknown_host(name))
        return record

    def authorized_line(self) -> str:
        """What a host's root adds to /root/.ssh/authorized_keys for this controller."""
        return authorized_line(controller_key(self.config.key_dir),
                               f"{self.config.remote_command} --controller {self.config.name}")

    async def offered(self, address: str, port: int) -> tuple[str, str, str]:
        """(key type, SHA256 fingerprint, OpenSSH key line) of the host key `address`
        offers; OperationFailed if none can be read within [hosts] timeout."""
        key = await offered_key(address, port, timeout=self.config.timeout)
        if key is None:
            raise OperationFailed(messages.no_host_key(address, port, "no SSH answer within "
                                                       f"{self.config.timeout:.0f} s"))
        return (key.get_algorithm(), key.get_fingerprint(),
                key.export_public_key().decode().strip())

    async def add(self, name: str, address: str, port: int, user: str, fingerprint: str,
                  added_by: str) -> HostRecord:
        """Pin the host key `address` offers if its fingerprint is `fingerprint`."""
        if name == LOCAL:
            raise InvalidInput(messages.local_is_reserved())
        if self.store.find(name) is not None:
            raise Conflict(messages.host_exists(name))
        _, offered, line = await self.offered(address, port)
        if offered != fingerprint:
            raise Conflict(messages.fingerprint_changed(name, fingerprint, offered))
        record = HostRecord(name, address, port, user, line, added_by, time.time())
        if not self.store.add(record):
            raise Conflict(messages.host_exists(name))
        return record

    async def remove(self, name: str) -> None:
        self.get(name)
        self.store.remove(name)
        if self._pool is not None:
            await self._pool.forget(name)

    async def call(self, name: str, request: RemoteRequest, *,
                   timeout: float | None = None, limit: int = MAX_REPLY) -> RemoteReply:
        """Run `request` on host `name`'s ctbot. NotFound, HostUnreachable (within the
        timeout: [hosts] timeout unless given), OperationFailed for a broken answer."""
        host = self.get(name)
        out = await self.pool.call(host, request.to_bytes(),
                                   timeout=timeout or self.config.timeout, limit=limit)
        try:
            return RemoteReply.from_bytes(out)
        except ValueError:
            raise OperationFailed(messages.not_a_reply(name)) from None

    async def gather(self, names: Sequence[str], request: RemoteRequest
                     ) -> dict[str, RemoteReply | str]:
        """`request` on every host at once: each its reply, or why it has none, on one
        line (one host never delays the others past [hosts] timeout; its reply is at most
        MAX_FANOUT_REPLY bytes)."""
        async def one(name: str) -> RemoteReply | str:
            try:
                return await self.call(name, request, limit=MAX_FANOUT_REPLY)
            except (HostUnreachable, OperationFailed, NotFound) as exc:
                return one_line(str(exc))
            except Exception:  # one host's surprise is that host's part only
                log.exception("call to host failed host=%s", name)
                return messages.not_a_reply(name)

        results = await asyncio.gather(*(one(n) for n in names))
        return dict(zip(names, results, strict=True))

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
