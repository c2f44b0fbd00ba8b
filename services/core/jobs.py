"""Durable jobs: long work (create a machine, build an image) as a persisted record.

A job is written to the store before it runs, each progress line is appended as it
happens, and the final state is written when it ends. A job found ``queued`` or
``running`` when ctbot starts was cut off by a crash or a kill: it is marked
``interrupted`` (services that own the job kind decide later whether to resume or
roll back what it left behind). services/core/job_runner.py runs them.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from services.core.errors import NotFound
from services.core.host import ProcessId, this_process
from services.core.store import Store

log = logging.getLogger(__name__)


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    INTERRUPTED = "interrupted"

    @property
    def finished(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.INTERRUPTED)


@dataclass(frozen=True, slots=True)
class ProgressLine:
    at: float
    line: str


@dataclass(frozen=True, slots=True)
class Job:
    id: int
    kind: str
    args: Mapping[str, Any]
    state: JobState
    requested_by: str
    correlation_id: str
    created_at: float
    started_at: float | None
    finished_at: float | None
    result: str
    error: str
    progress: tuple[ProgressLine, ...] = field(default=())
    internal_failure: bool = False  # failed on ctbot or the host, not on the caller's input
    result_data: Mapping[str, Any] = field(default_factory=dict)  # JobResult.data
    activity: str = ""  # what it is doing right now (Progress.status)

    @property
    def elapsed(self) -> float | None:
        if self.started_at is None:
            return None
        end = self.finished_at if self.finished_at is not None else time.time()
        return end - self.started_at

    def to_json(self) -> dict[str, Any]:
        """What `job ID --json` prints, and what the job views render."""
        return {
            "id": self.id, "kind": self.kind, "args": dict(self.args), "state": str(self.state),
            "requested_by": self.requested_by, "created_at": self.created_at,
            "started_at": self.started_at, "finished_at": self.finished_at,
            "elapsed": self.elapsed, "result": self.result, "error": self.error,
            "result_data": dict(self.result_data), "activity": self.activity,
            "progress": [{"at": p.at, "line": p.line} for p in self.progress],
        }


@dataclass(frozen=True, slots=True)
class JobResult:
    """What a job body returns: a one-line summary and the machine-readable result
    (e.g. the machine as `status --json` shows it), stored with the job."""

    summary: str
    data: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class JobArgs(Protocol):
    """Typed job arguments serialize themselves; the kind's ``decode`` reads them back."""

    def to_json(self) -> dict[str, Any]: ...


class JobObserver(Protocol):
    """Told about every change of a job: a transport turns this into chat updates."""

    async def job_changed(self, job: Job) -> None: ...


class JobStore:
    """Persistence of jobs and their progress lines."""

    def __init__(self, store: Store, *, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock

    def create(
        self, *, kind: str, args: Mapping[str, Any], requested_by: str, correlation_id: str
    ) -> int:
        owner = this_process()
        cursor = self._store.execute(
            "INSERT INTO jobs (kind, args, state, requested_by, correlation_id, created_at,"
            " owner_pid, owner_start) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (kind, json.dumps(dict(args)), JobState.QUEUED, requested_by, correlation_id,
             self._clock(), owner.pid, owner.start),
        )
        return int(cursor.lastrowid or 0)

    def mark_running(self, job_id: int) -> None:
        self._store.execute(
            "UPDATE jobs SET state = ?, started_at = ? WHERE id = ?",
            (JobState.RUNNING, self._clock(), job_id),
        )

    def mark_finished(self, job_id: int, state: JobState, *,
                      result: JobResult | None = None, error: str = "",
                      internal: bool = False) -> None:
        self._store.execute(
            "UPDATE jobs SET state = ?, finished_at = ?, result = ?, result_data = ?,"
            " error = ?, internal_failure = ?, activity = '' WHERE id = ?",
            (state, self._clock(), result.summary if result else "",
             json.dumps(dict(result.data)) if result else "{}", error, int(internal), job_id),
        )

    def annotate(self, job_id: int, error: str) -> None:
        """Replace a finished job's error text (e.g. with what recovery did); its chat
        message, if any, now shows an old state."""
        self._store.execute("UPDATE jobs SET error = ?, chat_stale = 1 WHERE id = ?",
                            (error, job_id))

    def set_chat_ref(self, job_id: int, ref: Mapping[str, str]) -> None:
        """Where the job's progress message lives (e.g. a Slack channel and ts)."""
        self._store.execute("UPDATE jobs SET chat_ref = ? WHERE id = ?",
                            (json.dumps(dict(ref)), job_id))

    def stale_chat_messages(self) -> list[tuple[Job, dict[str, str]]]:
        """Finished jobs whose chat message was last updated before they ended (their
        process died): the message still says "running"."""
        rows = self._store.query(
            "SELECT id, chat_ref FROM jobs WHERE chat_stale = 1 AND chat_ref != ''")
        return [(self.get(row["id"]), json.loads(row["chat_ref"])) for row in rows]

    def chat_synced(self, job_id: int) -> None:
        self._store.execute("UPDATE jobs SET chat_stale = 0 WHERE id = ?", (job_id,))

    def set_activity(self, job_id: int, text: str) -> None:
        """What the job is doing right now; replaced by the next, cleared at its end."""
        self._store.execute("UPDATE jobs SET activity = ? WHERE id = ?", (text, job_id))

    def append_progress(self, job_id: int, line: str) -> None:
        with self._store.transaction() as tx:
            row = tx.execute(
                "SELECT COALESCE(MAX(seq), 0) + 1 FROM job_progress WHERE job_id = ?", (job_id,)
            ).fetchone()
            tx.execute(
                "INSERT INTO job_progress (job_id, seq, at, line) VALUES (?, ?, ?, ?)",
                (job_id, row[0], self._clock(), line),
            )

    def get(self, job_id: int) -> Job:
        rows = self._store.query("SELECT * FROM jobs WHERE id = ?", (job_id,))
        if not rows:
            raise NotFound(f"there is no job #{job_id}")
        progress = self._store.query(
            "SELECT at, line FROM job_progress WHERE job_id = ? ORDER BY seq", (job_id,)
        )
        return _job_from_row(rows[0], tuple(ProgressLine(r["at"], r["line"]) for r in progress))

    def latest(self, limit: int) -> list[Job]:
        rows = self._store.query("SELECT * FROM jobs ORDER BY id DESC LIMIT ?", (limit,))
        return [_job_from_row(row, ()) for row in rows]

    def orphaned(self) -> list[Job]:
        """Unfinished jobs whose process is gone (killed, crashed, host rebooted)."""
        rows = self._store.query(
            "SELECT * FROM jobs WHERE state IN (?, ?) ORDER BY id",
            (JobState.QUEUED, JobState.RUNNING),
        )
        return [_job_from_row(row, ()) for row in rows
                if not ProcessId(row["owner_pid"] or 0, row["owner_start"]).alive()]


def _job_from_row(row: Any, progress: tuple[ProgressLine, ...]) -> Job:
    return Job(
        id=row["id"],
        kind=row["kind"],
        args=json.loads(row["args"]),
        state=JobState(row["state"]),
        requested_by=row["requested_by"],
        correlation_id=row["correlation_id"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        result=row["result"],
        error=row["error"],
        progress=progress,
        internal_failure=bool(row["internal_failure"]),
        result_data=json.loads(row["result_data"]),
        activity=row["activity"],
    )
