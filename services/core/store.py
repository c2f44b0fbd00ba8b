"""SQLite state: one file under ``state_dir``, WAL mode, migrated at open to the schema
of services/core/migrations.py.

Calls are synchronous on purpose. Every statement ctbot issues is a small indexed
read or a single-row write; in WAL mode with ``synchronous=NORMAL`` a commit does not
fsync, so it costs microseconds and moving it to a thread would cost more than it saves.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from services.core.errors import StoreError
from services.core.migrations import MIGRATIONS

log = logging.getLogger(__name__)


class Store:
    """A connection to ctbot's state database, migrated to the current schema."""

    def __init__(self, path: Path, *, migrations: Sequence[str] = MIGRATIONS) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            if path.parent.stat().st_mode & 0o077:  # machines' layers live below it
                path.parent.chmod(0o700)
            # isolation_level=None: we issue BEGIN/COMMIT ourselves, so a migration
            # and its version bump commit together or not at all.
            self._conn = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=10
            )
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open state database {path}: {exc}") from exc
        self._conn.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        try:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute("PRAGMA foreign_keys=ON")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot use state database {path}: {exc}") from exc
        self._migrate(migrations)

    @property
    def schema_version(self) -> int:
        row = self._conn.execute("PRAGMA user_version").fetchone()
        return int(row[0])

    def _migrate(self, migrations: Sequence[str]) -> None:
        current = self.schema_version
        if current > len(migrations):
            raise StoreError(
                f"state database {self.path} has schema version {current}, newer than this "
                f"ctbot ({len(migrations)}); upgrade ctbot or restore a backup"
            )
        for version in range(current + 1, len(migrations) + 1):
            with self.transaction() as conn:
                # Read again under the write lock: another process starting at the same
                # moment may have applied this version already.
                if conn.execute("PRAGMA user_version").fetchone()[0] >= version:
                    continue
                log.info("migrating state database path=%s to_version=%d", self.path, version)
                conn.executescript_in_tx(migrations[version - 1])
                conn.execute(f"PRAGMA user_version = {version:d}")

    @contextmanager
    def transaction(self) -> Iterator[_Tx]:
        """BEGIN IMMEDIATE … COMMIT, rolled back on any exception."""
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreError(f"cannot begin transaction: {exc}") from exc
            try:
                yield _Tx(self._conn)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            else:
                try:
                    self._conn.execute("COMMIT")
                except sqlite3.Error as exc:
                    self._conn.execute("ROLLBACK")
                    raise StoreError(f"commit failed: {exc}") from exc

    def execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        """Run one statement in its own transaction (autocommit)."""
        with self._lock:
            try:
                return self._conn.execute(sql, params)
            except sqlite3.Error as exc:
                raise StoreError(f"database error: {exc}") from exc

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            try:
                return self._conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"database error: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class _Tx:
    """The handle a transaction body gets: statements run inside the open transaction."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        try:
            return self._conn.execute(sql, params)
        except sqlite3.Error as exc:
            raise StoreError(f"database error: {exc}") from exc

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        try:
            self._conn.executemany(sql, rows)
        except sqlite3.Error as exc:
            raise StoreError(f"database error: {exc}") from exc

    def executescript_in_tx(self, script: str) -> None:
        # sqlite3.executescript() would COMMIT first; split and run statements instead
        # so the migration stays inside our transaction.
        for statement in _split_statements(script):
            self.execute(statement)


def _split_statements(script: str) -> list[str]:
    statements: list[str] = []
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            if buffer.strip():
                statements.append(buffer.strip())
            buffer = ""
    if buffer.strip():
        raise StoreError(f"incomplete SQL statement in migration: {buffer.strip()[:80]}")
    return statements
