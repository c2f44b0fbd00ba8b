"""Webhook deliveries in SQLite, by (webhook, the sender's delivery id).

The primary key is what makes a delivery run once: the first request to insert its row
runs it; every other copy — a retry, a redelivery, one of 100 sent at once — finds the
row and is answered with what the first one did. Rows are kept ``RETENTION_SECONDS``:
longer than GitHub keeps deliveries redeliverable (3 days) and than the Standard
Webhooks schedule retries (about 1.5 days).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from services.core.store import Store

RETENTION_SECONDS = 7 * 86400
MAX_RESULT_CHARS = 3000


class DeliveryState(StrEnum):
    RECEIVED = "received"  # verified and recorded; being matched
    NO_MATCH = "no-match"  # no rule matched: nothing ran
    QUEUED = "queued"  # waiting for its rule's previous command (serial, coalesce)
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # the command ran and failed, or was refused (role, confirm, input)
    SKIPPED = "skipped"  # skip-if-running: another delivery's command was running
    COALESCED = "coalesced"  # coalesce: a newer delivery took its place before it ran
    INTERRUPTED = "interrupted"  # ctbot stopped before it finished; a redelivery runs it

    @property
    def finished(self) -> bool:
        return self not in (DeliveryState.RECEIVED, DeliveryState.QUEUED,
                            DeliveryState.RUNNING)


@dataclass(frozen=True, slots=True)
class Delivery:
    webhook: str
    id: str
    received_at: float
    state: DeliveryState
    rule: int | None = None
    command: str | None = None
    job_id: int | None = None
    outcome: str | None = None
    result: str | None = None
    superseded_by: str | None = None
    finished_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {"webhook": self.webhook, "delivery": self.id,
                "received_at": self.received_at, "state": str(self.state),
                "rule": self.rule, "command": self.command, "job": self.job_id,
                "outcome": self.outcome, "result": self.result,
                "superseded_by": self.superseded_by, "finished_at": self.finished_at}


_COLUMNS = ("webhook, delivery_id, received_at, state, rule, command, job_id, outcome, "
            "result, superseded_by, finished_at")
_UPDATABLE = {"state", "rule", "command", "job_id", "outcome", "result", "superseded_by",
              "finished_at", "words"}


class DeliveryStore:
    def __init__(self, store: Store, *, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock

    def claim(self, webhook: str, delivery_id: str, *, state: DeliveryState,
              rule: int | None = None, command: str | None = None,
              words: str | None = None, result: str | None = None,
              digest: str | None = None) -> Delivery | None:
        """Record a new delivery as it starts out (its rule, command and state known)
        and return None; or return the one already recorded under this id — or, given a
        ``digest`` (of a body that alone is signed), under this body — a duplicate: run
        nothing. A delivery interrupted before it ran is claimed again: its redelivery
        runs it. One INSERT on the common path."""
        now = self._clock()
        values = (now, str(state), rule, command, words,
                  _bounded(result) if result is not None else None,
                  now if state.finished else None, digest)
        inserted = self._store.execute(
            "INSERT INTO webhook_deliveries (webhook, delivery_id, received_at, state, rule,"
            " command, words, result, finished_at, digest) VALUES "
            "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (webhook, delivery_id, *values)).rowcount
        if inserted:
            return None
        with self._store.transaction() as tx:
            row = tx.execute(f"SELECT {_COLUMNS} FROM webhook_deliveries WHERE webhook = ? "
                             "AND (delivery_id = ? OR (digest IS NOT NULL AND digest = ?)) "
                             "ORDER BY delivery_id = ? DESC LIMIT 1",
                             (webhook, delivery_id, digest, delivery_id)).fetchone()
            if row is not None and row["state"] != DeliveryState.INTERRUPTED:
                return _delivery(row)
            if row is not None:
                tx.execute("DELETE FROM webhook_deliveries WHERE webhook = ? AND "
                           "delivery_id = ?", (webhook, row["delivery_id"]))
            tx.execute("INSERT OR REPLACE INTO webhook_deliveries (webhook, delivery_id, "
                       "received_at, state, rule, command, words, result, finished_at, "
                       "digest) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (webhook, delivery_id, *values))
            return None

    def update(self, webhook: str, delivery_id: str, **fields: Any) -> None:
        """Set columns of a delivery (``state=…``, ``job_id=…``); a finished state
        stamps ``finished_at``."""
        unknown = set(fields) - _UPDATABLE
        if unknown:
            raise ValueError(f"not delivery columns: {sorted(unknown)}")
        state = fields.get("state")
        if state is not None and DeliveryState(state).finished:
            fields.setdefault("finished_at", self._clock())
            fields["words"] = None  # kept only while it may still have to run
        if "result" in fields and fields["result"] is not None:
            fields["result"] = _bounded(str(fields["result"]))
        assignments = ", ".join(f"{column} = ?" for column in fields)
        self._store.execute(
            f"UPDATE webhook_deliveries SET {assignments} WHERE webhook = ? AND "
            "delivery_id = ?", (*fields.values(), webhook, delivery_id))

    def get(self, webhook: str, delivery_id: str) -> Delivery | None:
        rows = self._store.query(f"SELECT {_COLUMNS} FROM webhook_deliveries WHERE "
                                 "webhook = ? AND delivery_id = ?", (webhook, delivery_id))
        return _delivery(rows[0]) if rows else None

    def latest(self, webhook: str, limit: int) -> list[Delivery]:
        rows = self._store.query(f"SELECT {_COLUMNS} FROM webhook_deliveries WHERE "
                                 "webhook = ? ORDER BY received_at DESC LIMIT ?",
                                 (webhook, limit))
        return [_delivery(r) for r in rows]

    def counts(self, webhook: str, since: float) -> dict[str, int]:
        """Deliveries by state received since ``since`` (epoch seconds)."""
        rows = self._store.query("SELECT state, COUNT(*) AS n FROM webhook_deliveries WHERE "
                                 "webhook = ? AND received_at >= ? GROUP BY state",
                                 (webhook, since))
        return {r["state"]: r["n"] for r in rows}

    def interrupt_running(self) -> int:
        """At start: deliveries whose command a previous ctbot started and did not see
        finish (what it did is in the audit log and its job). Queued ones stay queued."""
        return self._store.execute(
            "UPDATE webhook_deliveries SET state = ?, finished_at = ?, words = NULL, "
            "result = 'ctbot stopped while its command ran; see its job, or redeliver it "
            "to run it again' WHERE state IN (?, ?)",
            (DeliveryState.INTERRUPTED, self._clock(), DeliveryState.RECEIVED,
             DeliveryState.RUNNING)).rowcount

    def queued(self) -> list[tuple[Delivery, str | None]]:
        """Deliveries waiting to run, oldest first, with their stored words."""
        rows = self._store.query(f"SELECT {_COLUMNS}, words FROM webhook_deliveries WHERE "
                                 "state = ? ORDER BY received_at", (DeliveryState.QUEUED,))
        return [(_delivery(r), r["words"]) for r in rows]

    def prune(self) -> int:
        """Delete deliveries older than the retention; returns how many."""
        return self._store.execute("DELETE FROM webhook_deliveries WHERE received_at < ?",
                                   (self._clock() - RETENTION_SECONDS,)).rowcount


def _delivery(row: Any) -> Delivery:
    return Delivery(webhook=row["webhook"], id=row["delivery_id"],
                    received_at=row["received_at"], state=DeliveryState(row["state"]),
                    rule=row["rule"], command=row["command"], job_id=row["job_id"],
                    outcome=row["outcome"], result=row["result"],
                    superseded_by=row["superseded_by"], finished_at=row["finished_at"])


def _bounded(text: str) -> str:
    return text if len(text) <= MAX_RESULT_CHARS else text[:MAX_RESULT_CHARS - 1] + "…"
