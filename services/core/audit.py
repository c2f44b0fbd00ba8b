"""The audit log: who ran what, through which transport, and how it ended."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from services.core.store import Store


class Outcome(StrEnum):
    OK = "ok"
    USER_ERROR = "user_error"
    DENIED = "denied"
    INTERNAL_ERROR = "internal_error"


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at: float
    user_id: str
    role: str
    transport: str
    command: str
    outcome: Outcome
    detail: str
    correlation_id: str

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "at": self.at, "user_id": self.user_id, "role": self.role,
                "transport": self.transport, "command": self.command,
                "outcome": str(self.outcome), "detail": self.detail,
                "correlation_id": self.correlation_id}


class AuditLog:
    def __init__(self, store: Store, *, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock

    def record(
        self,
        *,
        user_id: str,
        role: str,
        transport: str,
        command: str,
        outcome: Outcome,
        correlation_id: str,
        detail: str = "",
    ) -> int:
        cursor = self._store.execute(
            "INSERT INTO audit (at, user_id, role, transport, command, outcome, detail,"
            " correlation_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                self._clock(),
                user_id,
                role,
                transport,
                command,
                str(outcome),
                detail[:1000],
                correlation_id,
            ),
        )
        return int(cursor.lastrowid or 0)

    def latest(self, limit: int) -> list[AuditEntry]:
        """The newest ``limit`` entries, newest first."""
        rows = self._store.query("SELECT * FROM audit ORDER BY id DESC LIMIT ?", (limit,))
        return [
            AuditEntry(
                id=row["id"],
                at=row["at"],
                user_id=row["user_id"],
                role=row["role"],
                transport=row["transport"],
                command=row["command"],
                outcome=Outcome(row["outcome"]),
                detail=row["detail"],
                correlation_id=row["correlation_id"],
            )
            for row in rows
        ]
