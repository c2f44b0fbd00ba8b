"""SSH state in the store: users' keyrings, access grants, machines' host keys."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from services.core.store import Store
from services.ssh.keys import PublicKey


@dataclass(frozen=True, slots=True)
class StoredKey:
    user_id: str
    key: PublicKey
    added_at: float

    def to_json(self) -> dict[str, Any]:
        return {"user_id": self.user_id, **self.key.to_json(), "added_at": self.added_at}


@dataclass(frozen=True, slots=True)
class Grant:
    machine: str
    user_id: str
    login: str
    from_cidr: str | None
    expires_at: float | None  # epoch seconds
    granted_by: str
    granted_at: float

    def to_json(self) -> dict[str, Any]:
        return {"machine": self.machine, "user_id": self.user_id, "login": self.login,
                "from": self.from_cidr, "expires_at": self.expires_at,
                "granted_by": self.granted_by, "granted_at": self.granted_at}


@dataclass(frozen=True, slots=True)
class HostKey:
    algorithm: str
    blob: str
    fingerprint: str

    def to_json(self) -> dict[str, Any]:
        return {"type": self.algorithm, "fingerprint": self.fingerprint}


class SshStore:
    def __init__(self, store: Store) -> None:
        self._store = store

    # ------------------------------------------------------------------ keyrings

    def add_key(self, user_id: str, key: PublicKey) -> bool:
        """False if the user has that key already (it is left as it was)."""
        cursor = self._store.execute(
            "INSERT OR IGNORE INTO ssh_keys (user_id, fingerprint, algorithm, blob, bits,"
            " comment, added_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (user_id, key.fingerprint, key.algorithm, key.blob, key.bits, key.comment,
             time.time()))
        return cursor.rowcount == 1

    def keys(self, user_id: str | None = None) -> list[StoredKey]:
        rows = self._store.query(
            "SELECT * FROM ssh_keys" + (" WHERE user_id = ?" if user_id else "")
            + " ORDER BY user_id, added_at", (user_id,) if user_id else ())
        return [StoredKey(r["user_id"], PublicKey(r["algorithm"], r["blob"], r["comment"],
                                                  r["fingerprint"], r["bits"]), r["added_at"])
                for r in rows]

    def remove_key(self, user_id: str, fingerprint: str) -> bool:
        cursor = self._store.execute(
            "DELETE FROM ssh_keys WHERE user_id = ? AND fingerprint = ?", (user_id, fingerprint))
        return cursor.rowcount > 0

    # ------------------------------------------------------------------ access

    def grant(self, grant: Grant) -> None:
        self._store.execute(
            "INSERT OR REPLACE INTO ssh_access (machine, user_id, login, from_cidr, expires_at,"
            " granted_by, granted_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (grant.machine, grant.user_id, grant.login, grant.from_cidr, grant.expires_at,
             grant.granted_by, grant.granted_at))

    def revoke(self, machine: str, user_id: str, login: str | None = None) -> int:
        """Remove the user's grant for ``login`` (all their logins if None); how many."""
        cursor = self._store.execute(
            "DELETE FROM ssh_access WHERE machine = ? AND user_id = ?"
            + (" AND login = ?" if login else ""),
            (machine, user_id, login) if login else (machine, user_id))
        return cursor.rowcount

    def grants(self, *, machine: str | None = None, user_id: str | None = None,
               login: str | None = None) -> list[Grant]:
        where, params = [], []
        for column, value in (("machine", machine), ("user_id", user_id), ("login", login)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        rows = self._store.query(
            "SELECT * FROM ssh_access" + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY machine, user_id, login", params)
        return [Grant(r["machine"], r["user_id"], r["login"], r["from_cidr"], r["expires_at"],
                      r["granted_by"], r["granted_at"]) for r in rows]

    # ------------------------------------------------------------------ host keys

    def set_host_keys(self, machine: str, keys: list[HostKey]) -> None:
        with self._store.transaction() as tx:
            tx.execute("DELETE FROM ssh_host_keys WHERE machine = ?", (machine,))
            for key in keys:
                tx.execute("INSERT INTO ssh_host_keys (machine, algorithm, blob, fingerprint)"
                           " VALUES (?, ?, ?, ?)", (machine, key.algorithm, key.blob,
                                                    key.fingerprint))

    def host_keys(self, machine: str) -> list[HostKey]:
        return [HostKey(r["algorithm"], r["blob"], r["fingerprint"]) for r in self._store.query(
            "SELECT * FROM ssh_host_keys WHERE machine = ? ORDER BY algorithm", (machine,))]

    def forget_machine(self, machine: str) -> None:
        self._store.execute("DELETE FROM ssh_access WHERE machine = ?", (machine,))
        self._store.execute("DELETE FROM ssh_host_keys WHERE machine = ?", (machine,))
