"""The hosts this ctbot drives, each with its pinned SSH host key (migration 15)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from services.core.store import Store


@dataclass(frozen=True)
class HostRecord:
    name: str
    address: str
    port: int
    user: str
    host_key: str  # the OpenSSH public key line sshd offered, pinned at `host add`
    added_by: str
    added_at: float

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "address": self.address, "port": self.port,
                "user": self.user, "added_by": self.added_by, "added_at": self.added_at}


class HostStore:
    def __init__(self, store: Store) -> None:
        self._store = store

    def add(self, record: HostRecord) -> bool:
        """False when a host of that name exists already (nothing changes)."""
        cursor = self._store.execute(
            "INSERT INTO hosts (name, address, port, user, host_key, added_by, added_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO NOTHING",
            (record.name, record.address, record.port, record.user, record.host_key,
             record.added_by, record.added_at or time.time()))
        return cursor.rowcount == 1

    def find(self, name: str) -> HostRecord | None:
        rows = self._store.query("SELECT name, address, port, user, host_key, added_by, "
                                 "added_at FROM hosts WHERE name = ?", (name,))
        return HostRecord(*rows[0]) if rows else None

    def all(self) -> list[HostRecord]:
        return [HostRecord(*row) for row in self._store.query(
            "SELECT name, address, port, user, host_key, added_by, added_at FROM hosts "
            "ORDER BY name")]

    def remove(self, name: str) -> bool:
        return self._store.execute("DELETE FROM hosts WHERE name = ?", (name,)).rowcount == 1
