from __future__ import annotations

import sqlite3

import pytest

from services.core.audit import AuditLog, Outcome
from services.core.errors import StoreError
from services.core.migrations import MIGRATIONS, SCHEMA_VERSION
from services.core.store import Store


def test_new_database_is_migrated_to_the_current_version_in_wal_mode(tmp_path):
    store = Store(tmp_path / "state" / "ctbot.sqlite3")
    assert store.schema_version == SCHEMA_VERSION
    assert store.query("PRAGMA journal_mode")[0][0] == "wal"
    store.close()


def test_migrations_apply_in_order_and_only_once(tmp_path):
    path = tmp_path / "db.sqlite3"
    Store(path, migrations=MIGRATIONS).close()
    extra = (*MIGRATIONS, "CREATE TABLE extra (x INTEGER);")
    store = Store(path, migrations=extra)
    assert store.schema_version == len(extra)
    store.close()
    Store(path, migrations=extra).close()  # idempotent: nothing re-applied


def test_a_failing_migration_leaves_the_previous_version_intact(tmp_path):
    path = tmp_path / "db.sqlite3"
    Store(path).close()
    broken = (*MIGRATIONS, "CREATE TABLE ok (x INTEGER);\nCREATE TABLE audit (dup INTEGER);")
    with pytest.raises(StoreError):
        Store(path, migrations=broken)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'ok'").fetchone() is None
    conn.close()


def test_database_from_a_newer_ctbot_is_refused(tmp_path):
    path = tmp_path / "db.sqlite3"
    Store(path, migrations=(*MIGRATIONS, "SELECT 1;")).close()
    with pytest.raises(StoreError, match="newer than this ctbot"):
        Store(path)


def test_audit_entries_survive_a_restart_newest_first(tmp_path):
    path = tmp_path / "db.sqlite3"
    store = Store(path)
    audit = AuditLog(store)
    for n in range(3):
        audit.record(user_id="U0A", role="admin", transport="cli", command=f"cmd {n}",
                     outcome=Outcome.OK, correlation_id=f"c-{n}")
    store.close()
    entries = AuditLog(Store(path)).latest(2)
    assert [e.command for e in entries] == ["cmd 2", "cmd 1"]
    assert entries[0].outcome is Outcome.OK and entries[0].correlation_id == "c-2"
