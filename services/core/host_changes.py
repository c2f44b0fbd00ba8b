"""What ctbot changed on the host, so that it can be told and undone (`host teardown`).

    sysctl:PATH          a kernel setting: its value before ctbot first changed it
    bridge:NAME          a bridge ctbot made
    nft:inet+bridge TABLE  ctbot's two nftables tables (their fingerprint when loaded)

Only the first change of a sysctl records a ``previous`` value, so that undoing restores
what the host had before ctbot, however often ctbot set it since.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.core.store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class HostChange:
    key: str
    previous: str | None
    current: str
    at: float
    requested: str | None = None  # what ctbot asked for, if the kernel kept another value

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "previous": self.previous, "current": self.current,
                "at": self.at}


class HostChanges:
    def __init__(self, store: Store) -> None:
        self._store = store

    def record(self, key: str, current: str, *, previous: str | None = None,
               requested: str | None = None) -> None:
        """Remember that ctbot made ``key`` be ``current`` (having asked for
        ``requested``, when the kernel keeps something else); the first ``previous``
        stays."""
        self._store.execute(
            "INSERT INTO host_changes (key, previous, current, at, requested)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET current ="
            " excluded.current, at = excluded.at, requested = excluded.requested",
            (key, previous, current, time.time(), requested))

    def get(self, key: str) -> HostChange | None:
        rows = self._store.query("SELECT * FROM host_changes WHERE key = ?", (key,))
        return _change(rows[0]) if rows else None

    def all(self) -> list[HostChange]:
        return [_change(r) for r in
                self._store.query("SELECT * FROM host_changes ORDER BY key")]

    def forget(self, key: str) -> None:
        self._store.execute("DELETE FROM host_changes WHERE key = ?", (key,))

    def set_sysctl(self, path: Path, value: str) -> bool:
        """Write a /proc/sys value if it differs, recording the value before; True if it
        changed. OSError when the kernel refuses."""
        before = path.read_text().strip()
        if before == value:
            return False
        key = f"sysctl:{path}"
        recorded = self.get(key)
        if recorded is not None and recorded.current == before and recorded.requested == value:
            return False  # what the kernel made of ctbot's value (it rounds some)
        path.write_text(value)
        after = path.read_text().strip()
        self.record(key, after, previous=before, requested=value)
        log.info("sysctl changed path=%s from=%s to=%s", path, before, after)
        return True


def _change(row: Any) -> HostChange:
    return HostChange(row["key"], row["previous"], row["current"], row["at"],
                      row["requested"])
